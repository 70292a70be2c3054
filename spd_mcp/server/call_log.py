"""Every tool call becomes an event (events.jsonl) and a row (store): tool, arguments, duration,
outcome.

Runs as MCP server middleware, so calls rejected by the input schema or naming an unknown tool are
recorded too. The event is written (and fsynced) before the answer leaves the server.
"""

import logging
import time
from typing import Any

from spd_mcp.server.events import summarize_args
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import CallRecord, current_call

log = logging.getLogger(__name__)
MAX_ERROR_CHARS = 2000


async def log_tool_calls(ctx: Any, call_next: Any) -> Any:
    if ctx.method != "tools/call":
        return await call_next(ctx)
    state: AppState = ctx.lifespan_context
    params = ctx.params or {}
    tool = str(params.get("name", "?"))
    args = params.get("arguments") or {}
    rec = CallRecord()
    token = current_call.set(rec)
    t0 = time.perf_counter()
    outcome, error = "error", None
    try:
        res = await call_next(ctx)
        if isinstance(res, dict) and res.get("isError"):
            outcome = rec.outcome or "error"
            content = res.get("content") or [{}]
            error = str(content[0].get("text", ""))[:MAX_ERROR_CHARS]
        else:
            outcome = "ok"
        return res
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
        raise
    finally:
        current_call.reset(token)
        await record_call(state, tool, args, (time.perf_counter() - t0) * 1e3, outcome, error, rec)


async def record_call(
    state: AppState,
    tool: str,
    args: Any,
    duration_ms: float,
    outcome: str,
    error: str | None,
    rec: CallRecord,
) -> None:
    state.calls["total"] += 1
    state.calls[outcome] += 1
    args_fields = summarize_args(args)
    extra = {"job_id": rec.job_id} if rec.job_id else {}
    try:
        event = state.events.append(
            "tool_call",
            tool=tool,
            **args_fields,
            duration_ms=round(duration_ms, 3),
            outcome=outcome,
            error=error,
            **extra,
        )
        if state.events.needs_sync(event["seq"]):
            await state.run_io(state.events.sync, event["seq"])
        await state.store.add_tool_call(
            event["seq"], tool, args_fields, duration_ms, outcome, error
        )
    except Exception:  # the answer still goes out; the failure is in server.log
        log.exception("could not record tool call %s", tool)
