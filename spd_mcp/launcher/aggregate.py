"""The aggregation job of a swarm: read every task, re-test every claim on a fresh server, write the
report.

Runs after the tasks end however they ended (SLURM `afterany`; locally after the pool). It starts
its own server with `aggregate/` as the workspace (its events.jsonl records every tool call
server-side), re-tests the claims through retest.py (each call and full result in
`aggregate/tool_calls.jsonl`), grades each claim with `python -m spd_core.grader` as a subprocess
(recorded there too, tool `spd_core.grader`), and writes swarm_summary.json and swarm_report.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from spd_mcp.common.events import EventLog
from spd_mcp.launcher import mcp_link
from spd_mcp.launcher.findings import read_jsonl
from spd_mcp.launcher.layout import now_iso, write_json_atomic
from spd_mcp.launcher.retest import Recorder, Retest, all_probe_prompts, retest_claim
from spd_mcp.launcher.server_proc import (
    log_tail,
    server_argv,
    start_server,
    stop_server,
    wait_for_port,
)
from spd_mcp.launcher.swarm import SwarmDir, SwarmSpec, record_swarm
from spd_mcp.launcher.swarm_claims import Claim, claims_of, read_task
from spd_mcp.launcher.swarm_report import build_summary, render_report

GRADER_MAX_PROBES = 10
GRADER_TIMEOUT_S = 600.0
GRADER_TOOL = "spd_core.grader"


async def _retest_all(
    url: str, token: str, claims: list[Claim], path: Path, events: EventLog
) -> dict[str, Retest]:
    out: dict[str, Retest] = {}
    async with mcp_link.connect(url, token) as client:
        rec = Recorder(client, path)
        probes = await all_probe_prompts(rec)
        for c in claims:
            try:
                out[c.claim_id] = await retest_claim(rec, c, probes)
            except (
                Exception
            ) as exc:  # one claim's failure (e.g. an unknown component) spares the others
                out[c.claim_id] = Retest(
                    c.claim_id, None, None, error=f"{type(exc).__name__}: {exc}"[:600]
                )
            rt = out[c.claim_id]
            events.emit(
                "claim_retested",
                claim=c.claim_id,
                mechanism=rt.mechanism,
                verified_effect=rt.scores.get("verified_effect"),
                error=rt.error,
            )
    return out


def grade(
    spec: SwarmSpec, sd: SwarmDir, claims: list[Claim], retests: dict[str, Retest], events: EventLog
) -> tuple[dict[str, dict[str, Any]], str]:
    """Grader scores per claim (one recorded subprocess call), and a note saying what was graded."""
    todo = [c for c in claims if retests.get(c.claim_id) and retests[c.claim_id].mechanism]
    if not todo:
        return {}, "no claim with a known mechanism to grade"
    request = [
        {"mechanism": retests[c.claim_id].mechanism, "components": list(c.components)} for c in todo
    ]
    req_path = sd.aggregate / "grader_request.json"
    req_path.write_text(json.dumps(request, indent=1))
    argv = [
        sys.executable,
        "-m",
        GRADER_TOOL,
        "--run",
        spec.run,
        "--claims",
        str(req_path),
        "--max-probes",
        str(GRADER_MAX_PROBES),
    ]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=GRADER_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        result: Any = json.loads(proc.stdout) if proc.returncode == 0 else None
        error = None if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr[-800:]}"
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
        result, error = None, f"{type(exc).__name__}: {exc}"[:800]
    rec = Recorder(None, sd.tool_calls)
    call = rec.record(
        GRADER_TOOL,
        {"argv": argv[1:], "claims": request},
        result if error is None else {"error": error},
        error is not None,
    )
    events.emit(
        "grader_scored",
        call=call,
        claims=len(todo),
        error=error,
        elapsed_s=round(time.monotonic() - t0, 2),
    )
    if error is not None or not isinstance(result, list) or len(result) != len(todo):
        return {}, f"the grader failed (call {call}): {error or 'unexpected output'}"
    note = (
        f"python -m {GRADER_TOOL} on the first {GRADER_MAX_PROBES} probe prompts of every "
        f"mechanism (call {call})"
    )
    return {
        c.claim_id: {"call": call, "scores": g} for c, g in zip(todo, result, strict=True)
    }, note


def run_aggregate(spec: SwarmSpec, job_id: str) -> dict[str, Any]:
    """The whole aggregation; its outcome (also in swarm.json and aggregate/events.jsonl)."""
    sd = SwarmDir(Path(spec.swarm_dir))
    sd.aggregate.mkdir(parents=True, exist_ok=True)
    sd.tool_calls.unlink(missing_ok=True)  # a re-run measures afresh
    events = EventLog(
        sd.aggregate / "events.jsonl", f"{spec.swarm_id}-aggregate", source="launcher"
    )
    record_swarm(sd, status="aggregating", job_ids={"aggregate": job_id})
    t0 = time.monotonic()
    tasks = [read_task(t, sd.submitit) for t in spec.tasks]
    claims = [c for t in tasks for c in claims_of(t)]
    events.emit(
        "aggregate_started",
        job_id=job_id,
        tasks=len(tasks),
        ok=sum(t.ok for t in tasks),
        claims=len(claims),
        pid=os.getpid(),
    )
    retests: dict[str, Retest] = {}
    error = None
    server = None
    try:
        if claims:
            port_file = sd.aggregate / "server.port"
            server = start_server(
                server_argv(spec.run, sd.aggregate, port_file),
                sd.aggregate / "server.log",
                port_file,
            )
            events.emit("server_started", pid=server.proc.pid)
            wait_for_port(server, spec.aggregate_start_timeout_s)
            mcp_link.wait_until_answers(
                server.url,
                server.token,
                server.proc,
                timeout_s=spec.aggregate_start_timeout_s,
                log_hint=f"; server.log ends with:\n{log_tail(server.log_path)}",
            )
            events.emit("server_ready", port=server.port, boot_s=round(time.monotonic() - t0, 2))
            retests = anyio.run(
                _retest_all, server.url, server.token, claims, sd.tool_calls, events
            )
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"[:2000]
        events.emit("aggregate_failed", error=error)
    finally:
        if server is not None:
            events.emit("server_stopped", returncode=stop_server(server))
    grades, grader_note = grade(spec, sd, claims, retests, events) if not error else ({}, "not run")
    calls = read_jsonl(sd.tool_calls)
    head = {
        "swarm_id": spec.swarm_id,
        "question": spec.question,
        "run": spec.run,
        "agent": spec.agent,
        "executor": spec.executor,
        "source": spec.source,
        "generated": now_iso(),
        "aggregate_job_id": job_id,
        "aggregate_error": error,
    }
    summary = build_summary(
        head=head,
        tasks=tasks,
        claims=claims,
        retests=retests,
        grades=grades,
        grader_note=grader_note,
        tool_calls={
            "file": "aggregate/tool_calls.jsonl",
            "count": len(calls),
            "by_tool": dict(Counter(c["tool"] for c in calls)),
        },
    )
    write_json_atomic(sd.summary, summary)
    sd.report.write_text(render_report(summary))
    status = "failed" if error else "completed"
    outcome = {
        "status": status,
        "tasks": len(tasks),
        "ok_tasks": summary["n_ok"],
        "claims": len(claims),
        "error": error,
        "elapsed_s": round(time.monotonic() - t0, 2),
    }
    record_swarm(sd, status=status, finished=now_iso(), outcome=outcome)
    events.emit("aggregate_finished", **outcome)
    events.close()
    return outcome
