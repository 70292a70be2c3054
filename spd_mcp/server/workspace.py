"""The workspace directory: the investigation's files, written so nothing can escape the directory.

Agent-chosen names (artifact ids, hypothesis ids) must match ``ID_PATTERN``; every write goes
through ``safe_files`` (exclusive temporary files in the target folder, no link followed or reused).
"""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spd_mcp.contract.editing import EXPORTS
from spd_mcp.contract.ids import ID_RULE, validate_id
from spd_mcp.server import safe_files

RESEARCH_LOG = "research_log.md"
EVENTS = "events.jsonl"
HYPOTHESES = "hypotheses.jsonl"
EXPLANATIONS = "explanations.jsonl"
SUMMARY = "summary.json"
ARTIFACTS = "artifacts"
STORE = "store.sqlite"
SERVER_LOG = "server.log"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Workspace:
    """Files under one root directory. Methods do blocking I/O: call them off the event loop."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = safe_files.check_folder(root.resolve())
        artifacts = self.root / ARTIFACTS
        if not artifacts.is_symlink():
            artifacts.mkdir(exist_ok=True)
        self.artifacts = safe_files.check_folder(artifacts)

    # --- paths ------------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """A fixed file of the workspace (never an agent-chosen name)."""
        return self.root / name

    def exports_dir(self) -> Path:
        """``exports/``, created if missing; refused unless a real directory inside the
        workspace."""
        exports = self.root / EXPORTS
        if not exports.is_symlink():
            exports.mkdir(exist_ok=True)
        if exports.is_symlink() or not exports.is_dir() or exports.resolve().parent != self.root:
            raise ValueError(
                f"refusing to export: {EXPORTS}/ is not a plain directory inside the workspace"
            )
        return exports

    def export_path(self, name: str, overwrite: bool) -> Path:
        """``exports/<name>`` for a new model directory (an existing one only with
        ``overwrite``)."""
        validate_id(name, "export name")
        path = self.exports_dir() / name
        if path.is_symlink():
            raise ValueError(
                f"refusing to export to {EXPORTS}/{name}: it is a symbolic link; remove it first"
            )
        if path.exists() and not path.is_dir():
            raise ValueError(
                f"refusing to export to {EXPORTS}/{name}: it exists and is not a model directory"
            )
        if path.exists() and not overwrite:
            raise ValueError(
                f"export {name!r} already exists at {EXPORTS}/{name}; pass overwrite=true or "
                f"another name (valid: {ID_RULE})"
            )
        return path

    # --- writes -----------------------------------------------------------------------------------
    def append_text(self, name: str, text: str) -> None:
        safe_files.append_bytes(self.root, name, _encode(text))

    def append_jsonl(self, name: str, obj: dict[str, Any]) -> None:
        self.append_text(name, json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n")

    def append_log(self, heading: str, markdown: str) -> str:
        """Append a timestamped section to research_log.md; returns the heading line written."""
        title = " ".join(heading.split()) or "note"
        head = f"## {now_iso()} {title}"
        body = markdown if markdown.endswith("\n") else markdown + "\n"
        self.append_text(RESEARCH_LOG, f"\n{head}\n\n{body}")
        return head

    def write_json(self, name: str, obj: Any) -> Path:
        """Replace a fixed file atomically (temp file + rename)."""
        text = json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False)
        return safe_files.write_file(self.root, name, _encode(text))

    def write_artifacts(self, artifact_id: str, texts: dict[str, str]) -> list[Path]:
        """``artifacts/<id><suffix>`` for each ``suffix -> text``: all written, or none."""
        validate_id(artifact_id, "artifact id")
        files = {f"{artifact_id}{suffix}": _encode(text) for suffix, text in texts.items()}
        return safe_files.write_files(self.artifacts, files)

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        path = self._inside(self.root / name)
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def log_size(self) -> int:
        path = self.root / RESEARCH_LOG
        return path.stat().st_size if path.exists() else 0

    # --- helpers ----------------------------------------------------------------------------------
    def _inside(self, path: Path) -> Path:
        if path.is_symlink() or path.resolve().parent not in (self.root, self.artifacts):
            raise ValueError(
                f"refusing to read {path.name}: it is a symbolic link or not inside the workspace"
            )
        return path


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "backslashreplace")
