"""The bench's bare JSON-RPC clients (bench/bench_server.py) speak the real wire protocol: over
stdio and HTTP they list the same tools as the checked-in snapshot and get server_status answers.
Timings are recorded by ``make bench``, never asserted here."""

import json
import math
from pathlib import Path

import anyio

from bench.bench_server import CALL, RawHttp, RawStdio, _Http, raw_http_overhead, raw_stdio_overhead

SNAPSHOT_NAMES = {
    t["name"] for t in json.loads((Path(__file__).with_name("tools_snapshot.json")).read_text())
}


def _names(client: RawStdio | RawHttp) -> set[str]:
    return {t["name"] for t in client.request("tools/list", {})["result"]["tools"]}


def test_bare_stdio_client_lists_the_snapshot_tools_and_calls_one() -> None:
    client = RawStdio()
    try:
        assert _names(client) == SNAPSHOT_NAMES
        result = client.request("tools/call", CALL)["result"]
        assert result["structuredContent"]["summary"], result
    finally:
        client.stop()
    assert client.proc.returncode == 0


def test_bare_http_client_lists_the_snapshot_tools_and_calls_one() -> None:
    server = _Http(None)
    try:
        client = RawHttp(server)
        assert _names(client) == SNAPSHOT_NAMES
        assert client.request("tools/call", CALL)["result"]["structuredContent"]["summary"]
    finally:
        server.stop()


def test_overhead_functions_report_every_field() -> None:
    for out in (anyio.run(raw_stdio_overhead, 3), anyio.run(raw_http_overhead, 3)):
        assert set(out) == {"ms", "server_cpu_ms", "client_cpu_ms"}
        assert all(math.isfinite(v) and v >= 0 for v in out.values()), out
