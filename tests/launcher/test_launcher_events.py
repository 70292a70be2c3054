"""events.jsonl: schema fields, and unique increasing seq under concurrent writers."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from spd_mcp.common.events import SCHEMA_VERSION, EventLog, read_events


def _write_many(path: str, who: str, n: int) -> None:
    log = EventLog(Path(path), who, source="launcher")
    for i in range(n):
        log.emit("tool_error", tool_name=who, i=i)


def test_concurrent_writers_get_unique_seq(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_write_many, args=(str(path), f"w{k}", 40)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    events = read_events(path)
    assert len(events) == 120
    assert [e["seq"] for e in events] == list(range(1, 121))
    for k in range(3):
        mine = [e["i"] for e in events if e["agent_id"] == f"w{k}"]
        assert mine == list(range(40)), "each writer's events stay in its own order"
    e = events[0]
    assert (
        e["schema"] == SCHEMA_VERSION and e["source"] == "launcher" and e["ts"].endswith("+00:00")
    )


def test_unknown_kind_and_torn_line(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl", "a", source="launcher")
    with pytest.raises(ValueError, match="unknown launcher event kind"):
        log.emit("made_up")
    log.emit("job_started")
    with (tmp_path / "events.jsonl").open("a") as f:
        f.write('{"seq": 2, "kind": "tor')
    assert [e["kind"] for e in read_events(tmp_path / "events.jsonl")] == ["job_started"]
    log.emit("job_finished")  # the torn line (never acknowledged) is cut; its seq is taken again
    assert [(e["seq"], e["kind"]) for e in read_events(tmp_path / "events.jsonl")] == [
        (1, "job_started"),
        (2, "job_finished"),
    ]
