"""Claims read from task directories, re-test scores by hand, ranking, agreements and
contradictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spd_mcp.contract.model import ProbeRow
from spd_mcp.launcher.retest import Retest, choose_prompts, score
from spd_mcp.launcher.swarm_claims import Claim, TaskRecord, claims_of, components_in
from spd_mcp.launcher.swarm_report import build_summary, jaccard, render_report

SUBJECT = "tom rested behind the wild library so"


def _task(
    tmp: Path, index: int, comps: list[str], nec: str, suf: str, ok: bool = True
) -> TaskRecord:
    d = tmp / f"inv-t{index:02d}"
    d.mkdir()
    joined = ", ".join(comps)
    hyps = [
        {
            "id": "h_necessary",
            "statement": f"Removing {{{joined}}} lowers p(he)",
            "status": "inconclusive",
        },
        {"id": "h_necessary", "statement": f"Removing {{{joined}}} lowers p(he)", "status": nec},
        {
            "id": "h_sufficient",
            "statement": f"Keeping only {{{joined}}} keeps p(he)",
            "status": suf,
        },
        {"id": "h_other", "statement": "Removing {9.mlp.up:1} does something", "status": "refuted"},
    ]
    (d / "hypotheses.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hyps))
    expl = {
        "subject_prompt": SUBJECT,
        "behaviour": "predicts 'he'",
        "confidence": "low",
        "components": [{"component": c, "role": "r"} for c in comps],
    }
    (d / "explanations.jsonl").write_text(json.dumps(expl) + "\n")
    return TaskRecord(
        index=index,
        inv_id=d.name,
        inv_dir=str(d),
        strategy=f"s{index}",
        hypothesis=None,
        status="completed" if ok else "failed",
        ok=ok,
        job_id=str(index),
        error=None if ok else "RuntimeError: server exited with code 3\ninjected failure",
    )


def test_component_keys_are_found_but_node_keys_are_not() -> None:
    text = "Removing {0.mlp.gate:11, 1.attn.o:3} and node 0.mlp.up:34:9 (p 0.5:1)"
    assert components_in(text) == {"0.mlp.gate:11", "1.attn.o:3"}


def test_claims_take_the_latest_verdict_on_the_same_components(tmp_path: Path) -> None:
    task = _task(tmp_path, 0, ["0.mlp.gate:11", "1.mlp.down:12"], "supported", "refuted")
    (claim,) = claims_of(task)
    assert (
        claim.components == ("0.mlp.gate:11", "1.mlp.down:12") and claim.subject_prompt == SUBJECT
    )
    assert claim.agent_verdicts == {"necessary": "supported", "sufficient": "refuted"}
    assert claim.claim_id == "t00.e0"


def test_scores_by_hand() -> None:
    ms = [
        {"mode": "remove", "regime": "deterministic", "p_before": 0.8, "p_after": 0.2},
        {"mode": "remove", "regime": "deterministic", "p_before": 0.5, "p_after": 0.5},
        {"mode": "remove", "regime": "stochastic", "p_before": 0.8, "p_after": 0.4},
        {"mode": "keep_only", "regime": "deterministic", "p_before": 0.8, "p_after": 0.9},
        {"mode": "keep_only", "regime": "stochastic", "p_before": 0.8, "p_after": 0.2},
    ]
    scores, verdicts = score(ms)
    assert scores["necessity_deterministic"] == pytest.approx((0.75 + 0.0) / 2)
    assert scores["necessity_stochastic"] == pytest.approx(0.5)
    assert scores["sufficiency_deterministic"] == pytest.approx(1.0)  # capped at 1
    assert scores["sufficiency_stochastic"] == pytest.approx(0.25)
    assert scores["verified_effect"] == pytest.approx((0.375 + 0.5 + 1.0 + 0.25) / 4)
    assert verdicts == {"necessary": "refuted", "sufficient": "refuted"}
    assert score([])[1] == {"necessary": "not measured", "sufficient": "not measured"}


def test_retest_prompts_are_the_subject_then_its_mechanism() -> None:
    rows = [("a", "m1"), (SUBJECT, "m2"), ("b", "m2"), ("c", "m1"), ("d", "m2")]
    probes = [
        ProbeRow(index=i, text=text, target_token="x", mechanism=mech, position=None, foil=None)
        for i, (text, mech) in enumerate(rows)
    ]
    claim = Claim("t00.e0", 0, "inv", ("0.mlp.up:1",), SUBJECT, "predicts 'he'", "low")
    mech, prompts = choose_prompts(claim, probes)
    assert mech == "m2" and [p.text for p in prompts] == [SUBJECT, "b", "d"]


def _retest(cid: str, nec: float, suf: float) -> Retest:
    scores = {
        "necessity_deterministic": nec,
        "necessity_stochastic": nec,
        "sufficiency_deterministic": suf,
        "sufficiency_stochastic": suf,
        "verified_effect": (nec + suf) / 2,
    }
    verdicts = {
        "necessary": "supported" if nec >= 0.5 else "refuted",
        "sufficient": "supported" if suf >= 0.5 else "refuted",
    }
    return Retest(cid, "pronoun_gender", "he", scores=scores, verdicts=verdicts)


def test_summary_ranks_by_the_measured_effect_and_pairs_verdicts(tmp_path: Path) -> None:
    tasks = [
        _task(tmp_path, 0, ["0.mlp.up:1", "0.mlp.up:2"], "supported", "supported"),
        _task(tmp_path, 1, ["0.mlp.up:1"], "supported", "refuted"),
        _task(tmp_path, 2, ["1.mlp.up:5"], "refuted", "refuted", ok=False),
    ]
    claims = [c for t in tasks[:2] for c in claims_of(t)]
    retests = {"t00.e0": _retest("t00.e0", 0.9, 0.2), "t01.e0": _retest("t01.e0", 0.95, 0.6)}
    s = build_summary(
        head={
            "swarm_id": "swarm-x",
            "question": "q?",
            "run": "demo",
            "agent": "builtin",
            "executor": "local",
            "source": "swarm 3",
            "generated": "now",
        },
        tasks=tasks,
        claims=claims,
        retests=retests,
        grades={},
        grader_note="not run",
        tool_calls={"file": "aggregate/tool_calls.jsonl", "count": 0, "by_tool": {}},
    )
    assert [c["claim_id"] for c in s["claims"]] == ["t01.e0", "t00.e0"] and s["claims"][0][
        "rank"
    ] == 1
    assert s["claims"][1]["reproduced"] == {"necessary": True, "sufficient": False}
    assert [(a["property"], a["agent_verdicts"]) for a in s["agreements"]] == [
        ("necessary", ["supported", "supported"])
    ]
    (c,) = s["contradictions"]
    assert c["property"] == "sufficient" and c["retest_verdicts"] == ["supported", "refuted"]
    assert c["component_overlap"] == pytest.approx(
        jaccard(("0.mlp.up:1",), ("0.mlp.up:1", "0.mlp.up:2"))
    )
    assert [t["index"] for t in s["failed_tasks"]] == [2] and s["n_ok"] == 2
    md = render_report(s)
    assert "| 1 | t01.e0 |" in md and "**0.775**" in md and "**0.550**" in md
    assert "t02 `inv-t02` (s2): status failed; error: RuntimeError: server exited with code 3" in md
    assert "injected failure" in md and "t00.e0 (sufficient)" in md


def test_a_swarm_whose_tasks_all_failed_still_reports_why(tmp_path: Path) -> None:
    tasks = [
        _task(tmp_path, i, ["0.mlp.up:1"], "supported", "supported", ok=False) for i in range(2)
    ]
    s = build_summary(
        head={
            "swarm_id": "swarm-y",
            "question": "q?",
            "run": "demo",
            "agent": "builtin",
            "executor": "slurm",
            "source": "swarm 2",
            "generated": "now",
        },
        tasks=tasks,
        claims=[],
        retests={},
        grades={},
        grader_note="not run",
        tool_calls={"file": "aggregate/tool_calls.jsonl", "count": 0, "by_tool": {}},
    )
    assert s["n_ok"] == 0 and len(s["failed_tasks"]) == 2 and s["claims"] == []
    md = render_report(s)
    assert "0 finished, 2 failed" in md and "No task saved an explanation" in md
    assert md.count("status failed; error: RuntimeError") == 2
