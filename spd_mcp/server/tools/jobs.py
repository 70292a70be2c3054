"""Jobs and status: get_job, cancel_job, server_status; and ``run_as_job`` for long tools.

A long tool calls ``run_as_job(state, ctx, tool, fn, finish, wait_s, params)`` where
``fn(progress)`` is the core function (``progress(step, total, message)`` also raises once the job
is cancelled) and ``finish(raw)`` turns its raw result into the tool's pydantic result (it may use
the store).
"""

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.mcpserver import Context
from pydantic import BaseModel

from spd_mcp.contract import jobs as contract
from spd_mcp.contract.jobs import CancelJobInput, GetJobInput, ServerStatus, StatusInput
from spd_mcp.contract.wire import MAX_WAIT_S, JobBrief, JobView
from spd_mcp.server.device import Job, Progress
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import bind, current_call

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def job_view(job: Job) -> JobView:
    result = job.result if job.status == "done" and isinstance(job.result, dict) else None
    if job.status == "done":
        summary = (result or {}).get("summary") or (
            f"job {job.id} ({job.tool}) finished in {job.elapsed_s():.1f} s"
        )
    elif job.status in ("queued", "running"):
        of = f" of {job.total:g}" if job.total else ""
        summary = (
            f"job {job.id} ({job.tool}) is {job.status} after {job.elapsed_s():.1f} s, "
            f"at step {job.step:g}{of}"
            f"{' (' + job.message + ')' if job.message else ''}; "
            f"call get_job(job_id='{job.id}', wait_s=30) to wait for it"
        )
    else:
        summary = f"job {job.id} ({job.tool}) {job.status}: {job.error}"
    return JobView(
        job_id=job.id, tool=job.tool, status=job.status, step=job.step, total=job.total,
        message=job.message, elapsed_s=round(job.elapsed_s(), 3), result=result, error=job.error,
        summary=summary,
    )


def job_brief(job: Job) -> JobBrief:
    return JobBrief(
        job_id=job.id, kind=job.kind, tool=job.tool, status=job.status, step=job.step,
        total=job.total, message=job.message, elapsed_s=round(job.elapsed_s(), 3),
    )


def _reporter(ctx: Context) -> Callable[[float, float | None, str], Awaitable[None]]:
    async def report(step: float, total: float | None, message: str) -> None:
        await ctx.report_progress(step, total, message or None)

    return report


async def run_as_job(
    state: AppState,
    ctx: Context,
    tool: str,
    fn: Callable[[Progress], Any],
    finish: Callable[[Any], Awaitable[BaseModel]],
    wait_s: float,
    params: dict[str, Any] | None = None,
) -> JobView:
    """Queue ``fn`` on the device as a job; wait up to ``wait_s`` with MCP progress; return its
    view."""

    async def finish_dump(raw: Any) -> dict[str, Any]:
        return (await finish(raw)).model_dump(mode="json")

    job = state.device.submit(tool, fn, params, finish_dump)
    rec = current_call.get()
    if rec is not None:
        rec.job_id = job.id
    await state.device.wait(job, min(wait_s, MAX_WAIT_S), _reporter(ctx))
    if job.status == "error" and job.exception is not None:
        raise job.exception
    return job_view(job)


# --- get_job --------------------------------------------------------------------------------------


async def get_job(state: AppState, inp: GetJobInput, ctx: Context) -> JobView:
    job = state.device.job(inp.job_id)
    if job is None:
        row = await state.store.get_job(inp.job_id)
        if row is not None:
            return JobView(
                job_id=row["id"], tool=row["tool"], status=row["status"], step=0, total=None,
                message="", elapsed_s=round((row["finished"] or time.time()) - row["created"], 3),
                result=row["result"], error=row["error"],
                summary=f"job {row['id']} ({row['tool']}) {row['status']} (from the store)",
            )
        known = ", ".join(j.id for j in state.device.recent_jobs(10)) or "none yet"
        raise ValueError(f"unknown job_id {inp.job_id!r}; recent jobs: {known}")
    await state.device.wait(job, inp.wait_s, _reporter(ctx))
    if job.status == "error" and job.exception is not None:
        raise ValueError(f"job {job.id} ({job.tool}) failed: {job.exception}")
    return job_view(job)


# --- cancel_job -----------------------------------------------------------------------------------


async def cancel_job(state: AppState, inp: CancelJobInput, ctx: Context) -> JobView:
    job = state.device.job(inp.job_id)
    if job is None:
        known = ", ".join(j.id for j in state.device.recent_jobs(10)) or "none yet"
        raise ValueError(f"unknown job_id {inp.job_id!r}; recent jobs: {known}")
    note = state.device.cancel(job)
    await state.device.wait(job, 0.5)
    view = job_view(job)
    return view.model_copy(update={"summary": f"{note}. {view.summary}"})


# --- server_status --------------------------------------------------------------------------------


def rss_mb() -> float:
    """Resident memory from /proc/self/statm (one short line; cheap enough for every status
    call)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_BYTES / 2**20
    except (OSError, IndexError, ValueError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def server_status(state: AppState, inp: StatusInput, ctx: Context) -> ServerStatus:
    cur = state.device.current()
    queue = state.device.queued()
    served = state.calls["total"]
    busy = f"running {cur.describe()}" if cur else "idle"
    dev = state.device_name
    return ServerStatus(
        summary=f"Serving run {state.run.name!r} on {dev}; device {busy}; {len(queue)} queued; "
        f"{served} calls served.",
        run=state.run.name,
        device=dev,
        uptime_s=round(time.time() - state.started, 3),
        calls_served=served,
        calls_by_outcome={k: v for k, v in state.calls.items() if k != "total"},
        current=job_brief(cur) if cur else None,
        queue=[job_brief(j) for j in queue],
        recent_jobs=[job_brief(j) for j in state.device.recent_jobs(5)],
        rss_mb=round(rss_mb(), 1),
        workspace=str(state.workspace.root) if state.workspace else None,
        events_logged=state.events.seq,
    )


TOOLS = bind(
    contract.TOOLS, get_job=get_job, cancel_job=cancel_job, server_status=server_status,
)
