"""Watch swarms: find one, every task's status at a glance, follow it until the report, print the
report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from spd_mcp.common.events import EventTail, read_events
from spd_mcp.launcher.answer import swarm_answer_lines
from spd_mcp.launcher.layout import InvestigationDir, now_iso, read_json, update_json
from spd_mcp.launcher.scheduler_state import ended_status, reconcile, sacct_state
from spd_mcp.launcher.stream import cut, event_line
from spd_mcp.launcher.swarm import SwarmDir
from spd_mcp.launcher.watch import match_dir

SWARM_DONE = frozenset({"completed", "failed"})


def find_swarm(ref: str, out_root: Path) -> SwarmDir | None:
    """The swarm a reference names (path, id or unique id fragment), or None if it names no
    swarm."""
    found, _, _ = match_dir(ref, out_root, "swarm.json", "swarm", "latest-swarm")
    return None if found is None else SwarmDir(found)


def list_swarms(out_root: Path) -> list[dict[str, Any]]:
    rows = []
    for d in sorted(out_root.glob("swarm-*")):
        meta = read_json(d / "swarm.json")
        if meta:
            rows.append(
                {
                    "id": d.name,
                    "status": meta.get("status", "?"),
                    "tasks": len(meta.get("tasks", [])),
                    "executor": meta.get("executor"),
                    "question": cut(meta.get("question", ""), 70),
                }
            )
    return rows


def reconcile_aggregate(sd: SwarmDir) -> None:
    """Record a SLURM aggregation job that the scheduler ended before it wrote its outcome."""
    meta = read_json(sd.meta)
    job = (meta.get("job_ids") or {}).get("aggregate")
    if meta.get("executor") != "slurm" or meta.get("status") in SWARM_DONE or not job:
        return
    state = sacct_state(str(job))
    if ended_status(state) is None:
        return

    def mark(m: dict[str, Any]) -> None:
        if m.get("status") not in SWARM_DONE:
            m.update(
                status="failed",
                finished=now_iso(),
                outcome={
                    "status": "failed",
                    "error": f"SLURM ended aggregation job {job}: {state}",
                },
            )

    update_json(sd.meta, mark)


def task_rows(sd: SwarmDir) -> list[dict[str, Any]]:
    rows = []
    for t in read_json(sd.meta).get("tasks", []):
        inv = InvestigationDir(Path(t["inv_dir"]))
        reconcile(inv)
        meta = read_json(inv.metadata)
        events = read_events(inv.events)
        steps = [e for e in events if e["kind"] == "protocol_step" and e.get("step") != "log"]
        tool_calls = sum(1 for e in events if e["source"] == "server" and e["kind"] == "tool_call")
        rows.append(
            {
                "index": t["index"],
                "inv_id": t["inv_id"],
                "status": meta.get("status", "?"),
                "job_ids": meta.get("job_ids", []),
                "strategy": t.get("strategy"),
                "hypothesis": t.get("hypothesis"),
                "tool_calls": tool_calls,
                "last_step": steps[-1]["step"] if steps else None,
                "error": (meta.get("outcome") or {}).get("error"),
            }
        )
    return rows


def swarm_status_text(sd: SwarmDir) -> str:
    reconcile_aggregate(sd)
    meta = read_json(sd.meta)
    lines = [
        f"swarm {sd.root.name}: {meta.get('status', '?')}",
        f"  question: {cut(meta.get('question', ''), 200)}",
        f"  {len(meta.get('tasks', []))} tasks ({meta.get('source')}), agent {meta.get('agent')}, "
        f"executor {meta.get('executor')}, {meta.get('parallelism')} at once, job ids "
        f"{meta.get('job_ids', {})}",
        f"  directory: {sd.root}",
        "  tasks:",
    ]
    for r in task_rows(sd):
        what = r["hypothesis"] or r["strategy"]
        err = f"  error: {cut(r['error'], 160)}" if r["error"] else ""
        lines.append(
            f"    t{r['index']:02d} {r['inv_id']}  {r['status']:<12} jobs {r['job_ids']} "
            f"calls {r['tool_calls']:<3} last step {r['last_step'] or '-'}  [{what}]{err}"
        )
    outcome = meta.get("outcome")
    if outcome:
        lines.append(
            f"  aggregation: {outcome.get('status')} ({outcome.get('claims')} claims from "
            f"{outcome.get('ok_tasks')} of {outcome.get('tasks')} tasks) "
            f"error={outcome.get('error')}"
        )
    lines += ["  " + line for line in swarm_answer_lines(read_json(sd.summary))]
    if sd.report.exists():
        lines.append(f"  report: {sd.report} (html: spd-investigate report {sd.root.name} --html)")
    return "\n".join(lines)


def swarm_report_text(sd: SwarmDir) -> str:
    if sd.report.exists():
        return "\n".join(swarm_answer_lines(read_json(sd.summary))) + "\n\n" + sd.report.read_text()
    return (
        swarm_status_text(sd)
        + "\n  (no report yet: the aggregation writes it when every task has ended)\n"
    )


def follow_swarm(
    sd: SwarmDir,
    out: TextIO,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
    job_done: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Print each task's status changes and the aggregation's events until the swarm ends; its
    outcome."""
    seen: dict[int, str] = {}
    agg = EventTail(sd.aggregate / "events.jsonl")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        for r in task_rows(sd):
            if seen.get(r["index"]) != r["status"]:
                seen[r["index"]] = r["status"]
                out.write(
                    f"t{r['index']:02d} {r['inv_id']}: {r['status']}"
                    + (f" ({cut(r['error'], 300)})" if r["error"] else "")
                    + "\n"
                )
        for e in agg.read():
            if e["source"] == "launcher":
                out.write("aggregate " + event_line(e) + "\n")
        out.flush()
        reconcile_aggregate(sd)
        meta = read_json(sd.meta)
        ended = job_done is not None and job_done()
        if meta.get("status") in SWARM_DONE or ended:
            return meta.get("outcome") or {
                "status": meta.get("status"),
                "error": "the swarm's job ended early",
            }
        if deadline is not None and time.monotonic() > deadline:
            return {}
        time.sleep(poll_s)


def summary_line(sd: SwarmDir) -> str:
    s = read_json(sd.summary)
    if not s:
        return "no swarm_summary.json"
    top = s["claims"][0] if s.get("claims") else None
    best = (
        f"; best claim {top['claim_id']} effect {json.dumps(top['scores'].get('verified_effect'))}"
        if top
        else ""
    )
    return f"{s['n_ok']}/{s['n_tasks']} tasks finished, {len(s['claims'])} claims{best}"
