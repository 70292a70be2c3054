"""The pinned Claude Code CLI runs, and MCP Inspector's CLI lists and calls tools of a stdio MCP
server."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.node_tools import NodeTools, isolated_env

pytestmark = pytest.mark.slow

TINY_SERVER = textwrap.dedent(
    '''
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("tiny", log_level="WARNING")


    @server.tool()
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b


    @server.tool()
    def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()


    if __name__ == "__main__":
        server.run()
    '''
)


@pytest.fixture
def tiny_server(tmp_path: Path) -> list[str]:
    path = tmp_path / "tiny_server.py"
    path.write_text(TINY_SERVER)
    return [sys.executable, str(path)]


def test_claude_version_is_the_pinned_one(node_tools: NodeTools, tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(node_tools.claude), "--version"],
        env=isolated_env(tmp_path / "home"),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == node_tools.claude_version


def test_inspector_cli_lists_the_tools_of_a_stdio_server(
    node_tools: NodeTools, tiny_server: list[str], tmp_path: Path
) -> None:
    listed = node_tools.inspector_cli(
        *tiny_server, "--method", "tools/list", home=tmp_path / "home"
    )
    tools = {tool["name"]: tool for tool in listed["tools"]}
    assert set(tools) == {"multiply", "shout"}
    assert tools["multiply"]["inputSchema"]["required"] == ["a", "b"]
    assert tools["shout"]["description"] == "Upper-case a text."


def test_inspector_cli_calls_a_tool(
    node_tools: NodeTools, tiny_server: list[str], tmp_path: Path
) -> None:
    called = node_tools.inspector_cli(
        *tiny_server,
        "--method",
        "tools/call",
        "--tool-name",
        "multiply",
        "--tool-arg",
        "a=6",
        "b=7",
        home=tmp_path / "home",
    )
    assert called["isError"] is False
    assert called["structuredContent"] == {"result": 6 * 7}
