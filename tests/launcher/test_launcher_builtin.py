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
from spd_mcp.contract.circuits import CircuitResult, SharedCircuitResult
from spd_mcp.contract.components import CIResult
from spd_mcp.contract.interventions import SteerResultWire
from spd_mcp.contract.model import RunPromptResult
from spd_mcp.contract.validation import ValidationResult
from spd_mcp.launcher import cli
from spd_mcp.launcher.agents import builtin_read as rd
from spd_mcp.launcher.layout import InvestigationDir, read_json

QUESTION = "How does the model choose between he and she?"
PROMPTS = [
    {"text": "the king said that", "target_token": "he", "mechanism": "gendered_pronoun"},
    {"text": "the cat sat on the", "target_token": "mat", "mechanism": "copying"},
    {"text": "Paris is the capital of", "target_token": "France", "mechanism": "recall"},
]

STEPS = [
    "model info",
    "behaviour",
    "predictions",
    "candidate circuits",
    "validation",
    "specific set",
    "component readouts",
    "steering",
    "hypotheses",
    "graph artifact",
    "explanation",
]


def test_mechanism_follows_the_question_words() -> None:
    prompts = [
        *PROMPTS,
        {"text": "the queen said that", "target_token": "she", "mechanism": "gendered_pronoun"},
    ]

    async def call(tool: str, args: dict) -> dict:  # the server, as far as the choice needs it
        assert tool in ("list_probe_prompts", "run_prompt", "search_dataset"), tool
        raise RuntimeError(f"{tool} is not served here")

    def pick(question: str, rows: list[dict]) -> tuple[str | None, str]:
        return anyio.run(rd.pick_behaviour, call, question, rows)

    assert pick(QUESTION, prompts)[0] == "gendered_pronoun"
    assert pick("Which components recall the capital of a country?", prompts)[0] == "recall"
    assert pick("Where is the mat copied from?", prompts)[0] == "copying"
    mech, why = pick("What is going on in layer 3?", prompts)
    assert mech is None and why.startswith(
        "neither its words nor its quoted examples"
    )  # never the first
    assert pick(QUESTION, []) == (None, "the run has no probe prompts or behaviour descriptions")


def test_readers_read_the_contract_models() -> None:
    def entry(node: str, ci: float) -> dict:
        return {
            "node": node,
            "component": rd.component_of_node(node),
            "position": 0,
            "token": "a",
            "ci": ci,
            "inner_act": 1.0,
        }

    ci = CIResult.model_validate(
        {
            "summary": "",
            "tokens": ["a"],
            "token_ids": [1],
            "positions": [0],
            "l0": {},
            "total": 3,
            "offset": 0,
            "limit": 60,
            "entries": [
                entry("0.mlp.up:3:1", 0.4),
                entry("0.mlp.up:2:1", 0.9),
                entry("0.mlp.down:3:2", 0.7),
            ],
        }
    )
    assert rd.components_from_ci(ci) == ["0.mlp.up:1", "0.mlp.down:2"]
    circuit = CircuitResult.model_validate(
        {
            "summary": "",
            "graph_id": 4,
            "target_token": "he",
            "target_token_id": 3,
            "position": 3,
            "total": 2,
            "limit": 100,
            "nodes": [
                {"node": "0.mlp.up:3:1", "token": "x", "ci": 0.9},
                {"node": "0.mlp.up:1:1", "token": "y", "ci": 0.5},
            ],
            "l0": {"0.mlp.up": 2},
            "probs": {},
            "loss": LOSS,
        }
    )
    assert rd.circuit_components(circuit) == ["0.mlp.up:1"]
    shared = SharedCircuitResult.model_validate(
        {
            "summary": "",
            "circuit_id": 1,
            "mechanism": None,
            "mask": "stochastic",
            "n_prompts": 2,
            "n_candidates": 9,
            "total": 2,
            "limit": 100,
            "components": [
                {"component": "1.attn.o:5", "gate": 0.9},
                {"component": "0.mlp.up:1", "gate": 0.4},
            ],
            "l0": {},
            "regimes": {},
            "full": {},
            "heldout": None,
            "validation": None,
            "loss": LOSS,
        }
    )
    assert rd.circuit_components(shared) == ["1.attn.o:5", "0.mlp.up:1"]
    run = RunPromptResult.model_validate(
        {
            "summary": "",
            "prompt_id": 1,
            "tokens": ["a"],
            "token_ids": [1],
            "next_token_probs": [None],
            "outputs": None,
            "top_outputs": None,
            "predictions": [
                {
                    "position": 0,
                    "token": "a",
                    "top": [
                        {"token": "Ġhe", "token_id": 5, "prob": 0.6},
                        {"token": "she", "token_id": 6, "prob": 0.3},
                    ],
                }
            ],
        }
    )
    top = rd.top_tokens(run)
    assert rd.prob_of(top, "he") == 0.6 and rd.prob_of(top, "it") is None
    steer = SteerResultWire.model_validate(
        {
            "summary": "",
            "baseline": [{"text": "he went", "token_ids": [1]}],
            "steered": [{"text": "she went", "token_ids": [2]}],
            "baseline_top": [],
            "steered_top": [],
            "logit_changes": [],
        }
    )
    assert rd.steering_text(steer) == ("he went", "she went")
    assert rd.clip("abcdef", 4) == "abc…" and rd.clip("abc", 4) == "abc"


