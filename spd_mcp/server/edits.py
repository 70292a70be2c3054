"""The server's named edits: overlays kept in memory by id ('e1', 'e2', ...); the base model never changes."""

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

from spd_core.analysis.overlay import Edit


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
