"""The built-in protocol agent: its pure readers, and the whole local flow against the real server.

The end-to-end test reads which tools the server offered (the `server_ready` event) and expects each
protocol step to succeed exactly when the tools it needs are there; the others must be recorded as
honest failures. When the component, circuit and intervention tools land, the same test demands
that their steps succeed (and the artifact and explanation exist), with no edit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spd_mcp.launcher import cli
from spd_mcp.launcher.agents import builtin_read as rd
from spd_mcp.launcher.events import read_events
from spd_mcp.launcher.layout import InvestigationDir, read_json

QUESTION = "How does the model choose between he and she?"
PROMPTS = [{"text": "the king said that", "target_token": "he", "mechanism": "gendered_pronoun"},
           {"text": "the cat sat on the", "target_token": "mat", "mechanism": "copying"},
           {"text": "Paris is the capital of", "target_token": "France", "mechanism": "recall"}]

# Each protocol step and the alternatives of tool sets it needs (any one set suffices).
STEP_NEEDS: dict[str, list[set[str]]] = {
    "model info": [{"get_model_info"}],
    "probe prompts": [{"list_probe_prompts"}],
    "predictions": [{"run_prompt"}],
    "causal importance": [{"get_ci"}],
    "optimized circuit": [{"optimize_circuit"}],
    "ablation": [{"ablate", "optimize_circuit"}, {"ablate", "get_ci"}],
    "steering": [{"steer", "optimize_circuit"}, {"steer", "get_ci"}],
    "hypotheses": [{"record_hypothesis"}],
    "graph artifact": [{"save_graph_artifact", "optimize_circuit"}],
    "explanation": [{"save_explanation", "optimize_circuit"}, {"save_explanation", "get_ci"}],
}


def test_mechanism_follows_the_question_words() -> None:
    assert rd.choose_mechanism(QUESTION, PROMPTS)[0] == "gendered_pronoun"
    assert rd.choose_mechanism("Which components recall the capital of a country?", PROMPTS)[0] == "recall"
    assert rd.choose_mechanism("Where is the mat copied from?", PROMPTS)[0] == "copying"
    mech, why = rd.choose_mechanism("What is going on in layer 3?", PROMPTS)
    assert mech == "gendered_pronoun" and "no mechanism tag matches" in why and "first one" in why
    assert rd.choose_mechanism(QUESTION, []) == (None, "the run ships no probe prompts")


def test_readers_take_what_is_there_and_say_none_otherwise() -> None:
    ci = {"entries": [{"node": "0.mlp.up:3:1", "component": "0.mlp.up:1", "ci": 0.4},
                      {"node": "0.mlp.up:2:1", "ci": 0.9}, {"node": "0.mlp.down:3:2", "ci": 0.7}]}
    assert rd.components_from_ci(ci) == ["0.mlp.up:1", "0.mlp.down:2"]
    circuit = {"graph_id": 4, "nodes": [{"key": "embed:0:5", "layer": "embed"}, {"key": "0.mlp.up:3:1",
                                                                                 "layer": "0.mlp.up"}]}
    assert rd.circuit_components(circuit) == ["0.mlp.up:1"] and rd.graph_id_of(circuit) == 4
    assert rd.graph_id_of({"graph_id": True}) is None
    ablate = {"regimes": {"deterministic": {"token_prob_before": 0.8, "token_prob_after": 0.1, "kl": 1.5}}}
    assert rd.probability_change(ablate) == (0.8, 0.1, 1.5)
    assert rd.probability_change({"summary": "nothing numeric"}) == (None, None, None)
    top = rd.top_tokens({"predictions": [{"top": [{"token": "Ġhe", "prob": 0.6}, {"token": "she", "prob": 0.3}]}]})
    assert rd.prob_of(top, "he") == 0.6 and rd.prob_of(top, "it") is None
    assert rd.steering_text({"baseline": ["he went"], "steered": [{"text": "she went"}]}) == ("he went", "she went")


def expected_ok(step: str, offered: set[str]) -> bool:
    return any(need <= offered for need in STEP_NEEDS[step])


def empty_circuit(event: dict) -> bool:
    """The tiny run is untrained: its prediction may need no component at all, and an honest
    optimize_circuit then returns an empty circuit, which the protocol records as not done."""
    return event["step"] == "optimized circuit" and "A circuit of 0 nodes" in event["note"]


def top1_share_by_torch(run_dir: Path, prompts: list[dict]) -> float:
    """The second route: the share of prompts whose expected token is the target model's argmax."""
    import torch

    from spd_core.run import load_run

    run = load_run(run_dir)
    hits = 0
    for p in prompts:
        ids = run.tokenizer(p["text"], return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = run.model(ids).output
        hits += run.tokenizer.convert_ids_to_tokens(int(logits[0, -1].argmax())) == p["target_token"]
    return hits / len(prompts)


@pytest.mark.slow
def test_builtin_investigation_through_the_cli_on_the_real_server(tiny_lm_run: Path, tmp_path: Path,
                                                                    capsys, monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    runs = tmp_path / "runs"
    rc = cli.main([QUESTION, "--agent", "builtin", "--executor", "local", "--run", str(tiny_lm_run),
                   "--out", str(runs), "--follow"])
    printed = capsys.readouterr().out
    assert "agent: builtin (requested)" in printed
    (inv_dir,) = runs.iterdir()
    inv = InvestigationDir(inv_dir)
    events = read_events(inv.events)
    offered = set(next(e for e in events if e.get("kind") == "server_ready")["tools"])
    steps = {e["step"]: e for e in events if e.get("kind") == "protocol_step" and e["step"] != "log"}
    assert list(steps) == list(STEP_NEEDS), "every step is recorded once, in order"
    for name, event in steps.items():
        assert (event["outcome"] == "ok") == (expected_ok(name, offered) and not empty_circuit(event)), (name, event)
        if event["outcome"] == "failed":
            assert event["note"], f"a failed step must say why: {event}"
    missing = [s for s in STEP_NEEDS if not expected_ok(s, offered) or empty_circuit(steps[s])]
    outcome = read_json(inv.metadata)["outcome"]
    assert outcome["status"] == ("incomplete" if missing else "completed"), outcome
    assert rc == (1 if missing else 0), printed

    log = inv.research_log.read_text()
    assert "No language model was used" in log and log.count("## ") >= len(STEP_NEEDS)
    assert "mechanism 'gendered_pronoun' matches" in log and "`the king said that` -> `he`" in log
    for name in missing:
        assert f"{name}: not done" in log
    summary = read_json(inv.summary)
    assert summary["status"] == ("inconclusive" if missing else "completed")
    assert all(f"{name} (" in summary["summary"] for name in missing) and "NOT done" in summary["summary"] \
        if missing else "NOT done" not in summary["summary"]
    server_calls = [e for e in events if e.get("type") == "tool_call"]
    assert {e["tool"] for e in server_calls} >= {"get_model_info", "list_probe_prompts", "run_prompt",
                                                  "update_research_log", "record_hypothesis",
                                                  "set_investigation_summary"}
    assert all(e["outcome"] == "ok" for e in server_calls), [e for e in server_calls if e["outcome"] != "ok"]

    hyps = {h["id"]: h for h in map(json.loads, (inv.root / "hypotheses.jsonl").read_text().splitlines())}
    assert set(hyps) == {"h_behaviour", "h_necessary", "h_sufficient"}
    gendered = [{"text": "the king said that", "target_token": "he"},
                {"text": "the queen said that", "target_token": "she"}]
    share = top1_share_by_torch(tiny_lm_run, gendered)
    assert hyps["h_behaviour"]["status"] == ("supported" if share >= 0.5 else "refuted")
    assert f"({share:.0%}; threshold 50%)" in hyps["h_behaviour"]["evidence"][0]
    if "ablate" not in offered:
        assert hyps["h_necessary"]["status"] == hyps["h_sufficient"]["status"] == "inconclusive"
    if expected_ok("graph artifact", offered):
        assert list((inv.root / "artifacts").glob("*.svg"))
    assert (inv.root / "explanations.jsonl").exists() == expected_ok("explanation", offered)
