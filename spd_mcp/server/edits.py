"""The server's named edits: overlays kept by id ('e1', 'e2', ...); the base model never changes.

An edit also lives in the store as safetensors bytes (``edit_to_bytes``), so a server started
again on the same workspace reloads it under the same id (``edit_from_bytes``); ``write_export``
saves the edited model as a plain transformers directory.
"""

import itertools
import json
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from spd_core.analysis.editing import export_edit
from spd_core.analysis.overlay import Edit
from spd_core.model import ComponentModel
from spd_mcp.server import safe_files


@dataclass(frozen=True)
class EditEntry:
    edit_id: str
    edit: Edit
    method: str
    components: list[str]
    info: dict[str, Any] = field(default_factory=dict)


class EditRegistry:
    """Edits by id. ``get`` of an unknown id raises a ValueError listing the known ids."""

    def __init__(self) -> None:
        self._edits: dict[str, EditEntry] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def new_id(self) -> str:
        with self._lock:
            while True:
                edit_id = f"e{next(self._ids)}"
                if edit_id not in self._edits:
                    return edit_id

    def add(self, entry: EditEntry) -> None:
        with self._lock:
            self._edits[entry.edit_id] = entry

    def ids(self) -> list[str]:
        return list(self._edits)

    def get(self, edit_id: str) -> EditEntry:
        entry = self._edits.get(edit_id)
        if entry is None:
            known = ", ".join(self._edits) or "none yet (create one with edit_component)"
            raise ValueError(f"unknown edit_id {edit_id!r}; known edit ids: {known}")
        return entry

    def edit(self, edit_id: str | None) -> Edit | None:
        """The overlay of ``edit_id``; None for no edit."""
        return None if edit_id is None else self.get(edit_id).edit


def edit_to_bytes(entry: EditEntry, run_name: str) -> bytes:
    """The edit's tensors (CPU copies) and what describes it, as safetensors bytes (call on the
    device thread)."""
    tensors = {f"dV.{k}": v.detach().cpu().contiguous() for k, v in entry.edit.dV.items()}
    tensors |= {f"dU.{k}": v.detach().cpu().contiguous() for k, v in entry.edit.dU.items()}
    meta = {
        "edit_id": entry.edit_id,
        "name": entry.edit.name,
        "description": entry.edit.description,
        "method": entry.method,
        "components": json.dumps(entry.components),
        "info": json.dumps(entry.info),
        "run": run_name,
    }
    return save_tensors(tensors, metadata=meta)


def edit_from_bytes(blob: bytes, device: torch.device) -> tuple[EditEntry, str]:
    """``(entry, run_name)`` from ``edit_to_bytes`` output; tensors moved to ``device``."""
    tensors = load_tensors(blob)
    meta = _metadata(blob)
    dV = {k.removeprefix("dV."): v.to(device) for k, v in tensors.items() if k.startswith("dV.")}
    dU = {k.removeprefix("dU."): v.to(device) for k, v in tensors.items() if k.startswith("dU.")}
    edit = Edit(name=meta["name"], dV=dV, dU=dU, description=meta.get("description", ""))
    entry = EditEntry(
        meta["edit_id"],
        edit,
        meta["method"],
        json.loads(meta["components"]),
        json.loads(meta.get("info", "{}")),
    )
    return entry, meta.get("run", "")


def _metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of safetensors bytes (an 8-byte little-endian header length, then
    JSON)."""
    size = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + size]).get("__metadata__", {})


def write_export(
    model: ComponentModel,
    edit: Edit,
    tokenizer: Any | None,
    out: Path,
    tokenizer_dir: Path | None = None,
    overwrite: bool = False,
) -> dict[str, int]:
    """Save the edited target (and tokenizer) to ``out``, replacing it whole; returns {file name:
    bytes}.

    The tokenizer's files are copied from ``tokenizer_dir`` (the run's saved tokenizer) when given,
    else written by ``tokenizer.save_pretrained``. Written into a fresh private directory made
    inside ``out``'s folder and renamed into place (``safe_files``), so ``out`` is never half
    written and no planted link is followed.
    """
    tmp = safe_files.new_dir(out.parent, out.name)
    try:
        export_edit(model, edit, tmp)
        if tokenizer_dir is not None and tokenizer_dir.is_dir():
            for f in tokenizer_dir.iterdir():
                if f.is_file():
                    shutil.copyfile(f, tmp / f.name)
        elif tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        safe_files.move_dir_into_place(tmp, out.parent, out.name, replace=overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {p.name: p.stat().st_size for p in out.iterdir()}
