"""The Anthropic Messages-API agent, driven by the scripted fake API against the stand-in server."""

from __future__ import annotations

import json
from pathlib import Path

from support.fake_messages_api import FakeMessagesAPI, ToolCall, Turn

from spd_mcp.common.events import EventLog, read_events
from spd_mcp.launcher.agents import AgentContext, AgentResult, TranscriptWriter
from spd_mcp.launcher.agents.anthropic_api import run_anthropic_api, usage_cost
from spd_mcp.launcher.layout import InvestigationDir
from tests.launcher.launcher_support import make_spec


def _run(
    tmp_path: Path, standin, script: list[Turn], **spec_kw
) -> tuple[AgentResult, FakeMessagesAPI, InvestigationDir]:
    server, tools, _ = standin
    inv = InvestigationDir(
        tmp_path
    )  # transcript and events of this test; the server has its own workspace
    spec = make_spec(tmp_path / "runs", **spec_kw)
    with FakeMessagesAPI(script) as api:
        import os

        os.environ["ANTHROPIC_BASE_URL"], os.environ["ANTHROPIC_API_KEY"] = api.url, "sk-ant-dummy"
        transcript = TranscriptWriter(inv.transcript)
        ctx = AgentContext(
            spec=spec,
            inv=inv,
            url=server.url,
            token=server.token,
            tools=tools,
            system_prompt="SYSTEM PROMPT",
            kickoff="Begin.",
            events=EventLog(inv.events, spec.inv_id, source="launcher"),
            transcript=transcript,
        )
        try:
            result = run_anthropic_api(ctx, backoff_base_s=0.01)
        finally:
            transcript.close()
    return result, api, inv


def _transcript(inv: InvestigationDir) -> list[dict]:
    return [json.loads(line) for line in inv.transcript.read_text().splitlines()]


def test_short_investigation_end_to_end(tmp_path: Path, standin, api_env) -> None:
    script = [
        Turn(
            tool_calls=(
                ToolCall("update_research_log", {"req": {"markdown": "Plan: check he/she."}}),
            )
        ),
        Turn(
            tool_calls=(
                ToolCall("run_prompt", {"text": "then he said"}),
                ToolCall("Bash", {"command": "ls"}),
            )
        ),
        Turn(
            tool_calls=(
                ToolCall(
                    "set_investigation_summary",
                    {"req": {"title": "He/she", "summary": "done", "status": "completed"}},
                ),
            )
        ),
        Turn(text="Finished: the answer is in the log."),
    ]
    result, api, inv = _run(tmp_path, standin, script)
    assert (result.status, result.turns, result.tool_calls) == ("completed", 4, 4)
    assert (
        result.model_tool_calls == 1 and result.final_text == "Finished: the answer is in the log."
    )
    first = api.requests[0].body
    assert first["system"] == "SYSTEM PROMPT" and first["messages"][0]["content"] == "Begin."
    assert sorted(t["name"] for t in first["tools"]) == sorted(t.name for t in standin[1])
    results = api.tool_results()
    # the stand-in's run_prompt reverses the last two words: checked by a second route here
    pred = json.loads(results[1]["content"])
    assert pred["top_tokens"] == ["eh", "dias"]  # "he", "said" reversed
    assert not results[1].get("is_error")
    assert results[2]["is_error"] and "No such tool available: Bash" in results[2]["content"]
    workspace = InvestigationDir(standin[2])
    assert "Plan: check he/she." in workspace.research_log.read_text()
    assert json.loads(workspace.summary.read_text())["title"] == "He/she"
    kinds = [e["kind"] for e in read_events(inv.events)]
    assert kinds == ["agent_started", "tool_unavailable"]
    lines = _transcript(inv)
    assert [m["type"] for m in lines] == ["system"] + ["assistant", "user"] * 3 + ["assistant"]
    cost = sum(
        usage_cost("claude-opus-4-5", type("U", (), m["message"]["usage"]))
        for m in lines
        if m["type"] == "assistant"
    )
    assert abs(result.cost_usd - cost) < 1e-12 and result.cost_usd > 0


def test_overload_is_retried_with_backoff(tmp_path: Path, standin, api_env) -> None:
    script = [
        Turn(status=529),
        Turn(status=529),
        Turn(tool_calls=(ToolCall("run_prompt", {"text": "a b"}),)),
        Turn(text="ok"),
    ]
    result, api, inv = _run(tmp_path, standin, script)
    assert result.status == "completed" and result.turns == 2
    retries = [m for m in _transcript(inv) if m["type"] == "retry"]
    assert [r["attempt"] for r in retries] == [1, 2] and retries[1]["delay_s"] == 2 * retries[0][
        "delay_s"
    ]
    assert "overloaded" in retries[0]["error"]
    assert len(api.requests) == 4


def test_non_retryable_error_fails_cleanly(tmp_path: Path, standin, api_env) -> None:
    result, api, _ = _run(tmp_path, standin, [Turn(status=400)])
    assert result.status == "failed" and "400" in (result.error or "") and len(api.requests) == 1


def test_max_turns_stops_the_loop(tmp_path: Path, standin, api_env) -> None:
    script = [Turn(tool_calls=(ToolCall("run_prompt", {"text": f"x {i}"}),)) for i in range(5)]
    result, api, _ = _run(tmp_path, standin, script, max_turns=2)
    assert (result.status, result.turns, api.turns_used) == ("max_turns", 2, 2)


def test_budget_stops_the_loop(tmp_path: Path, standin, api_env) -> None:
    script = [Turn(tool_calls=(ToolCall("run_prompt", {"text": f"x {i}"}),)) for i in range(5)]
    result, api, _ = _run(tmp_path, standin, script, budget_usd=1e-6)
    assert (result.status, result.turns, api.turns_used) == ("budget", 1, 1)
    assert result.cost_usd is not None and result.cost_usd >= 1e-6


def test_run_without_model_tools_is_flagged(tmp_path: Path, standin, api_env) -> None:
    script = [
        Turn(tool_calls=(ToolCall("update_research_log", {"req": {"markdown": "hi"}}),)),
        Turn(text="All done, trust me."),
    ]
    result, _, _ = _run(tmp_path, standin, script)
    assert result.status == "no_model_tool_called" and not result.ok
