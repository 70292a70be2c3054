"""The real Claude Code CLI, locked down, against the stand-in server and the scripted fake API.

Skipped when no claude binary is found ($SPD_CLAUDE_BIN, PATH, or .tools/node_modules/.bin/claude).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.fake_messages_api import FakeMessagesAPI, ToolCall, Turn

from spd_mcp.common.events import read_events
from spd_mcp.launcher.detect import claude_auth, find_claude
from spd_mcp.launcher.job import run_job
from spd_mcp.launcher.layout import InvestigationDir, read_json
from tests.launcher.launcher_support import make_spec

CLAUDE = find_claude()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CLAUDE is None, reason="claude CLI not installed (see tests/support/node_tools.py)"
    ),
]

FORBIDDEN = [
    ToolCall("Bash", {"command": "touch PWNED_BASH", "description": "x"}),
    ToolCall("Read", {"file_path": "/etc/hostname"}),
    ToolCall("Write", {"file_path": "PWNED_WRITE", "content": "x"}),
    ToolCall("WebFetch", {"url": "http://127.0.0.1:9/", "prompt": "x"}),
    ToolCall("mcp__other__steal", {}),
]


def test_auth_probe_uses_the_lockdown_environment(api_env, monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("CLAUDE_CODE_OAUTH_TOKEN", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    ok, note = claude_auth(CLAUDE)
    assert not ok and "not authenticated" in note
    api_env("http://127.0.0.1:9")
    ok, note = claude_auth(CLAUDE)
    assert ok and "ANTHROPIC_API_KEY" in note


def test_locked_down_claude_calls_our_tools_and_nothing_else(tmp_path: Path, api_env) -> None:
    script = [
        Turn(
            tool_calls=(ToolCall("mcp__spd__update_research_log", {"req": {"markdown": "Plan."}}),)
        ),
        Turn(tool_calls=(ToolCall("mcp__spd__run_prompt", {"text": "so she said"}),)),
        *[Turn(tool_calls=(c,)) for c in FORBIDDEN],
        Turn(
            tool_calls=(
                ToolCall(
                    "mcp__spd__set_investigation_summary",
                    {"req": {"title": "T", "summary": "S", "status": "completed"}},
                ),
            )
        ),
        Turn(text="Done."),
    ]
    with FakeMessagesAPI(script) as api:
        api_env(api.url)
        spec = make_spec(tmp_path / "runs", agent="claude_code", claude_bin=CLAUDE, max_turns=20)
        outcome = run_job(spec, "claude-1")
        results = api.tool_results()
        first = next(r for r in api.requests if r.consumed_turn == 0)
    assert outcome["ok"] and outcome["status"] == "completed", outcome
    inv = InvestigationDir(Path(spec.inv_dir))
    assert sorted(t["name"] for t in first.body["tools"]) == sorted(
        f"mcp__spd__{t}"
        for t in (
            "get_model_info",
            "run_prompt",
            "set_investigation_summary",
            "update_research_log",
        )
    )
    assert first.headers.get("x-api-key") == "sk-ant-dummy"
    system = json.dumps(first.body.get("system"))
    assert (
        "You are investigating a neural network" in system and "choose between he and she" in system
    )
    assert json.loads(results[1]["content"].split("\n\n<system-reminder>")[0])["top_tokens"] == [
        "ehs",
        "dias",
    ]
    events = read_events(inv.events)
    blocked = sorted(e["tool_name"] for e in events if e["kind"] == "tool_unavailable")
    assert blocked == sorted(c.name for c in FORBIDDEN)
    assert outcome["denials"] == len(FORBIDDEN)
    assert not list((inv.root / "agent" / "cwd").iterdir()), (
        "nothing may be written in the agent's cwd"
    )
    assert not list(tmp_path.rglob("PWNED_*"))
    assert read_json(inv.summary)["title"] == "T" and "Plan." in inv.research_log.read_text()
    init = json.loads(inv.transcript.read_text().splitlines()[0])
    assert init["subtype"] == "init" and init["mcp_servers"] == [
        {"name": "spd", "status": "connected", "source": "dynamic"}
    ]
