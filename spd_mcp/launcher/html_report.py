"""One self-contained HTML page for an investigation: the answer first (behaviour, components with
roles and top tokens, key numbers, caveats), then hypotheses, the circuit drawings (inline SVG),
the research log and a timeline of tool calls and lifecycle events. Plain HTML and SVG, no script:
every text from the investigation is escaped, and the drawings are re-serialised without scripts,
event handlers or outside references. A live page (``refresh_s``) reloads itself while it runs.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from spd_mcp.launcher.answer import component_rows
from spd_mcp.launcher.findings import (
    Artifact,
    Event,
    Findings,
    Hypothesis,
    ToolCall,
    caveats,
    evidence_numbers,
    evidence_texts,
    one_line,
    verdict_lines,
)
from spd_mcp.launcher.md_html import esc, render

SVG_NS = "http://www.w3.org/2000/svg"
_BANNED_TAGS = {
    "script",
    "foreignObject",
    "iframe",
    "object",
    "embed",
    "image",
    "use",
    "a",
    "style",
}
STATUS_CLASS = {
    "ok": "ok",
    "error": "bad",
    "supported": "ok",
    "completed": "ok",
    "refuted": "bad",
    "failed": "bad",
    "inconclusive": "warn",
    "proposed": "warn",
    "in_progress": "warn",
}

CSS = """
body{font-family:'DejaVu Sans',Arial,sans-serif;margin:0 auto;max-width:1180px;padding:18px 28px;
color:#111827;line-height:1.45;font-size:15px}
h1{font-size:24px;margin:0 0 4px}
h2{font-size:20px;border-bottom:2px solid #e5e7eb;padding-bottom:4px;margin-top:30px}
h3{font-size:16px;margin:18px 0 6px}h4,h5,h6{font-size:15px;margin:14px 0 4px}
.meta{color:#4b5563;font-size:13px}
.answer{background:#f0f9ff;border:1px solid #bae6fd;border-radius:8px;padding:12px 18px}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;
font-weight:bold;background:#e5e7eb}.ok{background:#dcfce7;color:#166534}.bad{background:#fee2e2;
color:#991b1b}.warn{background:#fef9c3;color:#854d0e}table{border-collapse:collapse;margin:8px 0;
font-size:13px}th,td{border:1px solid #e5e7eb;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f9fafb}code{background:#f3f4f6;padding:0 3px;border-radius:3px;font-size:13px}
pre{background:#f3f4f6;padding:8px;overflow-x:auto;font-size:12px}
.log{border-left:3px solid #e5e7eb;padding-left:14px}
.bar{display:inline-block;height:10px;background:#60a5fa;vertical-align:middle}
.bar.err{background:#f87171}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:10px 0;overflow-x:auto}figcaption{color:#4b5563;font-size:13px}
.caveats li{color:#7c2d12}details summary{cursor:pointer;color:#1d4ed8}
"""


def num_table(pairs: Sequence[tuple[str, str]]) -> str:
    """A table of (name, value) rows, values right-aligned; "" when there are none."""
    if not pairs:
        return ""
    rows = "".join(f'<tr><th>{esc(k)}</th><td class="num">{esc(v)}</td></tr>' for k, v in pairs)
    return f"<table><tbody>{rows}</tbody></table>"


def caveats_block(notes: Sequence[str]) -> list[str]:
    """The Caveats heading and list; nothing when there are no caveats."""
    if not notes:
        return []
    items = "".join(f"<li>{esc(n)}</li>" for n in notes)
    return [f'<h3>Caveats</h3><ul class="caveats">{items}</ul>']


def badge(status: str) -> str:
    return f'<span class="badge {STATUS_CLASS.get(status, "")}">{esc(status)}</span>'


def page(title: str, body: list[str], refresh_s: float | None = None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{int(refresh_s)}">' if refresh_s else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src '
        "'unsafe-inline'; "
        'img-src data:">'
        f"{refresh}<title>{esc(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def clean_svg(path: Path) -> str | None:
    """The drawing re-serialised without scripts, handlers or outside references; None if
    unreadable."""
    try:
        root = ET.fromstring(path.read_text(errors="replace"))
    except ET.ParseError:
        return None
    if root.tag != f"{{{SVG_NS}}}svg":
        return None
    for parent in list(root.iter()):
        for child in list(parent):
            if str(child.tag).split("}")[-1] in _BANNED_TAGS:
                parent.remove(child)
        for name in list(parent.attrib):
            local = name.split("}")[-1].lower()
            value = parent.attrib[name]
            if (
                local.startswith("on")
                or local == "href"
                or "url(" in value.replace(" ", "").lower()
                and "#" not in value
            ):
                del parent.attrib[name]
    ET.register_namespace("", SVG_NS)
    width = root.get("width")
    if width and width.isdigit():  # scale down to the page, keep the aspect ratio
        root.set("style", f"max-width:100%;height:auto;width:{width}px")
    return ET.tostring(root, encoding="unicode")


def answer_section(f: Findings) -> list[str]:
    s = f.summary
    title = one_line(s.get("title", ""))
    title = "" if title == one_line(f.meta.get("question", "")) else title
    out = [
        '<section class="answer" id="answer"><h2>Answer</h2>',
        f"<p>{badge(str(s.get('status', 'no summary yet')))} <strong>{esc(title)}</strong></p>",
    ]
    if s.get("summary"):
        out.append(f"<p>{esc(str(s['summary']))}</p>")
    else:
        out.append("<p><em>No summary yet: the agent has not stated a conclusion.</em></p>")
    for n, e in enumerate(f.explanations, 1):
        out.append(
            f"<h3>Explanation {n}: {esc(str(e.get('behaviour', '?')))} "
            f"{badge('confidence ' + str(e.get('confidence', '?')))}</h3>"
        )
        out.append(f'<p class="meta">on <code>{esc(str(e.get("subject_prompt", "")))}</code></p>')
        if e.get("explanation"):
            out.append(f"<p>{esc(str(e['explanation']))}</p>")
        rows = component_rows(f, e)
        if rows:
            interp = any(r["interpretation"] for r in rows)  # a column only where one is given
            out.append(
                "<table><thead><tr><th>component</th><th>role</th>"
                + ("<th>interpretation</th>" if interp else "")
                + "<th>promotes most (direct path)</th></tr></thead><tbody>"
            )
            for r in rows:
                top = (
                    "<em>no direct path</em>"
                    if r["promotes"] == "—"
                    else f"<code>{esc(repr(r['promotes']))}</code>"
                    if r["promotes"]
                    else '<span class="meta">not in a saved drawing</span>'
                )
                out.append(
                    f"<tr><td><code>{esc(r['component'])}</code></td><td>{esc(r['role'])}</td>"
                    + (f"<td>{esc(r['interpretation'])}</td>" if interp else "")
                    + f"<td>{top}</td></tr>"
                )
            out.append("</tbody></table>")
        verdicts = verdict_lines(e)
        if verdicts:
            out.append(
                "<h4>Verdict</h4><ul>" + "".join(f"<li>{esc(v)}</li>" for v in verdicts) + "</ul>"
            )
        texts, nums = evidence_texts(e), evidence_numbers(e)
        if texts or nums:
            out.append("<h4>Key numbers</h4>")
        if texts:
            out.append("<ul>" + "".join(f"<li>{esc(t)}</li>" for t in texts) + "</ul>")
        if nums:
            out.append(num_table(nums))
        if e.get("alternatives"):
            out.append(
                "<p>Alternatives considered:</p><ul>"
                + "".join(f"<li>{esc(str(a))}</li>" for a in e["alternatives"])
                + "</ul>"
            )
    out.extend(caveats_block(caveats(f)))
    out.append("</section>")
    return out


def hypotheses_section(hyps: list[Hypothesis]) -> list[str]:
    out = ['<section id="hypotheses"><h2>Hypotheses</h2>']
    if not hyps:
        return [*out, "<p>None recorded.</p></section>"]
    out.append(
        "<table><thead><tr><th>id</th><th>status</th><th>statement</th><th>evidence</th>"
        "<th>history</th></tr></thead><tbody>"
    )
    for h in hyps:
        ev = (
            "<ul>" + "".join(f"<li>{esc(x)}</li>" for x in h.evidence) + "</ul>"
            if h.evidence
            else ""
        )
        out.append(
            f"<tr><td><code>{esc(h.id)}</code></td><td>{badge(h.status)}</td>"
            f"<td>{esc(h.statement)}</td>"
            f"<td>{ev}</td><td>{esc(' → '.join(h.history))}</td></tr>"
        )
    return [*out, "</tbody></table></section>"]


def circuits_section(arts: list[Artifact], anchor_prefix: str = "art") -> list[str]:
    out = ['<section id="circuits"><h2>Circuit drawings</h2>']
    drawn = 0
    for a in arts:
        svg = clean_svg(a.svg) if a.svg is not None else None
        if svg is None:
            continue
        drawn += 1
        out.append(
            f'<figure id="{anchor_prefix}-{esc(a.id)}">{svg}<figcaption>{esc(a.id)}: '
            f"{esc(a.caption)}</figcaption></figure>"
        )
    if not drawn:
        out.append("<p>No drawing saved.</p>")
    return [*out, "</section>"]


def log_section(log: str, anchor_prefix: str = "art") -> list[str]:
    def image_href(url: str) -> str | None:
        m = re.fullmatch(r"artifacts/([A-Za-z0-9_-]+)\.svg", url)
        return f"#{anchor_prefix}-{m.group(1)}" if m else None

    body = render(log, image_href) if log.strip() else "<p>No research log yet.</p>"
    return ['<section id="log"><h2>Research log</h2><div class="log">', body, "</div></section>"]


def _clock(t: float | None) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S") if t is not None else "?"


def timeline_section(
    calls: list[ToolCall], events: list[Event], title: str = "Timeline"
) -> list[str]:
    """Tool calls (duration bars, errors) merged in time with the launcher's lifecycle events."""
    out = [f'<section id="timeline"><h2>{esc(title)}</h2>']
    errors = sum(1 for c in calls if c.outcome != "ok")
    total_ms = sum(c.duration_ms or 0.0 for c in calls)
    out.append(
        f"<p>{len(calls)} tool calls, {errors} failed, {total_ms / 1000:.2f} s inside tools.</p>"
    )
    rows: list[tuple[float, int, str]] = []
    longest = max((c.duration_ms or 0.0 for c in calls), default=0.0) or 1.0
    for i, c in enumerate(calls):
        width = max(1, int(160 * (c.duration_ms or 0.0) / longest))
        err = "" if c.outcome == "ok" else esc(one_line(c.error or c.outcome))
        args = one_line(c.args)
        args = args if len(args) <= 90 else args[:89] + "…"
        rows.append(
            (
                c.t or 0.0,
                i,
                f"<tr><td>{_clock(c.t)}</td><td><code>{esc(c.tool)}</code></td>"
                f'<td class="num">{"" if c.duration_ms is None else f"{c.duration_ms:.1f}"}</td>'
                f'<td><span class="bar{" err" if err else ""}" style="width:{width}px"></span></td>'
                f"<td>{badge(c.outcome)}</td><td><code>{esc(args)}</code>"
                f"{'<br><strong>error:</strong> ' + err if err else ''}</td></tr>",
            )
        )
    for j, e in enumerate(
        ev for ev in events if ev.source == "launcher" and ev.kind != "protocol_step"
    ):
        detail = ", ".join(
            f"{k}={one_line(v)}" for k, v in e.fields.items() if v not in (None, "", [], {})
        )
        detail = detail if len(detail) <= 140 else detail[:139] + "…"
        rows.append(
            (
                e.t or 0.0,
                len(calls) + j,
                f'<tr class="meta"><td>{_clock(e.t)}</td><td>{esc(e.kind)}</td>'
                f"<td></td><td></td><td></td><td>{esc(detail)}</td></tr>",
            )
        )
    rows.sort(key=lambda r: (r[0], r[1]))
    out.append(
        "<table><thead><tr><th>time (UTC)</th><th>tool / event</th><th>ms</th><th>duration</th>"
        "<th>outcome</th><th>arguments / details</th></tr></thead><tbody>"
    )
    out += [r[2] for r in rows]
    return [*out, "</tbody></table></section>"]


def header(f: Findings) -> list[str]:
    m = f.meta
    question = str(m.get("question", "")) or "(no question recorded)"
    live = " · live: this page reloads itself while the investigation runs" if f.running else ""
    return [
        f"<h1>{esc(question)}</h1>",
        f'<p class="meta">investigation <code>{esc(f.root.name)}</code> · '
        f"{badge(str(m.get('status', '?')))} · "
        f"agent {esc(str(m.get('agent')))} · run {esc(str(m.get('run')))} · executor "
        f"{esc(str(m.get('executor')))} · "
        f"created {esc(str(m.get('created', '?')))}{live}</p>",
        '<p class="meta"><a href="#answer">answer</a> · <a href="#hypotheses">hypotheses</a> · '
        '<a href="#circuits">circuits</a> · <a href="#log">research log</a> · <a '
        'href="#timeline">timeline</a></p>',
    ]


def investigation_body(f: Findings) -> list[str]:
    return [
        *header(f),
        *answer_section(f),
        *hypotheses_section(f.hypotheses),
        *circuits_section(f.artifacts),
        *log_section(f.log),
        *timeline_section(f.calls, f.events),
    ]


def investigation_html(f: Findings, refresh_s: float | None = None) -> str:
    """The page; with ``refresh_s`` it reloads itself every refresh_s seconds while the run is
    live."""
    return page(
        f"{f.root.name}: {f.meta.get('question', '')}",
        investigation_body(f),
        refresh_s if f.running else None,
    )
