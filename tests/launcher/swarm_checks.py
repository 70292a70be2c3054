"""Checks shared by the local and SLURM swarm tests: the report's numbers are the aggregation's
own."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from spd_mcp.common.events import read_events
from spd_mcp.launcher.swarm import SwarmDir
from spd_mcp.server.events import summarize_args


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if path.exists()
        else []
    )


def _mean(xs: list[float]) -> float:
    assert xs, "no measurement"
    return sum(xs) / len(xs)


def check_numbers_are_measured(sd: SwarmDir) -> dict[str, Any]:
    """Every number of every claim in swarm_summary.json is read from, or computed from, a recorded
    tool result; the server's own event log shows the same calls; none of the scores appear in the
    agents' text."""
    summary = json.loads(sd.summary.read_text())
    calls = {c["call"]: c for c in _jsonl(sd.tool_calls)}
    assert summary["tool_calls"]["count"] == len(calls) > 0
    assert summary["claims"], "no claim was re-tested"
    for claim in summary["claims"]:
        assert claim["retest_error"] is None, claim["retest_error"]
        assert claim["measurements"] and len(claim["prompts"]) > 1, (
            "each claim is re-tested on several prompts"
        )
        for m in claim["measurements"]:
            call = calls[m["call"]]
            assert call["tool"] == "ablate" and not call["is_error"]
            args, res = call["arguments"], call["result"]
            assert args["components"] == claim["components"] and args["mode"] == m["mode"]
            assert args["text"] == claim["prompts"][m["prompt"]]["text"]
            assert res["token_prob_before"] == m["p_before"]
            (regime,) = [r for r in res["regimes"] if r["regime"] == m["regime"]]
            assert regime["token_prob_after"] == m["p_after"]
        # the scores, recomputed here from the measured probabilities
        s = claim["scores"]
        for mode, name in (("remove", "necessity"), ("keep_only", "sufficiency")):
            for regime in ("deterministic", "stochastic"):
                ratios = [
                    m["p_after"] / m["p_before"]
                    for m in claim["measurements"]
                    if m["mode"] == mode and m["regime"] == regime
                ]
                want = _mean(
                    [1 - r for r in ratios] if mode == "remove" else [min(r, 1.0) for r in ratios]
                )
                assert abs(s[f"{name}_{regime}"] - want) < 1e-12
        four = [
            s[k]
            for k in (
                "necessity_deterministic",
                "necessity_stochastic",
                "sufficiency_deterministic",
                "sufficiency_stochastic",
            )
        ]
        assert abs(s["verified_effect"] - _mean(four)) < 1e-12
        # grader scores: the recorded subprocess output for these components
        grader = calls[claim["grader_call"]]
        assert grader["tool"] == "spd_core.grader" and not grader["is_error"]
        # tasks whose strategies converged on the same set claim it alike: one grader row per claim
        graded = [
            g
            for g in grader["result"]
            if g["components"] == claim["components"] and g["mechanism"] == claim["mechanism"]
        ]
        assert graded and all(g == graded[0] for g in graded), graded
        assert claim["grader"] == graded[0]
        # the agents' own text never holds these numbers: they were measured, not copied
        agent_text = "".join(
            (Path(claim_dir) / f).read_text()
            for claim_dir in [_inv_dir(summary, claim)]
            for f in ("hypotheses.jsonl", "explanations.jsonl", "research_log.md")
        )
        for key, value in s.items():
            for shown in (repr(value), f"{value:.6f}"):
                assert shown not in agent_text, (
                    f"{claim['claim_id']} {key} {shown} is in the agent's text"
                )
        agent_ablations = [
            e
            for e in read_events(Path(_inv_dir(summary, claim)) / "events.jsonl")
            if e.get("kind") == "tool_call" and e.get("tool") == "ablate"
        ]
        assert len(claim["measurements"]) > len(agent_ablations), (
            "the re-test measured more than the agent"
        )
    effects = [c["scores"]["verified_effect"] for c in summary["claims"]]
    assert effects == sorted(effects, reverse=True), "claims are ranked by verified effect"
    # the server of the aggregation logged the same ablate calls (a second record, written by the
    # server)
    server_calls = [
        e
        for e in read_events(sd.aggregate / "events.jsonl")
        if e.get("kind") == "tool_call" and e.get("tool") == "ablate"
    ]
    recorded = [c for c in calls.values() if c["tool"] == "ablate"]
    assert all(e["outcome"] == "ok" for e in server_calls)
    # the server logs large arguments as their sha256 and size: compare the same summary of each
    # side
    key = lambda args: json.dumps(summarize_args(args), sort_keys=True)  # noqa: E731
    logged = Counter(
        json.dumps(
            {k: e[k] for k in ("args", "args_sha256", "args_bytes") if k in e}, sort_keys=True
        )
        for e in server_calls
    )
    assert logged == Counter(key(c["arguments"]) for c in recorded)
    # the report prints the ranked effects
    report = sd.report.read_text()
    for c in summary["claims"]:
        assert re.search(
            rf"\| {c['rank']} \| {re.escape(c['claim_id'])} \|.*"
            rf"\*\*{c['scores']['verified_effect']:.3f}\*\*",
            report,
        ), c["claim_id"]
    return summary


def _inv_dir(summary: dict[str, Any], claim: dict[str, Any]) -> str:
    return next(t["inv_dir"] for t in summary["tasks"] if t["index"] == claim["task_index"])
