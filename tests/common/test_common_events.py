"""events.jsonl is one log: launcher and server writers in many processes (and threads) at once
leave one schema on every line and seq strictly increasing; old directories (both old line formats)
still read and continue."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from spd_mcp.common.events import HEADER, SCHEMA_VERSION, EventLog, read_events, schema_problems
from spd_mcp.launcher.stream import event_line

ROOT = Path(__file__).resolve().parents[2]

# One writer process. Launcher side: one event at a time, each fsynced (as the job writes).
# Server side: several threads, each appending and then syncing (as the call-logging middleware
# does: fsync shared between concurrent calls).
WRITER = """
import sys, threading, time
from pathlib import Path
from spd_mcp.common.events import EventLog
path, source, who, go = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[6])
threads, n = int(sys.argv[4]), int(sys.argv[5])
log = EventLog(path, who, source=source)
kind = "protocol_step" if source == "launcher" else "tool_call"
while not go.exists():
    time.sleep(0.001)
def work(t):
    for i in range(n):
        ev = log.append(kind, thread=t, i=i, text="x" * (i * 37 % 900))
        log.sync(ev["seq"])
ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
log.close()
"""


def test_many_writers_in_many_processes_leave_one_schema_and_rising_seq(tmp_path: Path) -> None:
    path, go = tmp_path / "events.jsonl", tmp_path / "go"
    writers = [("launcher", f"job{k}", 1, 60) for k in range(3)]
    writers += [("server", f"server{k}", 4, 30) for k in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), source, who, str(threads), str(n), str(go)],
            cwd=ROOT,
        )
        for source, who, threads, n in writers
    ]
    time.sleep(1.0)  # let every process import and open the file, then start them together
    go.touch()
    for p in procs:
        assert p.wait(timeout=120) == 0
    expected = sum(threads * n for _, _, threads, n in writers)

    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == expected == 420
    problems = [(i, p) for i, line in enumerate(lines) for p in schema_problems(line)]
    assert not problems, problems[:5]
    events = [json.loads(line) for line in lines]
    assert [e["seq"] for e in events] == list(range(1, expected + 1))  # strictly increasing, no gap
    assert {e["source"] for e in events} == {"launcher", "server"}
    for source, who, threads, n in writers:  # each writer's (thread's) events keep their order
        assert {e["source"] for e in events if e["agent_id"] == who} == {source}
        for t in range(threads):
            mine = [e["i"] for e in events if e["agent_id"] == who and e["thread"] == t]
            assert mine == list(range(n)), (who, t)
    # the writers really interleaved: launcher and server lines alternate somewhere in the file
    switches = sum(a["source"] != b["source"] for a, b in zip(events, events[1:], strict=False))
    assert switches > 4
    assert read_events(path) == events  # current lines read back as written


OLD_LAUNCHER = {
    "schema": 1,
    "seq": 1,
    "ts": "2026-11-30T10:00:00.000+00:00",
    "t": 1796000000.0,
    "agent_id": "inv-old",
    "source": "launcher",
    "kind": "job_started",
    "job_id": "7",
}
OLD_SERVER = {
    "v": 1,
    "seq": 2,
    "ts": "2026-11-30T10:00:01.000000+00:00",
    "t_unix": 1796000001.0,
    "agent": "agent",
    "type": "tool_call",
    "tool": "run_prompt",
    "args": {"text": "the cat"},
    "duration_ms": 4.2,
    "outcome": "ok",
    "error": None,
}


def test_old_directories_read_in_the_one_schema_and_continue(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(OLD_LAUNCHER) + "\n" + json.dumps(OLD_SERVER) + "\n")
    old = read_events(path)
    assert [tuple(e)[: len(HEADER)] for e in old] == [HEADER, HEADER]
    assert [(e["source"], e["kind"], e["agent_id"], e["t"]) for e in old] == [
        ("launcher", "job_started", "inv-old", 1796000000.0),
        ("server", "tool_call", "agent", 1796000001.0),
    ]
    assert old[1]["tool"] == "run_prompt" and old[1]["args"] == {"text": "the cat"}
    assert "v" not in old[1] and "type" not in old[1] and "t_unix" not in old[1]
    lines = [event_line(e) for e in old]
    assert lines[0].startswith("10:00:00 launcher job_started")
    assert lines[1].startswith("10:00:01 server   tool_call run_prompt(text=the cat) ok 4 ms")
    with EventLog(path, "inv-old", source="launcher") as log:  # a resumed job appends
        assert log.emit("job_resumed")["seq"] == 3
    assert [e["seq"] for e in read_events(path)] == [1, 2, 3]
    assert schema_problems(path.read_text().splitlines()[-1]) == []
    assert read_events(tmp_path / "missing.jsonl") == []


def test_a_line_outside_the_schema_is_named() -> None:
    assert schema_problems(json.dumps(OLD_SERVER)) != []
    assert schema_problems("{not json") and schema_problems("[1]") == ["not a JSON object"]
    good = {
        "schema": SCHEMA_VERSION,
        "seq": 1,
        "ts": "",
        "t": 0,
        "source": "server",
        "agent_id": "a",
        "kind": "tool_call",
    }
    assert schema_problems(json.dumps(good)) == []
    assert schema_problems(json.dumps({**good, "kind": "job_started"})) == [
        "kind 'job_started' is not a 'server' kind"
    ]
