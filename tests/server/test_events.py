"""events.jsonl: schema of each event, large arguments hashed, and every line intact after
kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import Client

from spd_mcp.common.events import SCHEMA_VERSION, EventLog, read_events
from spd_mcp.server.events import MAX_INLINE_ARGS_BYTES
from tests.server.helpers import err, make_server, ok

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.anyio
async def test_every_tool_call_is_an_event(lm, tmp_path: Path) -> None:
    big = "the " * 1000
    async with Client(make_server(lm, tmp_path, agent_id="agent-7")) as c:
        await ok(c, "run_prompt", {"text": "the cat"})
        await err(c, "run_prompt", {"text": big})
        await err(c, "run_prompt", {"text": "the", "top_k": 0})  # rejected by the input schema
        await err(c, "no_such_tool", {})
    events = read_events(tmp_path / "events.jsonl")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["kind"] == "server_start" and events[-1]["kind"] == "server_stop"
    calls = [e for e in events if e["kind"] == "tool_call"]
    assert [(e["tool"], e["outcome"]) for e in calls] == [
        ("run_prompt", "ok"),
        ("run_prompt", "error"),
        ("run_prompt", "error"),
        ("no_such_tool", "error"),
    ]
    for e in events:
        assert e["schema"] == SCHEMA_VERSION and e["source"] == "server"
        assert e["agent_id"] == "agent-7"
        assert e["ts"].endswith("+00:00") and e["t"] > 0
    assert (
        calls[0]["args"] == {"text": "the cat"}
        and calls[0]["duration_ms"] > 0
        and calls[0]["error"] is None
    )
    assert (
        "args" not in calls[1]
        and len(calls[1]["args_sha256"]) == 64
        and calls[1]["args_bytes"] > MAX_INLINE_ARGS_BYTES
    )
    assert (
        "at most 64" in calls[1]["error"]
        and "top_k" in calls[2]["error"]
        and "Unknown tool" in calls[3]["error"]
    )


def test_sequence_continues_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog(path, "a", source="server")
    log.emit("server_start")
    log.emit("tool_call")
    log.close()
    with path.open("ab") as f:
        f.write(b'{"schema": 2, "seq": 3, "torn')  # a crash mid-line
    log = EventLog(path, "a", source="server")
    assert log.emit("server_stop")["seq"] == 3
    log.close()
    assert [e["seq"] for e in read_events(path)] == [1, 2, 3]


WRITER = """
import sys
from pathlib import Path
from spd_mcp.common.events import EventLog
log = EventLog(Path(sys.argv[1]), "stress", source="server")
payload = {"text": "x" * 1500, "list": list(range(50))}
i = 0
while True:
    ev = log.emit("tool_call", tool="run_prompt", args=payload, i=i)
    print(ev["seq"], flush=True)
    i += 1
"""


def test_kill_9_during_heavy_logging_leaves_every_line_intact(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    acked = 0
    for _round in range(3):  # kill at three different moments
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 10
        last = 0
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            last = int(line)
            if last >= acked + 200:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        acked = last
        raw = path.read_bytes().split(b"\n")
        complete, tail = raw[:-1], raw[-1]
        parsed = [json.loads(x) for x in complete]  # every completed line parses
        assert tail == b""  # one os.write per line: a killed process never leaves half a line
        seqs = [e["seq"] for e in parsed]
        assert seqs == list(range(1, len(seqs) + 1))
        assert seqs[-1] >= acked  # nothing acknowledged is lost
