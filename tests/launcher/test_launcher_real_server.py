"""Both LLM back ends through the launcher's job body against the REAL spd server on a tiny run.

The model is the scripted Messages API (tests/support/fake_messages_api.py) with a dummy key: the
real `claude` binary (node_tools: skipped locally when absent, required in CI) must reach our tools
and nothing else; the Anthropic API agent runs a whole investigation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.fake_messages_api import FakeMessagesAPI, ToolCall, Turn

from spd_mcp.common.events import read_events
from spd_mcp.launcher.job import run_job
from spd_mcp.launcher.layout import InvestigationDir, read_json
from tests.launcher.launcher_support import make_spec

pytestmark = pytest.mark.slow
REAL_SERVER = None  # make_spec(server_argv=None): the launcher's own `python -m spd_mcp.server`
FORBIDDEN = [
    ToolCall("Bash", {"command": "touch PWNED_BASH", "description": "x"}),
    ToolCall("Read", {"file_path": "/etc/hostname"}),
    ToolCall("Write", {"file_path": "PWNED_WRITE", "content": "x"}),
    ToolCall("WebFetch", {"url": "http://127.0.0.1:9/", "prompt": "x"}),
    ToolCall("mcp__other__steal", {}),
]


def block_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, list):
        content = "\n".join(c.get("text", "") for c in content if isinstance(c, dict))
    return str(content).split("\n\n<system-reminder>")[0]


def top1_by_torch(run_dir: Path, text: str) -> str:
    """The second route: the target model's most likely next token, computed here."""
    import torch

    from spd_core.run import load_run

    run = load_run(run_dir)
    ids = run.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return run.tokenizer.convert_ids_to_tokens(int(run.model(ids).output[0, -1].argmax()))


def server_calls(inv: InvestigationDir) -> list[dict]:
    return [e for e in read_events(inv.events) if e.get("kind") == "tool_call"]


def test_real_claude_uses_our_tools_on_the_real_server_and_nothing_else(
    node_tools, tiny_lm_run: Path, tmp_path: Path, api_env
) -> None:
    ours = [
        ToolCall("mcp__spd__get_model_info", {}),
        ToolCall("mcp__spd__run_prompt", {"text": "the king said that", "top_k": 5}),
        ToolCall(
            "mcp__spd__update_research_log", {"heading": "plan", "markdown": "Checked predictions."}
        ),
    ]
    script = [
        *[Turn(tool_calls=(c,)) for c in ours],
        *[Turn(tool_calls=(c,)) for c in FORBIDDEN],
        Turn(
            tool_calls=(
                ToolCall(
                    "mcp__spd__set_investigation_summary",
                    {"title": "T", "summary": "S", "status": "completed"},
                ),
            )
        ),
        Turn(text="Done."),
    ]
    with FakeMessagesAPI(script) as api:
        api_env(api.url)
        spec = make_spec(
            tmp_path / "runs",
            agent="claude_code",
            claude_bin=str(node_tools.claude),
            server_argv=REAL_SERVER,
            run=str(tiny_lm_run),
            max_turns=20,
        )
        outcome = run_job(spec, "claude-real-server")
        results = api.tool_results()
        first = next(r for r in api.requests if r.consumed_turn == 0)
    assert outcome["ok"] and outcome["status"] == "completed", outcome
    inv = InvestigationDir(Path(spec.inv_dir))
    offered = {t["name"] for t in first.body["tools"]}
    assert {
        "mcp__spd__get_model_info",
        "mcp__spd__run_prompt",
        "mcp__spd__update_research_log",
    } <= offered
    assert all(name.startswith("mcp__spd__") for name in offered), (
        offered
    )  # no built-in tool offered
    assert len(results) == len(ours) + len(FORBIDDEN) + 1
    for call, block in zip(ours, results, strict=False):
        assert not block.get("is_error"), (call.name, block_text(block))
    info, prediction = json.loads(block_text(results[0])), json.loads(block_text(results[1]))
    assert [row["layer"] for row in info["layers"]] == ["0.mlp.gate", "0.mlp.up", "0.mlp.down"]
    assert prediction["predictions"][-1]["top"][0]["token"] == top1_by_torch(
        tiny_lm_run, "the king said that"
    )
    for call, block in zip(FORBIDDEN, results[len(ours) :], strict=False):
        assert block.get("is_error") and "No such tool available" in block_text(block), (
            call.name,
            block,
        )
    events = read_events(inv.events)
    blocked = sorted(e["tool_name"] for e in events if e.get("kind") == "tool_unavailable")
    assert blocked == sorted(c.name for c in FORBIDDEN) and outcome["denials"] == len(FORBIDDEN)
    calls = {(e["tool"], e["outcome"]) for e in server_calls(inv)}
    assert {
        ("get_model_info", "ok"),
        ("run_prompt", "ok"),
        ("update_research_log", "ok"),
        ("set_investigation_summary", "ok"),
    } <= calls
    assert not list(tmp_path.rglob("PWNED_*")) and not list((inv.root / "agent" / "cwd").iterdir())
    assert (
        "Checked predictions." in inv.research_log.read_text()
        and read_json(inv.summary)["title"] == "T"
    )


