"""One self-contained HTML page for a swarm: the answer first (the best re-tested claim: behaviour,
components with top tokens, the aggregation's own numbers, caveats), then every claim ranked, the
agents' agreements and contradictions, each task (answer, hypotheses, drawings), the aggregation's
timeline and how the claims were re-tested. Reads swarm.json, swarm_summary.json and the tasks'
investigation directories; before the aggregation has run it shows the tasks so far."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spd_mcp.launcher.answer import component_rows
from spd_mcp.launcher.findings import Findings, numbers, read_event_lines, read_findings, tool_calls
from spd_mcp.launcher.html_report import (
    answer_section,
    badge,
    caveats_block,
    circuits_section,
    hypotheses_section,
    num_table,
    page,
    timeline_section,
)
from spd_mcp.launcher.layout import InvestigationDir, read_json
from spd_mcp.launcher.md_html import esc

SWARM_DONE = ("completed", "failed")


def swarm_caveats(s: dict[str, Any]) -> list[str]:
    out = []
    for c in s.get("claims", []):
        for prop, ok in (c.get("reproduced") or {}).items():
            if ok is False:
                out.append(
                    f"{c['claim_id']}: the agent said {prop} was {c['agent_verdicts'].get(prop)}; "
                    f"the re-test "
                    f"found it {c['verified_verdicts'].get(prop)}"
                )
        if c.get("retest_error"):
            out.append(f"{c['claim_id']}: not fully re-tested: {c['retest_error']}")
    for e in s.get("contradictions", []):
        out.append(
            f"contradiction on {e['mechanism']} ({e['property']}): tasks {e['tasks']} said "
            f"{e['agent_verdicts']}"
        )
    for t in s.get("failed_tasks", []):
        out.append(
            f"task t{t['index']:02d} failed: "
            f"{(t.get('error') or 'no error recorded').splitlines()[0]}"
        )
    if s.get("aggregate_error"):
        out.append(f"aggregation: {s['aggregate_error']}")
    return out


def best_claim_section(s: dict[str, Any], tasks: dict[int, Findings]) -> list[str]:
    out = ['<section class="answer" id="answer"><h2>Answer</h2>']
    claims = s.get("claims") or []
    if not s:
        out.append(
            "<p><em>No swarm_summary.json yet: the aggregation writes it when every task has "
            "ended.</em></p>"
        )
    elif not claims:
        out.append("<p>No task saved an explanation naming components: nothing to rank.</p>")
    else:
        c = claims[0]
        out.append(
            f"<p>Best claim by the aggregation's verified effect: "
            f"<strong>{esc(c['claim_id'])}</strong> "
            f"(task t{c['task_index']:02d}, {esc(str(c['strategy']))}): "
            f"{esc(str(c['behaviour']))}, "
            f"{c['n_components']} components, mechanism {esc(str(c.get('mechanism') or '?'))}.</p>"
        )
        out.append(f'<p class="meta">on <code>{esc(str(c.get("subject_prompt", "")))}</code></p>')
        f = tasks.get(c["task_index"])
        explanation = {"components": [{"component": k} for k in c["components"]]}
        if f is not None:
            explanation = next(
                (
                    e
                    for e in f.explanations
                    if [x.get("component") for x in e.get("components", []) if isinstance(x, dict)]
                    == c["components"]
                ),
                explanation,
            )
        rows = (
            component_rows(f, explanation)
            if f is not None
            else [
                {"component": k, "role": "", "interpretation": "", "promotes": ""}
                for k in c["components"]
            ]
        )
        out.append(
            "<table><thead><tr><th>component</th><th>role</th><th>promotes most (direct "
            "path)</th></tr>"
            "</thead><tbody>"
            + "".join(
                f"<tr><td><code>{esc(r['component'])}</code></td><td>{esc(r['role'])}</td><td>"
                + (
                    "<em>no direct path</em>"
                    if r["promotes"] == "—"
                    else f"<code>{esc(repr(r['promotes']))}</code>"
                    if r["promotes"]
                    else ""
                )
                + "</td></tr>"
                for r in rows
            )
            + "</tbody></table>"
        )
        out.append("<h4>Re-test (the aggregation's own measurements)</h4>")
        verdicts = " · ".join(
            f"{esc(p)}: agent {badge(str(c['agent_verdicts'].get(p, '-')))} re-test "
            f"{badge(str(c['verified_verdicts'].get(p, '-')))}"
            for p in ("necessary", "sufficient")
        )
        out.append(f"<p>{verdicts}</p>")
        out.append(num_table(list(numbers(c.get("scores") or {}))))
        if c.get("grader"):
            out.append("<h4>Grader</h4>" + num_table([kv for kv in numbers(c["grader"])]))
    return [*out, *caveats_block(swarm_caveats(s)), "</section>"]


def claims_section(s: dict[str, Any]) -> list[str]:
    claims = s.get("claims") or []
    out = ['<section id="claims"><h2>Claims ranked by verified effect</h2>']
    if not claims:
        return [*out, "<p>None.</p></section>"]
    keys = list(dict.fromkeys(k for c in claims for k in (c.get("scores") or {})))
    out.append(
        "<table><thead><tr><th>rank</th><th>claim</th><th>task</th><th>mechanism</th>"
        "<th>components</th>"
        + "".join(f"<th>{esc(k).replace('_', '_<wbr>')}</th>" for k in keys)
        + "<th>agent nec / suf</th><th>re-test nec / suf</th></tr></thead><tbody>"
    )
    for c in claims:
        sc, av, vv = c.get("scores") or {}, c["agent_verdicts"], c["verified_verdicts"]
        cells = "".join(
            f'<td class="num">{esc(dict(numbers(sc.get(k), k)).get(k, "n/a"))}</td>' for k in keys
        )
        out.append(
            f"<tr><td>{c['rank']}</td><td>{esc(c['claim_id'])}</td><td>t{c['task_index']:02d} "
            f"({esc(str(c['strategy']))})</td><td>{esc(str(c.get('mechanism') or '?'))}</td>"
            f"<td>{esc(', '.join(c['components']))}</td>{cells}"
            f"<td>{badge(str(av.get('necessary', '-')))} "
            f"{badge(str(av.get('sufficient', '-')))}</td>"
            f"<td>{badge(str(vv.get('necessary', '-')))} "
            f"{badge(str(vv.get('sufficient', '-')))}</td></tr>"
        )
    out.append("</tbody></table>")
    for title, items in (
        ("Agreements", s.get("agreements") or []),
        ("Contradictions", s.get("contradictions") or []),
    ):
        out.append(f"<h3>{title} between agents</h3>")
        out.append(
            "<ul>"
            + "".join(
                f"<li>{esc(e['mechanism'])}, {esc(e['property'])}: tasks {esc(str(e['tasks']))} "
                f"said "
                f"{esc(' / '.join(e['agent_verdicts']))}; re-test "
                f"{esc(' / '.join(map(str, e['retest_verdicts'])))}; "
                f"component overlap {e['component_overlap']:.2f}</li>"
                for e in items
            )
            + "</ul>"
            if items
            else "<p>None.</p>"
        )
    return [*out, "</section>"]


def task_sections(meta: dict[str, Any], tasks: dict[int, Findings], best: int | None) -> list[str]:
    out = ['<section id="tasks"><h2>Tasks</h2>']
    for t in meta.get("tasks", []):
        f = tasks.get(t["index"])
        status = str(f.meta.get("status", "?")) if f else "missing"
        out.append(
            f'<details id="task-t{t["index"]:02d}"{" open" if t["index"] == best else ""}>'
            f"<summary>t{t['index']:02d} "
            f"<code>{esc(t['inv_id'])}</code> "
            f"{badge(status)} {esc(str(t.get('hypothesis') or t.get('strategy')))}</summary>"
        )
        if f is not None:
            out += answer_section(f)[1:-1]  # the task's answer without its own frame
            out += hypotheses_section(f.hypotheses)
            out += circuits_section(f.artifacts, anchor_prefix=f"t{t['index']:02d}")
        out.append("</details>")
    return [*out, "</section>"]


def method_section(s: dict[str, Any]) -> list[str]:
    m = s.get("method") or {}
    if not m:
        return []
    defs = "".join(
        f"<li><code>{esc(k)}</code>: {esc(str(v))}</li>"
        for k, v in (m.get("definitions") or {}).items()
    )
    return [
        '<section id="method"><h2>How the claims were re-tested</h2>',
        f"<p>A fresh server re-ran every claimed circuit on up to "
        f"{esc(str(m.get('prompts_per_claim')))} probe "
        f"prompts, regimes {esc(', '.join(m.get('regimes', [])))}, "
        f"{esc(str(m.get('stochastic_samples')))} "
        f"stochastic samples, seed {esc(str(m.get('seed')))}. Grader: "
        f"{esc(str(m.get('grader')))}.</p>",
        f"<ul>{defs}</ul></section>",
    ]


def swarm_html(root: Path, refresh_s: float | None = None) -> str:
    meta = read_json(root / "swarm.json")
    s = read_json(root / "swarm_summary.json")
    tasks = {
        t["index"]: read_findings(InvestigationDir(Path(t["inv_dir"])))
        for t in meta.get("tasks", [])
        if (Path(t["inv_dir"]) / "metadata.json").is_file()
    }
    running = meta.get("status") not in SWARM_DONE
    agg = root / "aggregate"
    agg_events = read_event_lines(agg / "events.jsonl")
    body = [
        f"<h1>{esc(str(meta.get('question', '')))}</h1>",
        f'<p class="meta">swarm <code>{esc(root.name)}</code> · '
        f"{badge(str(meta.get('status', '?')))} · "
        f"{len(meta.get('tasks', []))} tasks ({esc(str(meta.get('source')))}) · agent "
        f"{esc(str(meta.get('agent')))} · "
        f"run {esc(str(meta.get('run')))} · executor {esc(str(meta.get('executor')))}"
        + (" · live: this page reloads itself until the swarm ends" if running else "")
        + "</p>",
        '<p class="meta"><a href="#answer">answer</a> · <a href="#claims">claims</a> · <a '
        'href="#tasks">tasks</a> · '
        '<a href="#timeline">aggregation timeline</a> · <a href="#method">method</a></p>',
        *best_claim_section(s, tasks),
        *claims_section(s),
        *task_sections(meta, tasks, (s.get("claims") or [{}])[0].get("task_index")),
    ]
    if agg.is_dir():
        body += timeline_section(tool_calls(agg, agg_events), agg_events, "Aggregation timeline")
    body += method_section(s)
    return page(f"{root.name}: {meta.get('question', '')}", body, refresh_s if running else None)
