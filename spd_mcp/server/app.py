"""Builds the MCP server "spd": its tools, the call-logging middleware and the lifespan that owns
AppState."""

import functools
import gc
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import torch
from mcp.server.mcpserver import MCPServer

from spd_core.analysis.overlay import check_edit
from spd_mcp.common.events import EventLog
from spd_mcp.contract import SERVER_NAME
from spd_mcp.server.call_log import log_tool_calls
from spd_mcp.server.device import DeviceWorker, Job
from spd_mcp.server.edits import EditEntry, edit_from_bytes
from spd_mcp.server.state import AppState, ServedRun, ServerConfig, load_served_run
from spd_mcp.server.store import Store
from spd_mcp.server.tooling import ToolSpec, build_tool
from spd_mcp.server.tools import ALL_TOOLS
from spd_mcp.server.wire_check import check_request
from spd_mcp.server.workspace import EVENTS, STORE, Workspace

log = logging.getLogger(__name__)

INSTRUCTIONS = """\
Tools over a Stochastic Parameter Decomposition (SPD) of a neural network: every weight matrix is a
sum of rank-1 components, each with a causal importance (CI) saying on which inputs it matters.
Start with get_model_info. Components are '<layer>:<c>', graph nodes '<layer>:<pos>:<c>' (output
nodes 'output:<pos>:<token id>'), positions are 0-based token indices (negative counts from the
end), a target token is exactly one token. Language models take 'text', toy models 'features'
(length input_dim). 'edit_id' runs a tool under an edit made by edit_component. Tools answer within
about a second; a long tool (a job) answers within wait_s seconds with its result or with
{job_id, status}: poll with get_job. Every field of a result is always present (null when it does
not apply). Record findings with update_research_log, record_hypothesis and save_explanation (they
need the server's --workspace)."""


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "--device cuda was asked for, but torch sees no CUDA device; use --device cpu"
            )
        return torch.device("cuda")
    return torch.device("cpu")


def _prepare_run(config: ServerConfig, run: ServedRun | None) -> ServedRun:
    """Runs on the device thread: load (if needed) and move the model to its device."""
    served = run if run is not None else load_served_run(config.run)
    served.model.to(resolve_device(config.device))
    served.model.eval()
    return served


async def open_state(config: ServerConfig, run: ServedRun | None) -> AppState:
    workspace = Workspace(config.workspace) if config.workspace is not None else None
    events_path = workspace.path(EVENTS) if workspace else None
    events = EventLog(events_path, config.agent_id, source="server")
    store = await Store.open(workspace.path(STORE) if workspace else None)
    device = DeviceWorker(short_wait_s=config.short_wait_s)
    try:
        served = await device.call("load_run", functools.partial(_prepare_run, config, run))
    except BaseException:
        await device.shutdown()
        await store.close()
        events.close()
        raise
    # The model and imports live as long as the server: keep them out of every later GC pass, so
    # collections stay short and server_status answers fast (no collect first: it costs start-up
    # time and start-up leaves little garbage). The CLI disables the GC while starting; it is on
    # from here.
    gc.freeze()
    gc.enable()
    state = AppState(
        config=config, run=served, device=device, store=store, events=events, workspace=workspace
    )
    device.on_finished = functools.partial(_job_finished, state)
    _ = state.weight_delta  # measured now, before any job can overlay an edit on the parameters
    await reload_edits(state)
    await state.run_io(
        functools.partial(
            events.emit,
            "server_start",
            run=served.name,
            transport=config.transport,
            device=state.device_name,
            layers=len(served.model.layers),
            edits=state.edits.ids(),
        )
    )
    return state


async def reload_edits(state: AppState) -> None:
    """Register the edits stored by an earlier server on this workspace, under their ids.

    An edit made on another run, or one that no longer fits the model, is skipped (server.log says
    why).
    """
    blobs = await state.store.edit_blobs()
    if not blobs:
        return
    model = state.run.model
    device = next(model.parameters()).device

    def load() -> tuple[list[EditEntry], list[str]]:
        entries, skipped = [], []
        for edit_id, blob in blobs:
            try:
                entry, run_name = edit_from_bytes(blob, device)
                if run_name != state.run.name:
                    skipped.append(
                        f"{edit_id}: made on run {run_name!r}, this is {state.run.name!r}"
                    )
                    continue
                check_edit(model, entry.edit)
            except Exception as exc:  # a damaged or foreign row must not stop the server
                skipped.append(f"{edit_id}: {type(exc).__name__}: {exc}")
                continue
            entries.append(entry)
        return entries, skipped

    entries, skipped = await state.device.call("reload_edits", load)
    for entry in entries:
        state.edits.add(entry)
    log.info("reloaded %d stored edits: %s", len(entries), ", ".join(e.edit_id for e in entries))
    for reason in skipped:
        log.warning("stored edit not reloaded: %s", reason)


async def _job_finished(state: AppState, job: Job) -> None:
    await state.run_io(
        functools.partial(
            state.events.emit,
            "job_finished",
            job_id=job.id,
            tool=job.tool,
            status=job.status,
            duration_s=round(job.elapsed_s(), 3),
            error=job.error,
        )
    )
    result = job.result if job.status == "done" and isinstance(job.result, dict) else None
    await state.store.put_job(
        job.id, job.tool, job.status, job.params, job.created, result, job.error, job.finished
    )


async def close_state(state: AppState) -> None:
    await state.device.shutdown()
    try:
        stop = functools.partial(state.events.emit, "server_stop", calls=dict(state.calls))
        await state.run_io(stop)
    finally:
        state.events.close()
        state.io.shutdown(wait=True)
        await state.store.close()


def build_server(
    config: ServerConfig, run: ServedRun | None = None, extra_tools: Sequence[ToolSpec] = ()
) -> MCPServer[AppState]:
    """The MCP server. ``run`` given: serve it (tests); else load ``config.run`` at startup."""

    @asynccontextmanager
    async def lifespan(_server: MCPServer[AppState]) -> AsyncIterator[AppState]:
        state = await open_state(config, run)
        try:
            yield state
        finally:
            await close_state(state)

    tools = [build_tool(spec) for spec in [*ALL_TOOLS, *extra_tools]]
    return MCPServer(
        SERVER_NAME,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        tools=tools,
        log_level="WARNING",
        middleware=[log_tool_calls, check_request],
    )
