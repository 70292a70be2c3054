"""Fixtures for launcher tests: the stand-in MCP server's command and specs that point at it."""

from __future__ import annotations

import pytest

from tests.launcher.launcher_support import HERE, STANDIN, make_spec  # noqa: F401  (re-exported)


@pytest.fixture
def api_env(monkeypatch: pytest.MonkeyPatch):
    """Point the anthropic package (and claude) at a fake API URL with a dummy key."""

    def point(url: str) -> None:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-dummy")

    return point


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory):
    """A running stand-in server (one per test module); yields (ServerProcess, tools, workspace)."""
    from spd_mcp.launcher.mcp_link import wait_until_answers
    from spd_mcp.launcher.server_proc import server_argv, start_server, stop_server, wait_for_port

    inv = tmp_path_factory.mktemp("standin")
    server = start_server(
        server_argv("demo", inv, inv / "server.port", STANDIN),
        inv / "server.log",
        inv / "server.port",
    )
    try:
        wait_for_port(server, 60)
        tools = wait_until_answers(server.url, server.token, server.proc, timeout_s=60)
        yield server, tools, inv
    finally:
        stop_server(server, grace_s=5)
