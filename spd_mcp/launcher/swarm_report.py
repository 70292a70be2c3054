"""The swarm's findings from the aggregation's own measurements: swarm_summary.json and
swarm_report.md.

Claims are ranked by `verified_effect` (the re-test's, never the agents' numbers), then by fewer
components. Two tasks' claims about the same mechanism agree on a property (necessary, sufficient)
when both agents gave it the same verdict, and contradict each other when one said supported and
the other refuted; the re-test's verdict for each claim is shown next to them.
"""

from __future__ import annotations

from collections import Counter
from itertools import combinations
from typing import Any

from spd_mcp.launcher.retest import (
    MODES,
    PROMPTS_PER_CLAIM,
    REGIMES,
    SEED,
    STOCHASTIC_SAMPLES,
    VERDICT_MIN,
    Retest,
)
from spd_mcp.launcher.swarm_claims import Claim, TaskRecord

PROPERTIES = ("necessary", "sufficient")
DEFINITIONS = {
    "necessity_<regime>": "mean over the re-test prompts of 1 - p_after/p_before, removing the "
    "claimed components",
    "sufficiency_<regime>": "mean over the re-test prompts of min(p_after/p_before, 1), keeping "
    "only them",
    "verified_effect": "mean of necessity and sufficiency in the deterministic and stochastic "
    "regimes",
    "verdict": "validate_claim's verdict on held-out probes of the claim's mechanism (holds: "
    "supported, fails: refuted, else inconclusive); without a mechanism, supported when the score "
    f"is at least {VERDICT_MIN} in both regimes, else refuted",
    "grader": "spd_core.grader on the run's probe prompts (deterministic): necessity, "
    "sufficiency, specificity",
}


def jaccard(a: tuple[str, ...], b: tuple[str, ...]) -> float:
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 0.0


def _rank_key(c: dict[str, Any]) -> tuple[float, int]:
    effect = c["scores"].get("verified_effect")
    return (-(effect if effect is not None else -1.0), c["n_components"])


def build_summary(
    *,
    head: dict[str, Any],
    tasks: list[TaskRecord],
    claims: list[Claim],
    retests: dict[str, Retest],
    grades: dict[str, dict[str, Any]],
    grader_note: str,
    tool_calls: dict[str, Any],
) -> dict[str, Any]:
    """The whole summary (JSON-ready); `grades` maps claim_id -> {'call': id, 'scores': grader
    dict}."""
    by_task = {t.index: t for t in tasks}
    rows = []
    for c in claims:
        rt = retests.get(c.claim_id) or Retest(c.claim_id, None, None, error="not re-tested")
        reproduced = {
            p: (rt.verdicts.get(p) == c.agent_verdicts[p])
            if c.agent_verdicts.get(p) in ("supported", "refuted")
            and rt.verdicts.get(p) in ("supported", "refuted")
            else None
            for p in PROPERTIES
        }
        g = grades.get(c.claim_id)
        rows.append(
            {
                "claim_id": c.claim_id,
                "task_index": c.task_index,
                "inv_id": c.inv_id,
                "strategy": by_task[c.task_index].strategy,
                "hypothesis": by_task[c.task_index].hypothesis,
                "components": list(c.components),
                "n_components": len(c.components),
                "subject_prompt": c.subject_prompt,
                "behaviour": c.behaviour,
                "mechanism": rt.mechanism,
                "target": rt.target,
                "agent_confidence": c.confidence,
                "agent_verdicts": c.agent_verdicts,
                "verified_verdicts": rt.verdicts,
                "reproduced": reproduced,
                "scores": rt.scores,
                "prompts": rt.prompts,
                "measurements": rt.measurements,
                "validation": rt.validation,
                "retest_error": rt.error,
                "grader": g["scores"] if g else None,
                "grader_call": g["call"] if g else None,
            }
        )
    rows.sort(key=_rank_key)
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    agreements, contradictions = [], []
    for a, b in combinations(rows, 2):
        if (
            a["task_index"] == b["task_index"]
            or not a["mechanism"]
            or a["mechanism"] != b["mechanism"]
        ):
            continue
        pair = {
            "claims": [a["claim_id"], b["claim_id"]],
            "tasks": [a["task_index"], b["task_index"]],
            "mechanism": a["mechanism"],
            "component_overlap": round(jaccard(tuple(a["components"]), tuple(b["components"])), 4),
        }
        for p in PROPERTIES:
            va, vb = a["agent_verdicts"].get(p), b["agent_verdicts"].get(p)
            if va not in ("supported", "refuted") or vb not in ("supported", "refuted"):
                continue
            entry = {
                **pair,
                "property": p,
                "agent_verdicts": [va, vb],
                "retest_verdicts": [a["verified_verdicts"].get(p), b["verified_verdicts"].get(p)],
            }
            (agreements if va == vb else contradictions).append(entry)
    failed = [t.as_dict() for t in tasks if not t.ok]
    return {
        **head,
        "tasks": [t.as_dict() for t in tasks],
        "n_tasks": len(tasks),
        "n_ok": sum(t.ok for t in tasks),
        "failed_tasks": failed,
        "method": {
            "prompts_per_claim": PROMPTS_PER_CLAIM,
            "regimes": list(REGIMES),
            "modes": dict(MODES),
            "stochastic_samples": STOCHASTIC_SAMPLES,
            "seed": SEED,
            "verdict_min": VERDICT_MIN,
            "definitions": DEFINITIONS,
            "grader": grader_note,
        },
        "claims": rows,
        "agreements": agreements,
        "contradictions": contradictions,
        "tool_calls": tool_calls,
    }


