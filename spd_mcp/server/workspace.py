"""The workspace directory: the investigation's files, written so nothing can escape the directory.

Agent-chosen names (artifact ids, hypothesis ids) must match ``ID_PATTERN``; every file is opened
with ``O_NOFOLLOW`` and its resolved parent must be the workspace (or its ``artifacts/``).
"""

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
ID_RULE = "1-64 characters: letters, digits, '_' or '-', starting with a letter or digit (e.g. 'h1', 'graph_001')"
_ID_RE = re.compile(ID_PATTERN)

RESEARCH_LOG = "research_log.md"
EVENTS = "events.jsonl"
HYPOTHESES = "hypotheses.jsonl"
EXPLANATIONS = "explanations.jsonl"
SUMMARY = "summary.json"
ARTIFACTS = "artifacts"
EXPORTS = "exports"
STORE = "store.sqlite"
SERVER_LOG = "server.log"


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a safe id, else raise ValueError saying what is valid."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}; valid: {ID_RULE}")
    return value


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Workspace:
    """Files under one root directory. Methods do blocking I/O: call them off the event loop."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        (self.root / ARTIFACTS).mkdir(exist_ok=True)
        self.artifacts = (self.root / ARTIFACTS).resolve()
        assert self.artifacts.parent == self.root, f"{self.artifacts} must be a real directory inside {self.root}"

    # --- paths ------------------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """A fixed file of the workspace (never an agent-chosen name)."""
        return self.root / name

    def artifact_path(self, artifact_id: str, suffix: str) -> Path:
        validate_id(artifact_id, "artifact id")
        path = self.artifacts / f"{artifact_id}{suffix}"
        if path.resolve().parent != self.artifacts or path.is_symlink():
            raise ValueError(f"artifact path for {artifact_id!r} would leave {self.artifacts}")
        return path

    def export_path(self, name: str, overwrite: bool) -> Path:
        """``exports/<name>`` for a new model directory (an existing one only with ``overwrite``)."""
        validate_id(name, "export name")
        exports = self.root / EXPORTS
        exports.mkdir(exist_ok=True)
        if exports.is_symlink() or exports.resolve().parent != self.root:
            raise ValueError(f"refusing to export: {exports} is not a plain directory inside the workspace")
        path = exports / name
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            raise ValueError(f"refusing to export to {EXPORTS}/{name}: it exists and is not a model directory")
        if path.exists() and not overwrite:
            raise ValueError(
                f"export {name!r} already exists at {EXPORTS}/{name}; pass overwrite=true or another name (valid: {ID_RULE})"
            )
        return path

    # --- writes -----------------------------------------------------------------------------------
    def append_text(self, name: str, text: str) -> None:
        _append(self._inside(self.root / name), text)

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
        return self._write_atomic(self._inside(self.root / name), json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False))

    def write_artifact(self, artifact_id: str, suffix: str, text: str) -> Path:
        return self._write_atomic(self.artifact_path(artifact_id, suffix), text)

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
            raise ValueError(f"refusing to write {path}: not a plain file inside the workspace {self.root}")
        return path

    @staticmethod
    def _write_atomic(path: Path, text: str) -> Path:
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, text.encode("utf-8", "backslashreplace"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return path


def _append(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, text.encode("utf-8", "backslashreplace"))
        os.fsync(fd)
    finally:
        os.close(fd)
