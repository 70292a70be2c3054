"""What an investigation found, read from its files: the one place the report, status and the HTML
page read an investigation from.

Sources: summary.json, explanations.jsonl, hypotheses.jsonl (every version; the last one of an id
counts), research_log.md, events.jsonl, store.sqlite's `tool_calls` table and artifacts/ (graph
drawings and their JSON, whose `promotes` maps '<layer>:<c>' to the token a component promotes
most). Nothing here assumes which fields an explanation carries beyond the server's contract: the
numbers it holds are collected generically (`numbers`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spd_mcp.common.events import read_events
from spd_mcp.launcher.layout import InvestigationDir, read_json
from spd_mcp.launcher.scheduler_state import FINAL_STATUSES

# Fields of an explanation that are prose or structure, not evidence numbers.
PROSE = frozenset(
    {
        "subject_prompt",
        "behaviour",
        "explanation",
        "components",
        "alternatives",
        "limitations",
        "ts",
        "agent",
        "confidence",
        "evidence",
    }
)


@dataclass(frozen=True)
class Event:
    """One line of events.jsonl, launcher or server, in one shape."""

    t: float | None  # unix seconds
    source: str  # "launcher" or "server"
    kind: str
    agent: str
    fields: dict[str, Any]


def read_event_lines(path: Path) -> list[Event]:
    """Every event of an events.jsonl in one shape, through the one reader (spd_mcp.common.events,
    which also takes the older launcher and server lines); torn or foreign lines skipped."""
    if not path.exists():
        return []
    skip = {"schema", "seq", "ts", "t", "agent_id", "source", "kind"}
    return [
        Event(
            _float(e.get("t")),
            str(e.get("source") or "launcher"),
            str(e["kind"]),
            str(e.get("agent_id") or ""),
            {k: v for k, v in e.items() if k not in skip},
        )
        for e in read_events(path)
    ]


def _float(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


@dataclass(frozen=True)
class ToolCall:
    t: float | None
    tool: str
    args: str
    duration_ms: float | None
    outcome: str
    error: str | None


@dataclass(frozen=True)
class Hypothesis:
    id: str
    statement: str
    status: str
    evidence: list[str]
    versions: int
    history: list[str]  # statuses, first to last


@dataclass(frozen=True)
class Artifact:
    id: str
    caption: str
    svg: Path | None
    data: dict[str, Any]


@dataclass
class Findings:
    root: Path
    meta: dict[str, Any]
    summary: dict[str, Any]
    explanations: list[dict[str, Any]]
    hypotheses: list[Hypothesis]
    log: str
    events: list[Event]
    calls: list[ToolCall]
    artifacts: list[Artifact]
    promotes: dict[str, str | None] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.meta.get("status") not in FINAL_STATUSES


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def latest_hypotheses(rows: list[dict[str, Any]]) -> list[Hypothesis]:
    """The last version of each hypothesis id, in order of first appearance, with its status
    history."""
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_id.setdefault(str(r.get("id", "?")), []).append(r)
    out = []
    for hid, versions in by_id.items():
        last = versions[-1]
        evidence = [str(e) for v in versions for e in (v.get("evidence") or [])]
        out.append(
            Hypothesis(
                hid,
                str(last.get("statement", "")),
                str(last.get("status", "?")),
                list(dict.fromkeys(evidence)),
                len(versions),
                [str(v.get("status", "?")) for v in versions],
            )
        )
    return out


def tool_calls(root: Path, events: list[Event]) -> list[ToolCall]:
    """The server's tool calls: store.sqlite's tool_calls table, or the tool_call events without
    it."""
    db = root / "store.sqlite"
    if db.exists():
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
            try:
                rows = con.execute(
                    "SELECT created, tool, args, duration_ms, outcome, error FROM tool_calls "
                    "ORDER BY id"
                ).fetchall()
            finally:
                con.close()
            return [
                ToolCall(_float(c), str(t), str(a), _float(d), str(o), e)
                for c, t, a, d, o, e in rows
            ]
        except sqlite3.Error:
            pass
    return [
        ToolCall(
            e.t,
            str(e.fields.get("tool", "?")),
            json.dumps(e.fields.get("args", {}), default=str),
            _float(e.fields.get("duration_ms")),
            str(e.fields.get("outcome", "?")),
            e.fields.get("error"),
        )
        for e in events
        if e.kind == "tool_call"
    ]


def artifacts(root: Path) -> list[Artifact]:
    out = []
    folder = root / "artifacts"
    for js in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        data = read_json(js)
        svg = js.with_suffix(".svg")
        out.append(
            Artifact(js.stem, str(data.get("caption", "")), svg if svg.is_file() else None, data)
        )
    return out


def read_findings(inv: InvestigationDir) -> Findings:
    events = read_event_lines(inv.events)
    arts = artifacts(inv.root)
    promotes: dict[str, str | None] = {}
    for a in arts:
        promotes.update(a.data.get("promotes") or {})
    return Findings(
        root=inv.root,
        meta=read_json(inv.metadata),
        summary=read_json(inv.summary),
        explanations=read_jsonl(inv.root / "explanations.jsonl"),
        hypotheses=latest_hypotheses(read_jsonl(inv.root / "hypotheses.jsonl")),
        log=inv.research_log.read_text(errors="replace") if inv.research_log.exists() else "",
        events=events,
        calls=tool_calls(inv.root, events),
        artifacts=arts,
        promotes=promotes,
    )


def fmt_number(x: float | int) -> str:
    if isinstance(x, int):
        return str(x)
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def _is_num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def numbers(obj: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every number in ``obj`` as (dotted name, text): below the top level, a dict or list of
    numbers alone (a value with its interval, say) is one entry, ``a=1, b=2`` or ``[1, 2]``; prose
    is skipped."""
    if _is_num(obj):
        yield prefix or "value", fmt_number(obj)
    elif isinstance(obj, dict):
        if prefix and obj and all(_is_num(v) for v in obj.values()):
            yield prefix or "values", ", ".join(f"{k}={fmt_number(v)}" for k, v in obj.items())
            return
        for k, v in obj.items():
            yield from numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list | tuple):
        if obj and all(_is_num(v) for v in obj):
            yield prefix or "values", "[" + ", ".join(fmt_number(v) for v in obj) + "]"
            return
        for i, v in enumerate(obj):
            yield from numbers(v, f"{prefix}[{_item_name(v) or i}]")


