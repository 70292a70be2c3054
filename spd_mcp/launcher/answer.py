"""An investigation's answer as terminal text: the summary, the behaviour explained, the components
with their roles and top tokens, the key numbers and the caveats (for `report` and `status`)."""

from __future__ import annotations

import textwrap
from typing import Any

from spd_mcp.launcher.findings import (
    Findings,
    caveats,
    evidence_numbers,
    evidence_texts,
    numbers,
    one_line,
    verdict_lines,
)


def wrap(text: str, indent: str, width: int = 100) -> list[str]:
    """``text`` on lines of at most ``width``; continuation lines aligned under the first's text."""
    rest = " " * len(indent)
    return textwrap.wrap(one_line(text), width, initial_indent=indent, subsequent_indent=rest) or [
        indent
    ]


def clip(text: str, n: int) -> str:
    text = one_line(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def component_rows(f: Findings, explanation: dict[str, Any]) -> list[dict[str, str]]:
    """Each component of an explanation: key, role, interpretation and the token it promotes most
    (from the graph artifacts; '' where no drawing covers it, '—' where it has no direct path)."""
    rows = []
    for c in explanation.get("components") or []:
        key = str(c.get("component", "?")) if isinstance(c, dict) else str(c)
        top = f.promotes.get(key, "") if key in f.promotes else ""
        rows.append(
            {
                "component": key,
                "role": str(c.get("role", "")) if isinstance(c, dict) else "",
                "interpretation": str(c.get("interpretation", "")) if isinstance(c, dict) else "",
                "promotes": "—" if key in f.promotes and top is None else (top or ""),
            }
        )
    return rows


def answer_lines(f: Findings, brief: bool = False) -> list[str]:
    """The answer; ``brief`` keeps the first explanation and at most four caveats (for `status`)."""
    s = f.summary
    status = s.get("status", "no summary yet")
    title = one_line(s.get("title") or "")
    if title == one_line(f.meta.get("question", "")):
        title = ""  # the question again, not an answer
    out = [f"answer ({status})" + (f": {clip(title, 200)}" if title else "")]
    if s.get("summary"):
        text = s["summary"]
        out += wrap(clip(text, 400) if brief else text, "  ")
    explanations = f.explanations[-1:] if brief else f.explanations
    for n, e in enumerate(explanations, 1):
        head = (
            "explanation" if len(explanations) == 1 else f"explanation {n} of {len(explanations)}"
        )
        out.append(
            f"{head}: {clip(str(e.get('behaviour', '?')), 160)} (confidence "
            f"{e.get('confidence', '?')})"
        )
        out.append(f"  on: {clip(str(e.get('subject_prompt', '')), 150)}")
        rows = component_rows(f, e)
        if rows:
            out.append(f"  components ({len(rows)}):")
            for r in rows:
                top = (
                    f"promotes {r['promotes']!r}"
                    if r["promotes"] not in ("", "—")
                    else ("no direct path to the logits" if r["promotes"] == "—" else "")
                )
                role = "; ".join(x for x in (r["role"], r["interpretation"], top) if x)
                out.append(f"    {r['component']:<16} {clip(role, 80)}")
        out += [line for v in verdict_lines(e) for line in wrap(v, "  ")]
        texts, nums = evidence_texts(e), evidence_numbers(e)
        if texts or nums:
            out.append("  key numbers:")
            out += [line for t in texts for line in wrap(t, "    - ")[: 1 if brief else None]]
            shown = nums[:8] if brief else nums
            out += [f"    {k}: {v}" for k, v in shown]
            if len(nums) > len(shown):
                out.append(
                    f"    … {len(nums) - len(shown)} more numbers in `spd-investigate report`"
                )
    if f.hypotheses:
        out.append("hypotheses: " + ", ".join(f"{h.id} {h.status}" for h in f.hypotheses))
    notes = caveats(f)
    if notes:
        out.append("caveats:")
        shown = notes[:4] if brief else notes
        out += [line for c in shown for line in wrap(c, "  - ")]
        if len(notes) > len(shown):
            out.append(f"  … {len(notes) - len(shown)} more in `spd-investigate report`")
    errors = sum(1 for c in f.calls if c.outcome != "ok")
    out.append(
        f"{len(f.calls)} tool calls ({errors} failed), {len(f.hypotheses)} hypotheses, "
        f"{len(f.explanations)} explanations, {len(f.artifacts)} drawings"
    )
    return out


def swarm_answer_lines(s: dict[str, Any]) -> list[str]:
    """A swarm's answer from swarm_summary.json: the best re-tested claim with its numbers."""
    if not s:
        return [
            "answer: none yet (the aggregation writes swarm_summary.json when every task has ended)"
        ]
    claims = s.get("claims") or []
    out = [
        f"answer: {s.get('n_ok')}/{s.get('n_tasks')} tasks finished, {len(claims)} claims re-tested"
    ]
    if not claims:
        return [*out, "  no task saved an explanation naming components"]
    c = claims[0]
    verdicts = ", ".join(
        f"{p} {c['verified_verdicts'].get(p, '-')} (agent: {c['agent_verdicts'].get(p, '-')})"
        for p in ("necessary", "sufficient")
    )
    scores = ", ".join(f"{k} {v}" for k, v in numbers(c.get("scores") or {}))
    out += [
        f"  best claim {c['claim_id']} (t{c['task_index']:02d}, {c['strategy']}): "
        f"{clip(str(c['behaviour']), 120)}",
        *wrap(f"components ({c['n_components']}): {', '.join(c['components'])}", "  "),
        f"  re-test: {verdicts}",
        *wrap(f"scores: {scores}", "  "),
    ]
    if s.get("contradictions"):
        out.append(
            f"  {len(s['contradictions'])} contradiction(s) between agents; "
            f"{len(s.get('failed_tasks') or [])} failed task(s)"
        )
    return out
