"""Server benchmarks: MCP overhead per call (stdio, HTTP), start to first answered call, RSS growth.

Run: OMP_NUM_THREADS=1 python -m bench.bench_server [--calls 200] [--repeats 3] [--mixed 1000]
Prints one JSON object of medians. The server is the real CLI serving a tiny run built in code
(tests/server/serve_tiny.py); the trivial tool is server_status, so its round trip is the overhead.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "SPD_MCP_TOKEN": TOKEN}


def _args(run: str, workspace: Path | None, extra: list[str]) -> list[str]:
    ws = ["--workspace", str(workspace)] if workspace else []
    return ["-m", "tests.server.serve_tiny", run, "--device", "cpu", *ws, *extra]


async def _round_trips(client: Client, n: int) -> float:
    for _ in range(20):
        await client.call_tool("server_status", {})
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = await client.call_tool("server_status", {})
        times.append(time.perf_counter() - t0)
        assert not r.is_error
    return statistics.median(times) * 1e3


async def stdio_overhead_ms(n: int, workspace: Path | None, run: str = "toy") -> float:
    params = StdioServerParameters(command=sys.executable, args=_args(run, workspace, []), cwd=str(ROOT), env=_env())
    async with Client(params) as c:
        return await _round_trips(c, n)


class _Http:
    def __init__(self, workspace: Path | None, run: str = "toy") -> None:
        self.port_file = Path(tempfile.mkdtemp()) / "port"
        extra = ["--transport", "http", "--port", "0", "--port-file", str(self.port_file)]
        self.proc = subprocess.Popen([sys.executable, *_args(run, workspace, extra)], cwd=ROOT, env=_env())
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


async def http_overhead_ms(n: int, workspace: Path | None, run: str = "toy") -> float:
    server = _Http(workspace, run)
    try:
        async with server.client() as c:
            return await _round_trips(c, n)
    finally:
        server.stop()


async def start_to_first_call_s(run: str = "lm") -> float:
    """Spawn over stdio until the first tool call is answered (imports, model, handshake)."""
    t0 = time.perf_counter()
    params = StdioServerParameters(command=sys.executable, args=_args(run, None, []), cwd=str(ROOT), env=_env())
    async with Client(params) as c:
        r = await c.call_tool("server_status", {})
        assert not r.is_error
        return time.perf_counter() - t0


MIXED: list[tuple[str, dict[str, Any]]] = [
    ("run_prompt", {"text": "the cat sat on the", "top_k": 5}),
    ("get_model_info", {}),
    ("list_probe_prompts", {"limit": 2}),
    ("server_status", {}),
    ("update_research_log", {"markdown": "bench note"}),
    ("record_hypothesis", {"hypothesis_id": "h1", "statement": "bench"}),
    ("run_prompt", {"text": "the", "top_k": 0}),  # an error
    ("save_explanation", {"subject_prompt": "p", "behaviour": "b", "explanation": "e", "confidence": "low",
                          "components": [{"component": "0.mlp.up:1", "role": "r"}]}),
]


async def rss_growth_mb(n: int) -> dict[str, float]:
    """RSS (from server_status) after a warm-up of 100 mixed calls and after ``n`` more."""
    with tempfile.TemporaryDirectory() as ws:
        params = StdioServerParameters(command=sys.executable, args=_args("lm", Path(ws), []), cwd=str(ROOT), env=_env())
        async with Client(params) as c:
            for i in range(100):
                await c.call_tool(*MIXED[i % len(MIXED)])
            before = (await c.call_tool("server_status", {})).structured_content["rss_mb"]
            for i in range(n):
                await c.call_tool(*MIXED[i % len(MIXED)])
            after = (await c.call_tool("server_status", {})).structured_content["rss_mb"]
    return {"rss_before_mb": before, "rss_after_mb": after, "rss_growth_mb": round(after - before, 1)}


async def _bench(calls: int, repeats: int, mixed: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp)
        out["stdio_overhead_ms"] = statistics.median([await stdio_overhead_ms(calls, None) for _ in range(repeats)])
        out["stdio_overhead_with_workspace_ms"] = statistics.median(
            [await stdio_overhead_ms(calls, ws / f"s{i}") for i in range(repeats)])
        out["http_overhead_ms"] = statistics.median([await http_overhead_ms(calls, None) for _ in range(repeats)])
        out["http_overhead_with_workspace_ms"] = statistics.median(
            [await http_overhead_ms(calls, ws / f"h{i}") for i in range(repeats)])
    out["start_to_first_call_s"] = statistics.median([await start_to_first_call_s() for _ in range(repeats)])
    out.update(await rss_growth_mb(mixed))
    out["note"] = "tiny runs built in code; workspace variants fsync events.jsonl per call"
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


def bench_server(calls: int = 200, repeats: int = 3, mixed: int = 1000) -> dict[str, Any]:
    """Medians of ``repeats`` runs: overhead per call (ms) over stdio and HTTP, start time (s), RSS growth (MB)."""
    return anyio.run(_bench, calls, repeats, mixed)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--mixed", type=int, default=1000)
    a = p.parse_args()
    print(json.dumps(bench_server(a.calls, a.repeats, a.mixed), indent=1))