def _item_name(item: Any) -> str | None:
    """What names a list item: its 'regime', 'name', 'kind', 'mode' or 'id' string, if any."""
    if isinstance(item, dict):
        for key in ("regime", "name", "kind", "mode", "id"):
            if isinstance(item.get(key), str) and item[key]:
                return item[key]
    return None


def evidence_numbers(explanation: dict[str, Any]) -> list[tuple[str, str]]:
    """The numbers an explanation carries outside its prose fields, plus those inside its evidence
    items (each item's own number fields, named by its kind)."""
    out = [kv for k, v in explanation.items() if k not in PROSE for kv in numbers(v, k)]
    for i, ev in enumerate(explanation.get("evidence") or []):
        if isinstance(ev, dict):
            name = str(ev.get("kind") or f"evidence[{i}]")
            out += [
                (f"{name}.{k}", v)
                for k, v in numbers(
                    {k: x for k, x in ev.items() if k not in ("kind", "description", "reference")}
                )
            ]
    return out


def evidence_texts(explanation: dict[str, Any]) -> list[str]:
    out = []
    for ev in explanation.get("evidence") or []:
        if isinstance(ev, dict):
            ref = f" ({ev['reference']})" if ev.get("reference") else ""
            out.append(f"{ev.get('kind', 'evidence')}: {ev.get('description', '')}{ref}")
        else:
            out.append(str(ev))
    return out


def caveats(f: Findings) -> list[str]:
    """Explanations the server judged unvalidated, refuted or inconclusive, the limitations they
    state, refuted or inconclusive hypotheses, tool errors, and a run that ended without a
    summary."""
    out = [
        f"explanation {i} ({one_line(e.get('behaviour', '?'))[:80]}) is {e['status']}"
        + (f": {'; '.join(map(str, e['verdict']))}" if isinstance(e.get("verdict"), list) else "")
        for i, e in enumerate(f.explanations, 1)
        if e.get("status") in ("unvalidated", "refuted", "inconclusive")
    ]
    out += [str(x) for e in f.explanations for x in (e.get("limitations") or [])]
    out += [
        f"hypothesis {h.id} is {h.status}: {h.statement}"
        for h in f.hypotheses
        if h.status in ("refuted", "inconclusive")
    ]
    errors = [c for c in f.calls if c.outcome != "ok"]
    if errors:
        out.append(
            f"{len(errors)} of {len(f.calls)} tool calls failed (first: {errors[0].tool}: "
            f"{one_line(errors[0].error or errors[0].outcome)[:160]})"
        )
    if not f.summary:
        out.append("no summary.json: the agent has not stated a conclusion (yet)")
    if not f.explanations:
        out.append("no explanation saved: no circuit is claimed")
    return list(dict.fromkeys(out))


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def verdict_lines(explanation: dict[str, Any]) -> list[str]:
    """The explanation's own verdict (status and reasons, where the server judged it) and each cited
    validation's short verdicts (``necessity holds`` ...) with its summary."""
    out = []
    if explanation.get("status"):
        reasons = explanation.get("verdict") or []
        why = "; ".join(str(r) for r in reasons) if isinstance(reasons, list) else str(reasons)
        out.append(f"status {explanation['status']}" + (f" ({why})" if why else ""))
    for v in explanation.get("validations") or []:
        if not isinstance(v, dict):
            continue
        short = [
            f"{k} {x}"
            for k, x in v.items()
            if isinstance(x, str) and len(x) <= 24 and k not in ("behaviour", "summary")
        ]
        summary = f": {one_line(v['summary'])}" if v.get("summary") else ""
        out.append(
            f"validation {v.get('validation_id', '?')}: "
            f"{', '.join(short) or 'no verdicts'}{summary}"
        )
    return out