def f3(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _claim_table(claims: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| rank | claim | task (strategy) | mechanism | components | necessity det / sto | "
        "sufficiency det / sto | verified effect | grader nec / suf / spec | agent said nec / suf "
        "| re-test nec / suf |",
        "|" + " --- |" * 11,
    ]
    for c in claims:
        s, g = c["scores"], c["grader"] or {}
        av, vv = c["agent_verdicts"], c["verified_verdicts"]
        lines.append(
            f"| {c['rank']} | {c['claim_id']} | t{c['task_index']:02d} ({c['strategy']}) | "
            f"{c['mechanism'] or '?'} | {c['n_components']} | "
            f"{f3(s.get('necessity_deterministic'))} / {f3(s.get('necessity_stochastic'))} | "
            f"{f3(s.get('sufficiency_deterministic'))} / {f3(s.get('sufficiency_stochastic'))} | "
            f"**{f3(s.get('verified_effect'))}** | {f3(g.get('necessity'))} / "
            f"{f3(g.get('sufficiency'))} / {f3(g.get('specificity'))} | "
            f"{av.get('necessary', '-')} / {av.get('sufficient', '-')} | "
            f"{vv.get('necessary', '-')} / {vv.get('sufficient', '-')} |"
        )
    return lines


def render_report(s: dict[str, Any]) -> str:
    """swarm_report.md from the summary (every number printed is one of the summary's)."""
    out = [
        f"# Swarm report: {s['question'].splitlines()[0]}",
        "",
        f"Swarm `{s['swarm_id']}` on run `{s['run']}`: {s['n_tasks']} tasks ({s['source']}), agent "
        f"`{s['agent']}`, executor `{s['executor']}`; {s['n_ok']} finished, "
        f"{len(s['failed_tasks'])} failed. Generated {s['generated']}.",
        "",
        "## How the claims were re-tested",
        "",
        "A fresh server re-ran every claimed circuit (each saved explanation) on its subject "
        f"prompt and up to {s['method']['prompts_per_claim'] - 1} more probe prompts of the same "
        "mechanism, removing (necessity) and keeping only (sufficiency) the claimed components, in "
        f"the deterministic and stochastic ({s['method']['stochastic_samples']} samples, seed "
        f"{s['method']['seed']}) regimes. The numbers below are the aggregation's own measurements "
        f"({s['tool_calls']['count']} tool calls in `{s['tool_calls']['file']}`), not the "
        f"agents'. Grader: {s['method']['grader']}.",
        "",
    ]
    out += [f"- `{k}`: {v}" for k, v in s["method"]["definitions"].items()]
    out += ["", "## Claims ranked by verified effect", ""]
    out += (
        _claim_table(s["claims"])
        if s["claims"]
        else ["No task saved an explanation naming components."]
    )
    for c in s["claims"]:
        if c["retest_error"]:
            out.append(f"\n- {c['claim_id']}: not fully re-tested: {c['retest_error']}")
    not_reproduced = [
        (c["claim_id"], p) for c in s["claims"] for p, ok in c["reproduced"].items() if ok is False
    ]
    if not_reproduced:
        out += [
            "",
            "Agent verdicts the re-test did not reproduce: "
            + ", ".join(f"{cid} ({p})" for cid, p in not_reproduced)
            + ".",
        ]
    for title, items in (("Agreements", s["agreements"]), ("Contradictions", s["contradictions"])):
        out += ["", f"## {title} between agents", ""]
        if not items:
            out.append(
                "None: no two tasks' claims about the same mechanism "
                f"{'share' if title == 'Agreements' else 'oppose'} a verdict on necessity or "
                "sufficiency."
            )
        for e in items:
            (a, b), (ta, tb) = e["claims"], e["tasks"]
            out.append(
                f"- {e['mechanism']}, {e['property']}: t{ta:02d} ({a}) said "
                f"{e['agent_verdicts'][0]}, t{tb:02d} ({b}) said {e['agent_verdicts'][1]}; "
                f"re-test: {e['retest_verdicts'][0]} / {e['retest_verdicts'][1]}; component "
                f"overlap (Jaccard) {e['component_overlap']:.2f}."
            )
    out += ["", "## Failed tasks", ""]
    if not s["failed_tasks"]:
        out.append("None.")
    for t in s["failed_tasks"]:
        slurm = (
            f"; SLURM state {t['slurm_state']}, exit code {t['exit_code']}"
            if t["slurm_state"]
            else ""
        )
        first, *rest = (t["error"] or "no error recorded").splitlines() or [""]
        out.append(
            f"- t{t['index']:02d} `{t['inv_id']}` ({t['strategy']}): status {t['status']}{slurm}; "
            f"error: {first}"
        )
        detail = [line for line in rest if line.strip()]
        if t["log_tail"]:
            detail += ["--- end of the job's log ---", *t["log_tail"].splitlines()]
        if detail:
            out += ["", "  ```", *("  " + line for line in detail), "  ```"]
    out += [
        "",
        "## Tasks",
        "",
        "| task | investigation | strategy | hypothesis | status | explanations |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    out += [
        f"| t{t['index']:02d} | `{t['inv_id']}` | {t['strategy']} | {t['hypothesis'] or '-'} | "
        f"{t['status']} | {t['n_explanations']} |"
        for t in s["tasks"]
    ]
    counts = Counter(s["tool_calls"].get("by_tool", {}))
    out += [
        "",
        "Tool calls of the aggregation: "
        f"{', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}.",
    ]
    return "\n".join(out) + "\n"