LOSS = {"first": 1.0, "final": 0.5, "min": 0.5, "steps": 10, "converged": True, "trace": [1.0, 0.5]}


def validation(
    necessity: str, specificity: str, sufficiency: str, det_necessity: float
) -> ValidationResult:
    span = {"mean": det_necessity, "low": det_necessity - 0.1, "high": det_necessity + 0.1, "n": 40}
    regime = {
        "regime": "deterministic",
        "necessity": span,
        "broken": 0.5,
        "sufficiency": None,
        "accuracy_kept": None,
        "leak": None,
        "distinct_answers_kept": 1,
        "specificity": None,
    }
    return ValidationResult.model_validate(
        {
            "summary": "",
            "validation_id": 3,
            "components": ["0.mlp.up:1"],
            "behaviour": "m",
            "necessity": necessity,
            "sufficiency": sufficiency,
            "specificity": specificity,
            "sufficient_alone": None,
            "robust_to_adversary": None,
            "bars": {"necessity": 0.5},
            "n_examples": 40,
            "n_dropped": 0,
            "n_controls": 45,
            "baseline": 0.5,
            "regimes": [regime],
            "examples": [],
            "notes": [],
        }
    )


def test_claims_need_necessity_and_follow_the_verdicts() -> None:
    v = validation("holds", "holds", "fails", 0.8)
    assert rd.claimable(v) == ["necessary", "specific"]
    assert (
        rd.claimable(validation("inconclusive", "holds", "fails", 0.8)) == []
    )  # idle components are specific
    assert rd.validation_score(v) > rd.validation_score(validation("fails", "holds", "fails", 0.8))
    assert rd.validation_score(v) > rd.validation_score(validation("holds", "holds", "fails", 0.6))
    assert "| deterministic | 0.80 [0.70, 0.90] | n/a | n/a |" in rd.validation_table(v)
    assert rd.limitations(v, ["necessary"])[0] == "sufficiency was not shown (fails)"


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
        hits += (
            run.tokenizer.convert_ids_to_tokens(int(logits[0, -1].argmax())) == p["target_token"]
        )
    return hits / len(prompts)


