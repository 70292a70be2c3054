"""The append-only event log: one JSON object per line, one os.write per line, fsynced per event.

Each line is written with a single ``os.write`` on an ``O_APPEND`` descriptor and fsynced before the
call it records is answered, so a ``kill -9`` at any moment leaves every completed line intact and
nothing acknowledged is lost. Concurrent events share an fsync (group commit).
"""

import hashlib
import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spd_mcp.server.safe_files import open_append

SCHEMA_VERSION = 1
MAX_INLINE_ARGS_BYTES = 2048


def summarize_args(args: Any) -> dict[str, Any]:
    """Arguments inline when small, else their sha256 and size (keeps lines short)."""
    try:
        text = json.dumps(args, sort_keys=True, default=str, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN/Inf: strict JSON cannot hold them
        return {"args_repr": repr(args)[:MAX_INLINE_ARGS_BYTES]}
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= MAX_INLINE_ARGS_BYTES:
        return {"args": args}
    return {"args_sha256": hashlib.sha256(data).hexdigest(), "args_bytes": len(data)}


class EventLog:
    """Writes events to ``path`` (or only counts them when ``path`` is None). Thread-safe."""

    def __init__(self, path: Path | None, agent_id: str) -> None:
        self.path = path
        self.agent_id = agent_id
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._synced = 0
        self._seq = 0
        self._fd: int | None = None
        if path is not None:
            self._fd = open_append(path.parent, path.name)  # links and shared files refused
            _drop_torn_tail(path)
            self._seq = _last_seq(path)

    @property
    def seq(self) -> int:
        return self._seq

    def write(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Append one event and fsync it; returns the event (with its sequence number and timestamps)."""
        event = self.append(type_, **fields)
        self.sync(event["seq"])
        return event

    def append(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Write one event with a single os.write (page cache: microseconds); ``sync`` makes it durable."""
        with self._lock:
            self._seq += 1
            event = {
                "v": SCHEMA_VERSION,
                "seq": self._seq,
                "ts": datetime.now(UTC).isoformat(timespec="microseconds"),
                "t_unix": round(time.time(), 6),
                "agent": self.agent_id,
                "type": type_,
                **fields,
            }
            if self._fd is not None:
                line = json.dumps(event, default=str, ensure_ascii=False, allow_nan=False) + "\n"
                os.write(self._fd, line.encode("utf-8", "backslashreplace"))
            return event

    def needs_sync(self, seq: int) -> bool:
        """Whether ``sync(seq)`` has work to do (no file, or an fsync already covered it: no thread hop needed)."""
        return self._fd is not None and self._synced < seq

    def sync(self, seq: int) -> None:
        """fsync unless an earlier fsync already covered ``seq`` (group commit for concurrent calls)."""
        with self._sync_lock:
            if self._fd is None or self._synced >= seq:
                return
            upto = self._seq
            os.fsync(self._fd)
            self._synced = upto

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _drop_torn_tail(path: Path) -> None:
    """Cut an unterminated last line (never acknowledged: only a power loss can leave one)."""
    if not path.exists() or path.is_symlink():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _last_seq(path: Path) -> int:
    """Continue numbering after the last complete line of an existing log."""
    if not path.exists():
        return 0
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 65536))
        tail = f.read().split(b"\n")
    for raw in reversed(tail):
        try:
            return int(json.loads(raw)["seq"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete line of an event log (a torn last line from a crash is skipped)."""
    out = []
    for raw in path.read_bytes().split(b"\n"):
        if raw.strip():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
    return out
