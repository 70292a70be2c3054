"""Real MCP clients against the real server (`python -m spd_mcp.server --run DIR`, a tiny run on
disk).

MCP Inspector's CLI lists and calls tools over HTTP with the bearer token and is refused without
it; `claude mcp list` (the real Claude Code CLI, no key, HOME in tmp) reports the server connected
over stdio and over HTTP, and a wrong token as failed. `claude mcp list` exits 0 either way, so its
✔/✘ lines are parsed.
"""

import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.node_tools import NodeTools, isolated_env

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SERVER_ENV = {
    "OMP_NUM_THREADS": "1",
    "PYTHONPATH": str(ROOT),
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


@dataclass(frozen=True)
class Served:
    url: str
    token: str
    run: Path
    workspace: Path


@pytest.fixture(scope="module")
def served(tiny_lm_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    ws = tmp_path_factory.mktemp("real-clients") / "ws"
    ws.mkdir()
    port_file, token = ws.parent / "port", secrets.token_urlsafe(16)
    env = {**os.environ, **SERVER_ENV, "SPD_MCP_TOKEN": token}
    with (ws.parent / "server.out").open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spd_mcp.server",
                "--run",
                str(tiny_lm_run),
                "--workspace",
                str(ws),
                "--transport",
                "http",
                "--port",
                "0",
                "--port-file",
                str(port_file),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists() or not port_file.read_text().strip():
            assert proc.poll() is None and time.monotonic() < deadline, (
                ws.parent / "server.out"
            ).read_text()
            time.sleep(0.1)
        yield Served(f"http://127.0.0.1:{int(port_file.read_text())}/mcp", token, tiny_lm_run, ws)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def inspector(
    node_tools: NodeTools, served: Served, home: Path, *args: str, token: str | None = None
):
    return node_tools.inspector_cli(
        served.url,
        "--transport",
        "http",
        "--header",
        f"Authorization: Bearer {token or served.token}",
        *args,
        home=home,
    )


def test_inspector_cli_lists_and_calls_tools_over_http_with_the_token(
    node_tools: NodeTools, served: Served, tmp_path: Path
) -> None:
    listed = inspector(node_tools, served, tmp_path / "home", "--method", "tools/list")
    tools = {t["name"]: t for t in listed["tools"]}
    snapshot = json.loads((ROOT / "tests" / "server" / "tools_snapshot.json").read_text())
    assert {t["name"] for t in snapshot} <= set(tools)
    assert tools["run_prompt"]["inputSchema"]["properties"]["top_k"]["maximum"] == 100
    called = inspector(
        node_tools,
        served,
        tmp_path / "home",
        "--method",
        "tools/call",
        "--tool-name",
        "run_prompt",
        "--tool-arg",
        "text=the king said that",
        "top_k=3",
    )
    assert not called.get("isError"), called
    result = called["structuredContent"]
    assert (
        result["tokens"] == ["the", "king", "said", "that"]
        and len(result["predictions"][-1]["top"]) == 3
    )
    probs = [t["prob"] for t in result["predictions"][-1]["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    assert json.loads(called["content"][0]["text"])["tokens"] == result["tokens"]
    calls = [
        json.loads(line) for line in (served.workspace / "events.jsonl").read_text().splitlines()
    ]
    assert any(
        e.get("kind") == "tool_call" and e.get("tool") == "run_prompt" and e.get("outcome") == "ok"
        for e in calls
    )


def test_inspector_cli_without_the_right_token_is_refused(
    node_tools: NodeTools, served: Served, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [
            str(node_tools.inspector),
            "--cli",
            served.url,
            "--transport",
            "http",
            "--header",
            "Authorization: Bearer wrong",
            "--method",
            "tools/list",
        ],
        env=isolated_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0 and '"tools"' not in proc.stdout, (
        proc.returncode,
        proc.stdout,
        proc.stderr,
    )


def claude(node_tools: NodeTools, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # MCP_TIMEOUT: the stdio server imports torch and loads the run, slower than 30 s on a busy CI
    # machine
    return subprocess.run(
        [str(node_tools.claude), *args],
        env=isolated_env(home, MCP_TIMEOUT="150000"),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )


def health(listing: str) -> dict[str, str]:
    """`claude mcp list` lines `name: target - ✔ Connected` / `- ✘ Failed ...`
    as {name: 'ok'|'failed'}."""
    out = {}
    for line in listing.splitlines():
        m = re.match(r"^([\w-]+): .* - (✔|✘|✓|✗) ", line)
        if m:
            out[m.group(1)] = "ok" if m.group(2) in "✔✓" else "failed"
    return out


def test_claude_mcp_list_connects_over_stdio_and_http(
    node_tools: NodeTools, served: Served, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    isolated_env(home)
    adds = [
        (
            "--transport",
            "http",
            "spd-http",
            served.url,
            "--header",
            f"Authorization: Bearer {served.token}",
        ),
        (
            "--transport",
            "http",
            "spd-wrong-token",
            served.url,
            "--header",
            "Authorization: Bearer wrong",
        ),
        (
            "spd-stdio",
            *(a for k, v in SERVER_ENV.items() for a in ("-e", f"{k}={v}")),
            "--",
            sys.executable,
            "-m",
            "spd_mcp.server",
            "--run",
            str(served.run),
        ),
    ]
    for add in adds:
        proc = claude(node_tools, home, "mcp", "add", "--scope", "user", *add)
        assert proc.returncode == 0, proc.stderr
    proc = claude(node_tools, home, "mcp", "list")
    assert proc.returncode == 0, proc.stderr
    assert health(proc.stdout) == {
        "spd-http": "ok",
        "spd-wrong-token": "failed",
        "spd-stdio": "ok",
    }, proc.stdout
    assert "401" in proc.stdout and served.token not in proc.stdout + proc.stderr