@pytest.mark.slow
def test_builtin_investigation_through_the_cli_on_the_real_server(
    tiny_lm_run: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    runs = tmp_path / "runs"
    rc = cli.main(
        [
            QUESTION,
            "--agent",
            "builtin",
            "--executor",
            "local",
            "--run",
            str(tiny_lm_run),
            "--out",
            str(runs),
            "--follow",
        ]
    )
    printed = capsys.readouterr().out
    assert "agent: builtin (requested)" in printed
    (inv_dir,) = runs.iterdir()
    inv = InvestigationDir(inv_dir)
    events = read_events(inv.events)
    steps = {
        e["step"]: e for e in events if e.get("kind") == "protocol_step" and e["step"] != "log"
    }
    assert list(steps) == STEPS, "every step is recorded once, in order"
    failed = {name: e["note"] for name, e in steps.items() if e["outcome"] != "ok"}
    assert set(failed) <= {
        "candidate circuits",
        "validation",
        "specific set",
        "component readouts",
        "steering",
        "hypotheses",
        "graph artifact",
        "explanation",
    }, failed
    assert all(failed.values()), "a failed step says why"
    outcome = read_json(inv.metadata)["outcome"]
    assert outcome["status"] == ("incomplete" if failed else "completed") and rc == (
        1 if failed else 0
    ), printed

    log = inv.research_log.read_text()
    assert "No language model was used" in log and "The question is about 'gendered_pronoun'" in log
    server_calls = [e for e in events if e.get("kind") == "tool_call"]
    assert all(e["outcome"] == "ok" for e in server_calls), [
        e for e in server_calls if e["outcome"] != "ok"
    ]
    hyps = {
        h["id"]: h
        for h in map(json.loads, (inv.root / "hypotheses.jsonl").read_text().splitlines())
    }
    gendered = [p for p in PROMPTS_OF_RUN() if p["mechanism"] == "gendered_pronoun"][:8]
    share = top1_share_by_torch(tiny_lm_run, gendered)
    assert hyps["h_behaviour"]["status"] == ("supported" if share >= 0.5 else "refuted")
    assert f"({share:.0%}; threshold 50%)" in hyps["h_behaviour"]["evidence"][0]
    if "validation" not in failed:
        # the hypotheses carry the verdicts of the validation they cite, and the explanation claims
        # no more
        store = sqlite3.connect(inv.root / "store.sqlite")
        results = {
            vid: json.loads(data) for vid, data in store.execute("SELECT id, data FROM validations")
        }
        assert set(hyps) == {"h_behaviour", "h_necessary", "h_specific", "h_sufficient"}
        for hid, prop in (
            ("h_necessary", "necessity"),
            ("h_specific", "specificity"),
            ("h_sufficient", "sufficiency"),
        ):
            vid = int(hyps[hid]["evidence"][0].split()[1].rstrip(":"))
            want = {"holds": "supported", "fails": "refuted", "inconclusive": "inconclusive"}[
                results[vid][prop]
            ]
            assert hyps[hid]["status"] == want, (hid, results[vid][prop])
        (expl,) = [
            json.loads(x) for x in (inv.root / "explanations.jsonl").read_text().splitlines()
        ]
        cited = results[expl["validation_ids"][0]]
        assert expl["status"] == ("supported" if cited["necessity"] == "holds" else expl["status"])
        assert cited["necessity"] == "holds" or expl["status"] in ("refuted", "inconclusive")
        summary = read_json(inv.summary)
        assert summary["status"] == (
            "completed" if cited["necessity"] == "holds" else "inconclusive"
        )


def PROMPTS_OF_RUN() -> list[dict]:  # noqa: N802 - the tiny run's probe list, read where it is defined
    from tests.support.tiny_run import PROBES

    return PROBES


def test_a_question_no_behaviour_matches_ends_inconclusive_after_a_survey(
    tiny_lm_run: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    runs = tmp_path / "runs"
    rc = cli.main(
        [
            "How does the model do arithmetic?",
            "--agent",
            "builtin",
            "--executor",
            "local",
            "--run",
            str(tiny_lm_run),
            "--out",
            str(runs),
            "--follow",
        ]
    )
    (inv_dir,) = runs.iterdir()
    inv = InvestigationDir(inv_dir)
    steps = [
        e["step"]
        for e in read_events(inv.events)
        if e.get("kind") == "protocol_step" and e["step"] != "log"
    ]
    assert steps == ["model info", "behaviour", "survey"] and rc == 0
    summary = read_json(inv.summary)
    assert (
        summary["status"] == "inconclusive"
        and "no behaviour that matches the question" in summary["summary"]
    )
    assert (
        not (inv.root / "explanations.jsonl").exists()
        and not (inv.root / "hypotheses.jsonl").exists()
    )


def two_regimes(nec: str, spec: str, nec_low: float, spec_low: float) -> ValidationResult:
    """A validation whose deterministic and stochastic spans start at ``nec_low`` / ``spec_low``
    (means 0.1 above)."""
    v = validation(nec, spec, "inconclusive", 0.8).model_dump()

    def at(low: float) -> dict:
        return {"mean": low + 0.1, "low": low, "high": low + 0.2, "n": 40}

    v["bars"] = {"necessity": 0.5, "specificity": 0.8, "sufficiency": 0.5}
    v["regimes"] = [
        {**v["regimes"][0], "regime": r, "necessity": at(nec_low), "specificity": at(spec_low)}
        for r in ("deterministic", "stochastic")
    ]
    return ValidationResult.model_validate(v)


def test_the_specific_set_step_runs_only_without_one_and_leaves_probes_to_validate_on() -> None:
    from spd_mcp.contract.model import ProbeRow
    from spd_mcp.launcher.agents.builtin import Candidate, validated
    from spd_mcp.launcher.agents.builtin_prune import (
        POOL_EXAMPLES,
        necessary_and_specific,
        pool_sizes,
    )

    near = Candidate("near", ["x", "y"], validation=two_regimes("holds", "inconclusive", 0.9, 0.7))
    far = Candidate("far", ["x"], validation=two_regimes("holds", "fails", 0.9, 0.4))
    idle = Candidate("idle", ["z"], validation=two_regimes("fails", "holds", 0.1, 0.9))
    done = Candidate("done", ["x"], validation=two_regimes("holds", "holds", 0.9, 0.9))
    assert necessary_and_specific([far, near, idle]) is None  # the step runs
    assert necessary_and_specific([far, done, idle]) is done  # not needed
    # candidates rank by how near specificity is when the same properties hold
    assert rd.validation_score(validated(near)) > rd.validation_score(validated(far))
    assert rd.validation_score(validated(done)) > rd.validation_score(validated(near))

    def rows(counts: dict[str, int]) -> list[ProbeRow]:
        return [
            ProbeRow(
                index=i, text=f"{m} {i}", target_token="x", mechanism=m, position=None, foil=None
            )
            for m, n in counts.items()
            for i in range(n)
        ]

    # the demo's 200 probes per behaviour: the full pool (100, and 150 of the others); a small run:
    # what validation leaves
    assert pool_sizes(rows({"a": 200, "b": 200, "c": 200}), "a", 40, 45) == POOL_EXAMPLES
    assert pool_sizes(rows({"a": 60, "b": 60}), "a", 40, 45) == 10
    assert pool_sizes(rows({"a": 30, "b": 30}), "a", 40, 45) == 2
