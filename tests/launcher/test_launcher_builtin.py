"""The built-in protocol agent: its pure readers, and the whole local flow against the real server.

The end-to-end test runs the protocol on the tiny (untrained) run: every step is recorded once, in
order; the claims it writes are exactly what the validation it cites allows; and the numbers of the
hypotheses are the ones validate_claim returned.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio
import pytest

from spd_mcp.common.events import read_events
from spd_mcp.launcher import cli
from spd_mcp.launcher.agents import builtin_read as rd
from spd_mcp.launcher.layout import InvestigationDir, read_json

QUESTION = "How does the model choose between he and she?"
PROMPTS = [{"text": "the king said that", "target_token": "he", "mechanism": "gendered_pronoun"},
           {"text": "the cat sat on the", "target_token": "mat", "mechanism": "copying"},
           {"text": "Paris is the capital of", "target_token": "France", "mechanism": "recall"}]

STEPS = ["model info", "behaviour", "predictions", "candidate circuits", "validation", "component readouts",
         "steering", "hypotheses", "graph artifact", "explanation"]


def test_mechanism_follows_the_question_words() -> None:
    prompts = [*PROMPTS, {"text": "the queen said that", "target_token": "she", "mechanism": "gendered_pronoun"}]

    async def call(tool: str, args: dict) -> dict:  # the server, as far as the choice needs it
        assert tool in ("list_probe_prompts", "run_prompt", "search_dataset"), tool
        raise RuntimeError(f"{tool} is not served here")

    def pick(question: str, rows: list[dict]) -> tuple[str | None, str]:
        return anyio.run(rd.pick_behaviour, call, question, rows)

    assert pick(QUESTION, prompts)[0] == "gendered_pronoun"
    assert pick("Which components recall the capital of a country?", prompts)[0] == "recall"
    assert pick("Where is the mat copied from?", prompts)[0] == "copying"
    mech, why = pick("What is going on in layer 3?", prompts)
    assert mech is None and why.startswith("neither its words nor its quoted examples")  # never the first
    assert pick(QUESTION, []) == (None, "the run has no probe prompts or behaviour descriptions")


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
    assert rd.clip("abcdef", 4) == "abc…" and rd.clip("abc", 4) == "abc"


def test_claims_need_necessity_and_follow_the_verdicts() -> None:
    v = {"necessity": "holds", "specificity": "holds", "sufficiency": "fails"}
    assert rd.claimable(v) == ["necessary", "specific"]
    assert rd.claimable({**v, "necessity": "inconclusive"}) == []  # idle components are specific, and say nothing
    assert rd.validation_score(v) > rd.validation_score({**v, "necessity": "fails"})


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
    steps = {e["step"]: e for e in events if e.get("kind") == "protocol_step" and e["step"] != "log"}
    assert list(steps) == STEPS, "every step is recorded once, in order"
    failed = {name: e["note"] for name, e in steps.items() if e["outcome"] != "ok"}
    assert set(failed) <= {"candidate circuits", "validation", "component readouts", "steering", "hypotheses",
                           "graph artifact", "explanation"}, failed
    assert all(failed.values()), "a failed step says why"
    outcome = read_json(inv.metadata)["outcome"]
    assert outcome["status"] == ("incomplete" if failed else "completed") and rc == (1 if failed else 0), printed

    log = inv.research_log.read_text()
    assert "No language model was used" in log and "The question is about 'gendered_pronoun'" in log
    server_calls = [e for e in events if e.get("kind") == "tool_call"]
    assert all(e["outcome"] == "ok" for e in server_calls), [e for e in server_calls if e["outcome"] != "ok"]
    hyps = {h["id"]: h for h in map(json.loads, (inv.root / "hypotheses.jsonl").read_text().splitlines())}
    gendered = [p for p in PROMPTS_OF_RUN() if p["mechanism"] == "gendered_pronoun"][:8]
    share = top1_share_by_torch(tiny_lm_run, gendered)
    assert hyps["h_behaviour"]["status"] == ("supported" if share >= 0.5 else "refuted")
    assert f"({share:.0%}; threshold 50%)" in hyps["h_behaviour"]["evidence"][0]
    if "validation" not in failed:
        # the hypotheses carry the verdicts of the validation they cite, and the explanation claims no more
        store = sqlite3.connect(inv.root / "store.sqlite")
        results = {vid: json.loads(data) for vid, data in store.execute("SELECT id, data FROM validations")}
        assert set(hyps) == {"h_behaviour", "h_necessary", "h_specific", "h_sufficient"}
        for hid, prop in (("h_necessary", "necessity"), ("h_specific", "specificity"), ("h_sufficient", "sufficiency")):
            vid = int(hyps[hid]["evidence"][0].split()[1].rstrip(":"))
            want = {"holds": "supported", "fails": "refuted", "inconclusive": "inconclusive"}[results[vid][prop]]
            assert hyps[hid]["status"] == want, (hid, results[vid][prop])
        (expl,) = [json.loads(x) for x in (inv.root / "explanations.jsonl").read_text().splitlines()]
        cited = results[expl["validation_ids"][0]]
        assert expl["status"] == ("supported" if cited["necessity"] == "holds" else expl["status"])
        assert cited["necessity"] == "holds" or expl["status"] in ("refuted", "inconclusive")
        summary = read_json(inv.summary)
        assert summary["status"] == ("completed" if cited["necessity"] == "holds" else "inconclusive")


def PROMPTS_OF_RUN() -> list[dict]:  # noqa: N802 - the tiny run's probe list, read where it is defined
    from tests.support.tiny_run import PROBES

    return PROBES


def test_a_question_no_behaviour_matches_ends_inconclusive_after_a_survey(tiny_lm_run: Path, tmp_path: Path,
                                                                          monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    runs = tmp_path / "runs"
    rc = cli.main(["How does the model do arithmetic?", "--agent", "builtin", "--executor", "local", "--run",
                   str(tiny_lm_run), "--out", str(runs), "--follow"])
    (inv_dir,) = runs.iterdir()
    inv = InvestigationDir(inv_dir)
    steps = [e["step"] for e in read_events(inv.events) if e.get("kind") == "protocol_step" and e["step"] != "log"]
    assert steps == ["model info", "behaviour", "survey"] and rc == 0
    summary = read_json(inv.summary)
    assert summary["status"] == "inconclusive" and "no behaviour that matches the question" in summary["summary"]
    assert not (inv.root / "explanations.jsonl").exists() and not (inv.root / "hypotheses.jsonl").exists()
