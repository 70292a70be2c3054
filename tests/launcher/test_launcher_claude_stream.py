"""Reading a Claude Code stream-json transcript back: init check, denials, tool errors, status.

The recorded stream is real: claude 2.1.330 run with the lockdown flags against the stand-in server
and the scripted fake API (tests/launcher/golden/claude_stream_2.1.330.jsonl). Its script called
two model tools, tried Bash, Read, Write, WebFetch, an unlisted server's tool and Task, and called
set_investigation_summary while it was left out of --allowedTools.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from spd_mcp.common.events import EventLog, read_events
from spd_mcp.launcher.agents import AgentContext, TranscriptWriter
from spd_mcp.launcher.agents.claude_code import analyze_stream, check_init, result_from_stream
from spd_mcp.launcher.layout import InvestigationDir
from tests.launcher.launcher_support import make_spec

STREAM = Path(__file__).parent / "golden" / "claude_stream_2.1.330.jsonl"
TOOLS = ["get_model_info", "run_prompt", "set_investigation_summary", "update_research_log"]


def _messages() -> list[dict]:
    return [json.loads(line) for line in STREAM.read_text().splitlines()]


def test_recorded_stream_is_read_correctly() -> None:
    report = analyze_stream(_messages(), TOOLS)
    assert report.init_problems == []
    assert report.tool_calls == 10 and report.model_tool_calls == 2
    assert [d["tool_name"] for d in report.denials] == ["mcp__spd__set_investigation_summary"]
    assert sorted(u["tool_name"] for u in report.unavailable) == sorted(
        ["Bash", "Read", "Write", "WebFetch", "mcp__other__evil", "Task"]
    )
    assert report.tool_errors == []
    assert report.result is not None and report.result["subtype"] == "success"


def test_init_must_show_our_server_alone_with_our_tools() -> None:
    init = next(m for m in _messages() if m.get("subtype") == "init")
    assert check_init(init, TOOLS) == []
    assert check_init(None, TOOLS) == [
        "no init message in the stream (claude did not start a session)"
    ]
    failed = copy.deepcopy(init)
    failed["mcp_servers"] = [
        {"name": "spd", "status": "failed"},
        {"name": "other", "status": "connected"},
    ]
    problems = check_init(failed, TOOLS)
    assert any("not connected" in p for p in problems) and any("other" in p for p in problems)
    extra = copy.deepcopy(init)
    extra["tools"] = [*init["tools"], "Bash"]
    assert any("extra ['Bash']" in p for p in check_init(extra, TOOLS))


def _ctx(tmp_path: Path) -> AgentContext:
    inv = InvestigationDir(tmp_path)
    spec = make_spec(tmp_path / "runs", agent="claude_code", claude_bin="/bin/true")
    return AgentContext(
        spec=spec,
        inv=inv,
        url="http://127.0.0.1:1/mcp",
        token="t",
        tools=[],
        system_prompt="",
        kickoff="",
        events=EventLog(inv.events, spec.inv_id, source="launcher"),
        transcript=TranscriptWriter(inv.transcript),
    )


def test_result_and_events_from_the_stream(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    result = result_from_stream(ctx, analyze_stream(_messages(), TOOLS), rc=0)
    assert (result.status, result.turns, result.model_tool_calls) == ("completed", 11, 2)
    assert result.cost_usd is not None and result.cost_usd > 0 and len(result.denials) == 7
    kinds = [e["kind"] for e in read_events(ctx.inv.events)]
    assert kinds == ["permission_denied"] + ["tool_unavailable"] * 6


def test_a_run_that_never_touched_the_model_is_flagged(tmp_path: Path) -> None:
    msgs = [
        m
        for m in _messages()
        if not (
            m.get("type") == "assistant"
            and any(
                b.get("name") in ("mcp__spd__get_model_info", "mcp__spd__run_prompt")
                for b in m["message"]["content"]
                if isinstance(b, dict)
            )
        )
    ]
    result = result_from_stream(_ctx(tmp_path), analyze_stream(msgs, TOOLS), rc=0)
    assert result.status == "no_model_tool_called" and not result.ok


def test_missing_result_or_bad_init_is_a_failure(tmp_path: Path) -> None:
    msgs = [m for m in _messages() if m.get("type") != "result"]
    result = result_from_stream(_ctx(tmp_path), analyze_stream(msgs, TOOLS), rc=1)
    assert result.status == "failed" and "without a result message" in (result.error or "")
    msgs = [m for m in _messages() if m.get("subtype") != "init"]
    result = result_from_stream(_ctx(tmp_path), analyze_stream(msgs, TOOLS), rc=0)
    assert result.status == "failed" and "no init message" in (result.error or "")
