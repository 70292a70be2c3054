"""The job body, the same on SLURM and locally: server up, agent run, server down, records kept.

`run_job` creates or reuses the investigation directory, starts the server and waits until it
answers MCP, writes mcp_config.json (0600), renders the prompt, runs the agent while its transcript
streams to agent_transcript.jsonl, and in every case stops the server, writes the lifecycle events
and leaves a summary.json. A restarted job (preemption, time-out) finds the directory and hands the
agent the research log so far.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import anyio

from spd_mcp.common.events import EventLog
from spd_mcp.contract.model import ModelInfo
from spd_mcp.launcher import mcp_link
from spd_mcp.launcher.agents import AgentContext, AgentResult, TranscriptWriter, run_agent
from spd_mcp.launcher.layout import (
    InvestigationDir,
    init_metadata,
    now_iso,
    read_json,
    record_job_id,
    update_json,
    write_json_atomic,
)
from spd_mcp.launcher.prompting import render_kickoff, render_swarm_context, render_system_prompt
from spd_mcp.launcher.sandbox import mcp_config, write_private_json
from spd_mcp.launcher.server_proc import (
    ServerProcess,
    log_tail,
    server_argv,
    start_server,
    stop_server,
    wait_for_port,
)
from spd_mcp.launcher.spec import JobSpec

# Set by the checkpoint handler (submit.py): the job is being requeued, not finished.
PREEMPTED = threading.Event()
# Set on SIGTERM (scancel, or a local kill) unless preempted: the job is being cancelled.
TERMINATED = threading.Event()


def _on_sigterm(signum: int, frame: object) -> None:
    # Like submitit's own handler it does not exit (SLURM's SIGKILL follows); the job records why it
    # ends.
    TERMINATED.set()


def _catch_sigterm() -> object | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _on_sigterm)


def fetch_model_info(url: str, token: str, tools: list[mcp_link.ToolInfo]) -> ModelInfo | None:
    """get_model_info's answer as the contract's ModelInfo, or None if the server has no such tool,
    the call fails or its answer is not a ModelInfo."""
    if "get_model_info" not in {t.name for t in tools}:
        return None

    async def call() -> ModelInfo | None:
        async with mcp_link.connect(url, token, read_timeout_s=120.0) as client:
            res = await client.call_tool("get_model_info", {})
            return None if res.is_error else ModelInfo.model_validate(res.structured_content)

    try:
        return anyio.run(call)
    except Exception:
        return None


def ensure_summary(
    spec: JobSpec, inv: InvestigationDir, result: AgentResult | None, error: str | None
) -> bool:
    """Write summary.json if the agent did not; True if the launcher wrote it."""
    if inv.summary.exists():
        return False
    if result is None:
        text = f"The investigation did not run: {error}"
    else:
        text = (
            f"The agent ({spec.agent}) ended with status '{result.status}' after {result.turns} "
            f"turns and {result.model_tool_calls} calls to model tools without writing a summary"
            + (f"; error: {result.error}" if result.error else "")
            + ". See research_log.md and agent_transcript.jsonl."
        )
    write_json_atomic(
        inv.summary,
        {
            "title": spec.question.splitlines()[0][:120],
            "summary": text,
            "status": "inconclusive",
            "written_by": "launcher",
        },
    )
    return True


def run_job(spec: JobSpec, job_id: str) -> dict[str, Any]:
    """The whole job; returns the outcome (also recorded in events.jsonl and metadata.json)."""
    inv = InvestigationDir(Path(spec.inv_dir))
    init_metadata(spec, inv)
    meta = update_json(
        inv.metadata,
        lambda m: m.update(attempts=m.get("attempts", 0) + 1, status="running", started=now_iso()),
    )
    record_job_id(inv, job_id)
    resumed = meta["attempts"] > 1
    events = EventLog(inv.events, spec.inv_id, source="launcher")
    events.emit(
        "job_resumed" if resumed else "job_started",
        job_id=job_id,
        attempt=meta["attempts"],
        agent=spec.agent,
        executor=spec.executor,
        pid=os.getpid(),
        host=socket.gethostname(),
    )
    t0 = time.monotonic()
    TERMINATED.clear()
    previous_handler = _catch_sigterm()
    server: ServerProcess | None = None
    result: AgentResult | None = None
    error: str | None = None
    ready = False
    try:
        server = start_server(
            server_argv(spec.run, inv.root, inv.port_file, spec.server_argv),
            inv.server_log,
            inv.port_file,
        )
        events.emit("server_started", pid=server.proc.pid)
        wait_for_port(server, spec.server_start_timeout_s)
        tools = mcp_link.wait_until_answers(
            server.url,
            server.token,
            server.proc,
            timeout_s=max(1.0, spec.server_start_timeout_s - (time.monotonic() - t0)),
            log_hint=f"; server.log ends with:\n{log_tail(inv.server_log)}",
        )
        events.emit(
            "server_ready",
            port=server.port,
            tools=[t.name for t in tools],
            boot_s=round(time.monotonic() - t0, 2),
        )
        ready = True
        write_private_json(inv.mcp_config, mcp_config(server.url, server.token))
        system_prompt = render_system_prompt(
            question=spec.question,
            model_info=fetch_model_info(server.url, server.token, tools),
            tools=tools,
            max_turns=spec.max_turns,
            inv_id=spec.inv_id,
            run=spec.run,
            agent=spec.agent,
            started=now_iso(),
            swarm_context=render_swarm_context(
                swarm_id=spec.swarm_id,
                task_index=spec.task_index,
                hypothesis=spec.hypothesis,
                strategy=spec.strategy,
            ),
        )
        inv.prompt.write_text(system_prompt)
        log = inv.research_log.read_text() if inv.research_log.exists() else ""
        kickoff = render_kickoff(log if resumed else None)
        transcript = TranscriptWriter(inv.transcript)
        try:
            result = run_agent(
                AgentContext(
                    spec=spec,
                    inv=inv,
                    url=server.url,
                    token=server.token,
                    tools=tools,
                    system_prompt=system_prompt,
                    kickoff=kickoff,
                    events=events,
                    transcript=transcript,
                )
            )
        finally:
            transcript.close()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        events.emit("agent_failed" if ready else "server_failed", error=error[:4000])
    finally:
        if server is not None:
            events.emit("server_stopped", returncode=stop_server(server, spec.server_stop_grace_s))
    if previous_handler is not None:
        signal.signal(signal.SIGTERM, previous_handler)  # type: ignore[arg-type]
    if PREEMPTED.is_set():
        return {"status": "preempted", "job_id": job_id}
    cancelled = TERMINATED.is_set()
    if cancelled:
        events.emit(
            "job_cancelled",
            job_id=job_id,
            signal="SIGTERM",
            note="the job was terminated (scancel or a kill) before the investigation finished",
        )
        error = "cancelled: the job received SIGTERM (scancel or a kill)" + (
            f"; {error}" if error else ""
        )
    if result is not None:
        events.emit("agent_finished", **result.as_event())
        if result.status == "no_model_tool_called":
            events.emit(
                "no_model_tool_called",
                turns=result.turns,
                note="the agent never called a tool that looks at the model",
            )
    wrote = ensure_summary(spec, inv, result, error)
    status = "cancelled" if cancelled else result.status if result is not None else "failed"
    outcome = {
        "status": status,
        "ok": bool(result and result.ok) and not cancelled,
        "job_id": job_id,
        "turns": result.turns if result else 0,
        "cost_usd": result.cost_usd if result else None,
        "denials": len(result.denials) if result else 0,
        "error": error or (result and result.error),
        "summary_written_by_launcher": wrote,
        "elapsed_s": round(time.monotonic() - t0, 2),
    }
    # metadata first: a follower that sees job_finished reads the outcome from metadata.json
    update_json(
        inv.metadata, lambda m: m.update(status=status, finished=now_iso(), outcome=outcome)
    )
    events.emit("job_finished", **outcome)
    events.close()
    return outcome


def load_outcome(inv: InvestigationDir) -> dict[str, Any]:
    return read_json(inv.metadata).get("outcome", {})
