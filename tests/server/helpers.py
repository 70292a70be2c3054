"""Shared test helpers: building servers, calling tools, and a long sleep-with-progress job tool."""

import json
import threading
import time
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.server.mcpserver import Context
from pydantic import Field

from spd_mcp.contract.wire import JobView, LongInput, Wire
from spd_mcp.server.app import build_server
from spd_mcp.server.state import AppState, ServedRun, ServerConfig
from spd_mcp.server.tooling import ToolSpec
from spd_mcp.server.tools.jobs import run_as_job


class SleepInput(LongInput):
    seconds: float = Field(1.0, ge=0, le=30, description="total sleep")
    steps: int = Field(10, ge=1, le=1000, description="progress steps")


class SleepResult(Wire):
    summary: str
    steps_done: int
    thread: str


DEVICE_LOG: list[
    tuple[str, str, float, float]
] = []  # (what, thread, start, end) of device work in tests
_lock = threading.Lock()


def sleep_with_progress(seconds: float, steps: int, progress: Any) -> tuple[int, str]:
    start = time.monotonic()
    for i in range(steps):
        time.sleep(seconds / steps)
        progress(i + 1, steps, f"slept {i + 1}/{steps}")
    with _lock:
        DEVICE_LOG.append(("sleep", threading.current_thread().name, start, time.monotonic()))
    return steps, threading.current_thread().name


async def sleep_job(state: AppState, inp: SleepInput, ctx: Context) -> JobView:
    async def finish(raw: tuple[int, str]) -> SleepResult:
        return SleepResult(
            summary=f"slept {inp.seconds} s in {raw[0]} steps", steps_done=raw[0], thread=raw[1]
        )

    return await run_as_job(
        state,
        ctx,
        "sleep_job",
        lambda progress: sleep_with_progress(inp.seconds, inp.steps, progress),
        finish,
        inp.wait_s,
        inp.model_dump(),
    )


SLEEP_TOOL = ToolSpec(
    name="sleep_job",
    title="Sleep (test)",
    description="A long test job: sleeps with progress.",
    input_model=SleepInput,
    result_model=JobView,
    handler=sleep_job,
    read_only=True,
)


def make_server(
    run: ServedRun, workspace: Path | None = None, sleep_tool: bool = False, **config: Any
):
    cfg = ServerConfig(run="test", workspace=workspace, device="cpu", **config)
    return build_server(cfg, run, extra_tools=[SLEEP_TOOL] if sleep_tool else [])


async def ok(
    client: Client, name: str, args: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    r = await client.call_tool(name, args or {}, **kw)
    assert not r.is_error, f"{name}({args}) failed: {r.content[0].text if r.content else r}"
    assert r.structured_content is not None
    return r.structured_content


async def err(client: Client, name: str, args: dict[str, Any] | None = None) -> str:
    r = await client.call_tool(name, args or {})
    assert r.is_error, (
        f"{name}({args}) should fail but returned {json.dumps(r.structured_content)[:300]}"
    )
    return r.content[0].text


async def raw_request(client: Client, method: str, params: Any) -> dict[str, Any]:
    """A JSON-RPC request as the SDK client sends it (with its per-request stamp) but with any
    params: its typed methods check arguments before sending, so they cannot send what a fuzzer
    needs to."""
    session = client.session
    data: dict[str, Any] = {"method": method, "params": params}
    opts: dict[str, Any] = {}
    if isinstance(params, dict):
        try:
            session._stamp(data, opts)  # noqa: SLF001 (the protocol version and client info the server expects)
        except (
            UnicodeEncodeError
        ):  # a lone surrogate in the tool name cannot go into the Mcp-Name header
            opts = {}
    return await session._dispatcher.send_raw_request(method, data["params"], opts)  # noqa: SLF001
