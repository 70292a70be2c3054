"""events.jsonl: one schema for every line, one numbering rule, one lock, one reader.

Every line is one JSON object whose first keys are the same whoever writes it:

    schema    SCHEMA_VERSION
    seq       1, 2, 3, ... in file order: the last complete line's seq + 1
    ts        UTC ISO time (milliseconds)       t   unix seconds
    source    "launcher" | "server"             agent_id   the investigation or agent id
    kind      what happened (KINDS[source]), then the event's own fields

Writers in any process (the launcher's job, the server, the watcher noticing a SLURM cancel) take
an exclusive `flock` on the file, number the event from the last complete line, append it with one
`os.write` and release the lock; so `seq` is unique and strictly increasing whoever writes. A torn
last line (a writer killed mid-write, never acknowledged) is cut under the lock before the next
append. `fsync` runs outside the lock, so concurrent events of one process share it (`sync`).

Directories written before this schema still read: `read_events` and `EventTail` turn the launcher's
old lines (`schema` 1) and the server's (`v`/`t_unix`/`agent`/`type`) into the header above.
Standard library only: the server and the launcher both import it.
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import threading
import time
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

SCHEMA_VERSION = 2
Source = Literal["launcher", "server"]
HEADER = ("schema", "seq", "ts", "t", "source", "agent_id", "kind")

KINDS: dict[str, frozenset[str]] = {
    "launcher": frozenset(
        {
            "job_started",
            "job_resumed",
            "server_started",
            "server_ready",
            "server_failed",
            "server_stopped",
            "agent_started",
            "agent_finished",
            "agent_failed",
            "permission_denied",
            "tool_unavailable",
            "tool_error",
            "no_model_tool_called",
            "checkpoint",
            "job_finished",
            "protocol_step",
            "job_cancelled",
            "job_ended_by_scheduler",
            # the aggregation of a swarm (aggregate.py)
            "aggregate_started",
            "claim_retested",
            "grader_scored",
            "aggregate_failed",
            "aggregate_finished",
        }
    ),
    # job_finished here is an MCP job (a long tool call), not the launcher's job
    "server": frozenset({"server_start", "server_stop", "tool_call", "job_finished"}),
}
_TAIL_CHUNK = 8192


class EventLog:
    """Appends one source's events for one agent id to an events.jsonl. Thread-safe.

    `path` None only counts events (a server without a workspace). The file descriptor stays open
    until `close` (or the end of a `with` block, or garbage collection)."""

    def __init__(self, path: Path | None, agent_id: str, *, source: Source) -> None:
        if source not in KINDS:
            raise ValueError(f"unknown event source {source!r}; known: {sorted(KINDS)}")
        self.path, self.agent_id, self.source = path, agent_id, source
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._fd: int | None = None
        self._finalizer: weakref.finalize | None = None
        self._seq = 0  # the last seq this object wrote (or counted)
        self._end = -1  # the file's size right after that write
        self._synced = 0

    @property
    def seq(self) -> int:
        return self._seq

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one event and fsync it; returns the event as written."""
        event = self.append(kind, **fields)
        self.sync(event["seq"])
        return event

    def append(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Append one event under the file lock (microseconds); `sync` makes it durable."""
        if kind not in KINDS[self.source]:
            raise ValueError(
                f"unknown {self.source} event kind {kind!r}; known: {sorted(KINDS[self.source])}"
            )
        clash = sorted(set(fields) & set(HEADER))
        if clash:
            raise ValueError(f"event fields {clash} would overwrite the header {HEADER}")
        with self._lock:
            fd = self._open()
            if fd is None:
                self._seq += 1
                return self._event(self._seq, kind, fields)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                seq = self._next_seq(fd)
                event = self._event(seq, kind, fields)
                line = json.dumps(event, default=str, ensure_ascii=False, allow_nan=False) + "\n"
                data = line.encode("utf-8", "backslashreplace")
                os.write(fd, data)
                self._seq, self._end = seq, os.fstat(fd).st_size
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            return event

    def needs_sync(self, seq: int) -> bool:
        """Whether `sync(seq)` has work to do (a file, and no fsync has covered `seq` yet)."""
        return self.path is not None and self._synced < seq

    def sync(self, seq: int) -> None:
        """fsync unless an earlier fsync covered `seq` (group commit of concurrent events)."""
        with self._sync_lock:
            if self._fd is None or self._synced >= seq:
                return
            upto = self._seq
            os.fsync(self._fd)
            self._synced = upto

    def close(self) -> None:
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()  # closes the descriptor once
            self._fd = self._finalizer = None

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _event(self, seq: int, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        return {
            "schema": SCHEMA_VERSION,
            "seq": seq,
            "ts": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
            "t": round(now, 6),
            "source": self.source,
            "agent_id": self.agent_id,
            "kind": kind,
            **fields,
        }

    def _open(self) -> int | None:
        if self.path is None:
            return None
        if self._fd is None:
            flags = (
                os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            )
            try:
                fd = os.open(self.path, flags, 0o644)  # a symbolic link is refused (ELOOP)
            except OSError as exc:
                raise ValueError(
                    f"refusing to append to {self.path.name}: {exc.strerror} (a symbolic link, or "
                    "not a file)"
                ) from exc
            st = os.fstat(fd)
            if (
                not stat.S_ISREG(st.st_mode) or st.st_nlink > 1
            ):  # a fifo, or a hard link to a file elsewhere
                os.close(fd)
                raise ValueError(
                    f"refusing to append to {self.path.name}: it is not a plain file with one link "
                    "(hard links and special files are refused)"
                )
            os.set_blocking(fd, True)
            self._fd = fd
            self._finalizer = weakref.finalize(self, os.close, self._fd)
        return self._fd

    def _next_seq(self, fd: int) -> int:
        """Under the lock: the last complete line's seq + 1 (a torn last line is cut first)."""
        size = os.fstat(fd).st_size
        if size == self._end:  # nobody wrote since our own last line
            return self._seq + 1
        return last_seq(fd, size) + 1


def last_seq(fd: int, size: int) -> int:
    """The seq of the last complete line of the file open as `fd` (0 if none); cuts a torn tail."""
    if size and os.pread(fd, 1, size - 1) != b"\n":
        keep = _last_newline(fd, size)
        os.ftruncate(fd, keep)
        size = keep
    chunk, lines_seen = _TAIL_CHUNK, 0
    while size:
        start = max(0, size - chunk)
        data = os.pread(fd, size - start, start)
        lines = data.split(b"\n")[:-1]  # the file ends with a newline
        complete = lines if start == 0 else lines[1:]  # the first may have begun before `start`
        for raw in reversed(complete):
            try:
                return int(json.loads(raw)["seq"])
            except (ValueError, KeyError, TypeError):
                continue
        if start == 0:
            lines_seen = len(complete)
            break
        chunk *= 4
    return lines_seen  # no line carries a seq: number by position


def _last_newline(fd: int, size: int) -> int:
    """The offset just after the file's last newline (0 if it has none)."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        i = os.pread(fd, end - start, start).rfind(b"\n")
        if i >= 0:
            return start + i + 1
        end = start
    return 0


# --- reading ------------------------------------------------------------------------------------


def normalize(raw: dict[str, Any]) -> dict[str, Any]:
    """One line in the header above (keys in that order), whichever writer and version wrote it."""
    if "type" in raw and "v" in raw and "kind" not in raw:  # the server's lines before schema 2
        head = {
            "schema": raw["v"],
            "seq": raw.get("seq"),
            "ts": raw.get("ts", ""),
            "t": raw.get("t_unix"),
            "source": "server",
            "agent_id": raw.get("agent"),
            "kind": raw["type"],
        }
        old = ("v", "t_unix", "agent", "type")
    else:  # this schema, the launcher's schema 1, or a line that follows neither
        head = {
            "schema": raw.get("schema"),
            "seq": raw.get("seq"),
            "ts": raw.get("ts", ""),
            "t": raw.get("t"),
            "source": str(raw.get("source", "unknown")),
            "agent_id": raw.get("agent_id"),
            "kind": str(raw.get("kind", "unknown")),
        }
        old = ()
    rest = {k: v for k, v in raw.items() if k not in head and k not in old}
    return {**head, **rest}


def parse_line(raw: bytes | str) -> dict[str, Any] | None:
    """A normalized event, or None for a blank, torn or non-object line."""
    if not raw.strip():
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    return normalize(obj) if isinstance(obj, dict) else None


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete event of the file, normalized (none if it does not exist)."""
    if not path.exists():
        return []
    return [e for raw in path.read_bytes().split(b"\n") if (e := parse_line(raw)) is not None]


class EventTail:
    """The new complete events of a growing events.jsonl, normalized, at each `read`."""

    def __init__(self, path: Path) -> None:
        self.path, self.pos, self.buf = path, 0, b""

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.pos)
            chunk = f.read()
            self.pos = f.tell()
        *lines, self.buf = (self.buf + chunk).split(b"\n")
        return [e for raw in lines if (e := parse_line(raw)) is not None]


def schema_problems(line: bytes | str) -> list[str]:
    """What keeps one raw line of events.jsonl from being a current-schema event (empty if none)."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        return [f"not JSON: {exc}"]
    if not isinstance(obj, dict):
        return ["not a JSON object"]
    problems = []
    if tuple(obj)[: len(HEADER)] != HEADER:
        problems.append(f"header {tuple(obj)[: len(HEADER)]} is not {HEADER}")
    if obj.get("schema") != SCHEMA_VERSION:
        problems.append(f"schema {obj.get('schema')!r} is not {SCHEMA_VERSION}")
    if obj.get("kind") not in KINDS.get(str(obj.get("source")), ()):
        problems.append(f"kind {obj.get('kind')!r} is not a {obj.get('source')!r} kind")
    return problems
