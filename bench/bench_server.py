"""Server benchmarks: MCP overhead per call (stdio, HTTP), start to first answered call, RSS growth.

Run: OMP_NUM_THREADS=1 python -m bench.bench_server [--calls 200] [--repeats 3] [--mixed 1000]
Prints one JSON object of medians. The server is the real CLI serving a tiny run built in code
(tests/server/serve_tiny.py); the trivial tool is server_status, so its round trip is the overhead.
Each transport is timed twice: through the SDK's ``Client`` (what an agent's Python client pays,
its own CPU included) and through a bare JSON-RPC client (``RawStdio`` / ``RawHttp``: one JSON line
on a pipe, one keep-alive HTTP POST), whose round trip is the server's overhead plus the wire.
Start-up is measured on the shipped demo run through the real CLI, up to its first answered
run_prompt.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.types import LATEST_PROTOCOL_VERSION

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "SPD_MCP_TOKEN": TOKEN}


def _args(run: str, workspace: Path | None, extra: list[str]) -> list[str]:
    ws = ["--workspace", str(workspace)] if workspace else []
    return ["-m", "tests.server.serve_tiny", run, "--device", "cpu", *ws, *extra]


def _cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def _children() -> set[int]:
    """Pids of this process's children (Linux /proc; empty elsewhere)."""
    out = set()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                out.add(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    return out


async def _round_trips(
    call: Callable[[], Awaitable[object]], n: int, server_pid: int | None
) -> dict[str, float]:
    """Median round trip of ``call`` (ms) after 20 warm-up calls, and CPU per call (ms) of the
    server and of this client."""
    for _ in range(20):
        await call()
    times = []
    server0, client0 = _cpu_s(server_pid), time.process_time()
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        times.append(time.perf_counter() - t0)
    server_cpu, client_cpu = _cpu_s(server_pid) - server0, time.process_time() - client0
    return {
        "ms": statistics.median(times) * 1e3,
        "server_cpu_ms": server_cpu / n * 1e3,
        "client_cpu_ms": client_cpu / n * 1e3,
    }


async def _sdk_status(client: Client) -> None:
    r = await client.call_tool("server_status", {})
    assert not r.is_error


async def stdio_overhead(n: int, workspace: Path | None, run: str = "toy") -> dict[str, float]:
    params = StdioServerParameters(
        command=sys.executable, args=_args(run, workspace, []), cwd=str(ROOT), env=_env()
    )
    before = _children()
    async with Client(params) as c:
        new = _children() - before
        return await _round_trips(lambda: _sdk_status(c), n, max(new) if new else None)


class _Http:
    def __init__(self, workspace: Path | None, run: str = "toy") -> None:
        self.port_file = Path(tempfile.mkdtemp()) / "port"
        extra = ["--transport", "http", "--port", "0", "--port-file", str(self.port_file)]
        self.proc = subprocess.Popen(
            [sys.executable, *_args(run, workspace, extra)], cwd=ROOT, env=_env()
        )
        while not self.port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError("HTTP server exited before serving")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{int(self.port_file.read_text())}/mcp"

    def client(self) -> Client:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        return Client(streamable_http_client(self.url, http_client=http))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


async def http_overhead(n: int, workspace: Path | None, run: str = "toy") -> dict[str, float]:
    server = _Http(workspace, run)
    try:
        async with server.client() as c:
            return await _round_trips(lambda: _sdk_status(c), n, server.proc.pid)
    finally:
        server.stop()


DEMO_PROBES = ROOT / "spd_core" / "demo_run" / "prompts.jsonl"


async def start_to_first_call_s(run: str = "demo") -> float:
    """Spawn the real CLI (``spd-mcp-server --run demo``) over stdio until its first run_prompt is
    answered.

    run_prompt on the run's first probe prompt needs the loaded model and tokenizer (a forward
    pass), so this covers imports, loading the run, the MCP handshake and one real call.
    """
    text = json.loads(DEMO_PROBES.read_text().splitlines()[0])["text"]
    t0 = time.perf_counter()
    args = ["-m", "spd_mcp.server", "--run", run, "--device", "cpu"]
    params = StdioServerParameters(command=sys.executable, args=args, cwd=str(ROOT), env=_env())
    async with Client(params) as c:
        r = await c.call_tool("run_prompt", {"text": text, "top_k": 5})
        assert not r.is_error, r.content
        return time.perf_counter() - t0


MIXED: list[tuple[str, dict[str, Any]]] = [
    ("run_prompt", {"text": "the cat sat on the", "top_k": 5}),
    ("get_model_info", {}),
    ("list_probe_prompts", {"limit": 2}),
    ("server_status", {}),
    ("update_research_log", {"markdown": "bench note"}),
    ("record_hypothesis", {"hypothesis_id": "h1", "statement": "bench"}),
    ("run_prompt", {"text": "the", "top_k": 0}),  # an error
    (
        "save_explanation",
        {
            "subject_prompt": "p",
            "behaviour": "b",
            "explanation": "e",
            "confidence": "low",
            "components": [{"component": "0.mlp.up:1", "role": "r"}],
        },
    ),
]


async def rss_growth_mb(n: int) -> dict[str, float]:
    """RSS (from server_status) after a warm-up of 100 mixed calls and after ``n`` more."""
    with tempfile.TemporaryDirectory() as ws:
        params = StdioServerParameters(
            command=sys.executable, args=_args("lm", Path(ws), []), cwd=str(ROOT), env=_env()
        )
        async with Client(params) as c:
            for i in range(100):
                await c.call_tool(*MIXED[i % len(MIXED)])
            before = (await c.call_tool("server_status", {})).structured_content["rss_mb"]
            for i in range(n):
                await c.call_tool(*MIXED[i % len(MIXED)])
            after = (await c.call_tool("server_status", {})).structured_content["rss_mb"]
    return {
        "rss_before_mb": before,
        "rss_after_mb": after,
        "rss_growth_mb": round(after - before, 1),
    }


INIT = {
    "protocolVersion": LATEST_PROTOCOL_VERSION,
    "capabilities": {},
    "clientInfo": {"name": "bench-raw", "version": "0"},
}
CALL = {"name": "server_status", "arguments": {}}


def _check(reply: dict[str, Any], rid: int) -> None:
    assert reply.get("id") == rid and "result" in reply and not reply["result"].get("isError"), (
        reply
    )


class RawStdio:
    """A bare JSON-RPC client on the server's stdin/stdout: one JSON line out, one back."""

    def __init__(self, run: str = "toy") -> None:
        self.proc = subprocess.Popen([sys.executable, *_args(run, None, [])], cwd=ROOT, env=_env(),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        self.next_id = 0
        self.request("initialize", INIT)
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _send(self, msg: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg).encode() + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdout is not None
        self.next_id += 1
        self._send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        while True:  # skip notifications (logging, progress) until our reply
            reply = json.loads(self.proc.stdout.readline())
            if "id" in reply:
                _check(reply, self.next_id)
                return reply

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)


class RawHttp:
    """A bare JSON-RPC client over one keep-alive HTTP connection to the streamable-HTTP
    endpoint."""

    def __init__(self, server: "_Http") -> None:
        self.port = int(server.port_file.read_text())
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        self.headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
                        "Accept": "application/json, text/event-stream"}  # fmt: skip
        self.next_id = 0
        self.request("initialize", INIT)
        self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def _post(self, msg: dict[str, Any]) -> tuple[http.client.HTTPResponse, bytes]:
        self.conn.request("POST", "/mcp", body=json.dumps(msg), headers=self.headers)
        resp = self.conn.getresponse()
        body = resp.read()
        assert resp.status < 300, (resp.status, body[:300])
        if sid := resp.getheader("mcp-session-id"):
            self.headers["mcp-session-id"] = sid
        return resp, body

    def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        resp, body = self._post(
            {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        )
        if (resp.getheader("content-type") or "").startswith("text/event-stream"):
            datas = [
                line[5:].strip() for line in body.decode().splitlines() if line.startswith("data:")
            ]
            replies = [json.loads(d) for d in datas if d]
            reply = next(r for r in replies if "id" in r)
        else:
            reply = json.loads(body)
        _check(reply, self.next_id)
        return reply


def _tools_call(client: RawStdio | RawHttp) -> Callable[[], Awaitable[None]]:
    """One bare ``tools/call`` of ``CALL`` as a coroutine, for ``_round_trips``."""

    async def call() -> None:
        client.request("tools/call", CALL)

    return call


async def raw_stdio_overhead(n: int) -> dict[str, float]:
    client = RawStdio()
    try:
        return await _round_trips(_tools_call(client), n, client.proc.pid)
    finally:
        client.stop()


async def raw_http_overhead(n: int) -> dict[str, float]:
    server = _Http(None)
    try:
        return await _round_trips(_tools_call(RawHttp(server)), n, server.proc.pid)
    finally:
        server.stop()


def _medians(runs: list[dict[str, float]], prefix: str) -> dict[str, float]:
    keys = {"ms": "overhead_ms", "server_cpu_ms": "server_cpu_ms", "client_cpu_ms": "client_cpu_ms"}
    return {f"{prefix}_{name}": statistics.median(r[k] for r in runs) for k, name in keys.items()}


async def _bench(calls: int, repeats: int, mixed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        out |= _medians([await stdio_overhead(calls, None) for _ in range(repeats)], "stdio")
        out["stdio_overhead_with_workspace_ms"] = statistics.median(
            [(await stdio_overhead(calls, ws / f"s{i}"))["ms"] for i in range(repeats)]
        )
        out |= _medians([await http_overhead(calls, None) for _ in range(repeats)], "http")
        out |= _medians([await raw_stdio_overhead(calls) for _ in range(repeats)], "raw_stdio")
        out |= _medians([await raw_http_overhead(calls) for _ in range(repeats)], "raw_http")
        out["http_overhead_with_workspace_ms"] = statistics.median(
            [(await http_overhead(calls, ws / f"h{i}"))["ms"] for i in range(repeats)]
        )
    out["start_to_first_call_s"] = statistics.median(
        [await start_to_first_call_s() for _ in range(repeats)]
    )
    out.update(await rss_growth_mb(mixed))
    out["note"] = (
        "overheads: server_status on a tiny run built in code (cpu_ms: CPU per call of the server "
        "process and of the client); stdio_/http_: the SDK Client, raw_stdio_/raw_http_: a bare "
        "JSON-RPC client (one JSON line; one keep-alive POST); workspace variants fsync "
        "events.jsonl per call; start: "
        "`spd-mcp-server --run demo` over stdio to its first answered run_prompt"
    )
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def bench_server(calls: int = 200, repeats: int = 3, mixed: int = 1000) -> dict[str, Any]:
    """Medians of ``repeats`` runs: overhead per call (ms) over stdio and HTTP, start time (s), RSS
    growth (MB)."""
    return anyio.run(_bench, calls, repeats, mixed)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mixed", type=int, default=1000)
    a = p.parse_args()
    print(json.dumps(bench_server(a.calls, a.repeats, a.mixed), indent=1))
