"""Watch investigations: list them, show one's status, follow its log and events live, print its
report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from spd_mcp.common.events import EventTail, read_events
from spd_mcp.launcher.answer import answer_lines
from spd_mcp.launcher.findings import read_findings
from spd_mcp.launcher.layout import InvestigationDir, read_json
from spd_mcp.launcher.scheduler_state import FINAL_STATUSES, reconcile
from spd_mcp.launcher.stream import Stream, cut, event_line

DONE = FINAL_STATUSES


def match_dir(
    ref: str, out_root: Path, marker: str, prefix: str, latest: str
) -> tuple[Path | None, list[str], list[str]]:
    """The directory ``ref`` names: a path holding ``marker``, or under ``out_root`` among the
    ``<prefix>-*`` ids holding it, the newest for ``latest``, else the one id containing ``ref``
    (None when none or several do); with the ids and the fragment's hits, for error messages."""
    path = Path(ref).expanduser()
    if (path / marker).is_file():
        return path.resolve(), [], []
    ids = sorted(p.name for p in out_root.glob(f"{prefix}-*") if (p / marker).is_file())
    if ref == latest and ids:
        return out_root / ids[-1], ids, []
    hits = [i for i in ids if ref in i]
    return (out_root / hits[0] if len(hits) == 1 else None), ids, hits


def find_investigation(ref: str, out_root: Path) -> InvestigationDir:
    """An investigation by path, id, unique id fragment, or `latest`; ValueError naming the
    choices."""
    found, ids, hits = match_dir(ref, out_root, "metadata.json", "inv", "latest")
    if found is not None:
        return InvestigationDir(found)
    shown = ", ".join(ids[-5:]) or "none"
    why = f"{len(hits)} match" if hits else "none matches"
    raise ValueError(
        f"investigation {ref!r}: {why} under {out_root} (latest: {shown}); "
        "give an id, a unique part of one, 'latest' or a directory"
    )


def list_investigations(out_root: Path) -> list[dict[str, Any]]:
    rows = []
    for d in sorted(out_root.glob("inv-*")):
        reconcile(InvestigationDir(d))
        meta = read_json(d / "metadata.json")
        if meta:
            rows.append(
                {
                    "id": d.name,
                    "status": meta.get("status", "?"),
                    "agent": meta.get("agent"),
                    "executor": meta.get("executor"),
                    "created": meta.get("created"),
                    "question": cut(meta.get("question", ""), 70),
                }
            )
    return rows


def status_text(inv: InvestigationDir, last_events: int = 8) -> str:
    reconcile(inv)
    meta = read_json(inv.metadata)
    lines = [
        f"investigation {inv.root.name}: {meta.get('status', '?')}",
        f"  question: {cut(meta.get('question', ''), 200)}",
        f"  agent: {meta.get('agent')} ({meta.get('agent_reason', '')}), model {meta.get('model')}",
        f"  executor: {meta.get('executor')} ({cut(meta.get('executor_reason', ''), 120)}), "
        f"job ids {meta.get('job_ids', [])}, attempts {meta.get('attempts', 0)}",
        f"  directory: {inv.root}",
    ]
    if meta.get("outcome"):
        o = meta["outcome"]
        lines.append(
            f"  outcome: {o.get('status')} turns={o.get('turns')} cost_usd={o.get('cost_usd')} "
            f"denials={o.get('denials')} error={o.get('error')}"
        )
    lines += ["  " + line for line in answer_lines(read_findings(inv), brief=True)]
    events = read_events(inv.events)[-last_events:]
    if events:
        lines.append("  last events:")
        lines += ["    " + event_line(e) for e in events]
    return "\n".join(lines)


def report_text(inv: InvestigationDir) -> str:
    """The answer in full, then where the investigation's files are."""
    f = read_findings(inv)
    question = " ".join(str(f.meta.get("question", "")).split()) or "(no question recorded)"
    title = " ".join(str(f.summary.get("title", "")).split()) or question
    parts = [
        f"# {title}",
        "",
        f"investigation {inv.root.name}: {question}",
        "",
        *answer_lines(f),
        "",
    ]
    files = [
        ("research log", inv.research_log),
        ("explanations", inv.root / "explanations.jsonl"),
        ("hypotheses", inv.root / "hypotheses.jsonl"),
    ]
    parts += [f"{name}: {path}" + ("" if path.exists() else " (none)") for name, path in files]
    parts += [f"drawing: {a.svg}" for a in f.artifacts if a.svg is not None]
    parts.append(f"html: spd-investigate report {inv.root.name} --html")
    return "\n".join(parts).rstrip() + "\n"


def is_job_end(e: dict[str, Any]) -> bool:
    return e.get("source") == "launcher" and e.get("kind") == "job_finished"


def follow(
    inv: InvestigationDir,
    out: TextIO,
    poll_s: float = 0.5,
    timeout_s: float | None = None,
    job_done: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Print the stream (stream.py) of events and research log until the job ends; its outcome."""
    events, stream = EventTail(inv.events), Stream(inv.research_log)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        finished = False
        for e in events.read():
            for line in stream.lines(e):
                out.write(line + "\n")
            finished |= is_job_end(e)
        out.flush()
        status = read_json(inv.metadata).get("status")
        ended = job_done is not None and job_done()
        if ended and not finished:
            status = reconcile(inv) or status
        if finished or status in DONE or ended:
            for e in events.read():
                for line in stream.lines(e):
                    out.write(line + "\n")
            for line in stream.finish():
                out.write(line + "\n")
            out.flush()
            return read_json(inv.metadata).get("outcome", {})
        if deadline is not None and time.monotonic() > deadline:
            return {}
        time.sleep(poll_s)