def test_anthropic_api_agent_investigates_on_the_real_server(
    tiny_lm_run: Path, tmp_path: Path, api_env
) -> None:
    script = [
        Turn(
            tool_calls=(
                ToolCall("get_model_info", {}),
                ToolCall("list_probe_prompts", {"mechanism": "gendered_pronoun"}),
            )
        ),
        Turn(tool_calls=(ToolCall("run_prompt", {"text": "the queen said that", "top_k": 5}),)),
        Turn(
            tool_calls=(
                ToolCall(
                    "record_hypothesis",
                    {
                        "hypothesis_id": "h1",
                        "statement": "The model says she.",
                        "status": "proposed",
                        "evidence": ["run_prompt"],
                    },
                ),
                ToolCall(
                    "save_explanation",
                    {
                        "subject_prompt": "the queen said that",
                        "behaviour": "predicts she",
                        "explanation": "scripted",
                        "components": [{"component": "0.mlp.up:1", "role": "r"}],
                        "confidence": "low",
                    },
                ),
            )
        ),
        Turn(
            tool_calls=(
                ToolCall("update_research_log", {"markdown": "Scripted investigation."}),
                ToolCall(
                    "set_investigation_summary",
                    {"title": "Queen", "summary": "Scripted.", "status": "completed"},
                ),
            )
        ),
        Turn(text="Done."),
    ]
    with FakeMessagesAPI(script) as api:
        api_env(api.url)
        spec = make_spec(tmp_path / "runs", server_argv=REAL_SERVER, run=str(tiny_lm_run))
        outcome = run_job(spec, "api-real-server")
        results = api.tool_results()
    assert outcome["ok"] and outcome["status"] == "completed" and outcome["turns"] == 5, outcome
    assert not any(r.get("is_error") for r in results), [
        block_text(r) for r in results if r.get("is_error")
    ]
    inv = InvestigationDir(Path(spec.inv_dir))
    probes = json.loads(block_text(results[1]))
    from tests.support.tiny_run import PROBES

    want = [p["target_token"] for p in PROBES if p["mechanism"] == "gendered_pronoun"]
    assert [p["target_token"] for p in probes["prompts"]] == want and want[:2] == ["he", "she"]
    top = json.loads(block_text(results[2]))["predictions"][-1]["top"][0]["token"]
    assert top == top1_by_torch(tiny_lm_run, "the queen said that")
    assert [
        json.loads(line)["id"] for line in (inv.root / "hypotheses.jsonl").read_text().splitlines()
    ] == ["h1"]
    assert (
        json.loads((inv.root / "explanations.jsonl").read_text())["components"][0]["component"]
        == "0.mlp.up:1"
    )
    assert read_json(inv.summary) | {"updated_at": None} == {
        "title": "Queen",
        "summary": "Scripted.",
        "status": "completed",
        "updated_at": None,
    }
    assert len(server_calls(inv)) == 8 and all(e["outcome"] == "ok" for e in server_calls(inv))
