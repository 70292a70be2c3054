"""Append launcher lifecycle events to the investigation's events.jsonl (shared with the server).

One JSON object per line: `schema` (version), `seq` (1-based line number in the file), `ts` (UTC
ISO time), `t` (unix seconds), `agent_id`, `source` ("launcher"), `kind`, then the event's fields.
Writers from several processes (the launcher's job and the server) take an exclusive `flock` on
the file, number the event by the lines already there, append, flush and fsync; so `seq` is unique
and increasing whoever writes.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

# Kinds the launcher writes (the server writes its own, e.g. tool_call).
LAUNCHER_KINDS = frozenset({
    "job_started", "job_resumed", "server_started", "server_ready", "server_failed",
    "server_stopped", "agent_started", "agent_finished", "agent_failed", "permission_denied",
    "tool_unavailable", "tool_error", "no_model_tool_called", "checkpoint", "job_finished",
    "protocol_step", "job_cancelled", "job_ended_by_scheduler",
    # the aggregation of a swarm (aggregate.py)
    "aggregate_started", "claim_retested", "grader_scored", "aggregate_failed", "aggregate_finished",
})


class EventLog:
    """Appends events for one agent id to one events.jsonl."""

    def __init__(self, path: Path, agent_id: str) -> None:
        self.path = path
        self.agent_id = agent_id

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        assert kind in LAUNCHER_KINDS, f"unknown launcher event kind {kind!r}; known: {sorted(LAUNCHER_KINDS)}"
        with self.path.open("a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.seek(0)
                seq = sum(1 for _ in f) + 1
                now = time.time()
                event = {"schema": SCHEMA_VERSION, "seq": seq,
                         "ts": datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds"),
                         "t": round(now, 3), "agent_id": self.agent_id, "source": "launcher",
                         "kind": kind, **fields}
                end = f.seek(0, os.SEEK_END)
                if end:
                    f.seek(end - 1)
                    torn = f.read(1) != b"\n"  # a writer died mid-line: start on a fresh line
                    f.seek(0, os.SEEK_END)
                    if torn:
                        f.write(b"\n")
                f.write((json.dumps(event, default=str) + "\n").encode())
                f.flush()
                os.fsync(f.fileno())
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return event


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every event in the file; a torn last line (a writer killed mid-write) is skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
