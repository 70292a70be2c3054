"""Golden files for the Claude Code lockdown: argv, environment allowlist, mcp_config.json."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from golden import check_golden

from spd_mcp.contract import TOOL_NAMES
from spd_mcp.launcher.sandbox import (
    ENV_FIXED,
    SandboxPaths,
    allowed_tool_names,
    claude_argv,
    claude_env,
    mcp_config,
    write_private_json,
)

INV = Path("/INV")


def test_claude_argv_matches_golden() -> None:
    argv = claude_argv(
        claude_bin="claude",
        kickoff="<KICKOFF>",
        system_prompt_file=INV / "agent_prompt.md",
        mcp_config_file=INV / "mcp_config.json",
        tools=list(TOOL_NAMES),
        max_turns=50,
        budget_usd=10.0,
        model="opus",
    )
    check_golden("claude_argv", argv)
    allowed = argv[argv.index("--allowedTools") + 1].split(",")
    assert allowed == sorted(f"mcp__spd__{t}" for t in TOOL_NAMES)
    assert not any("*" in a for a in argv), "no wildcard may reach the command line"
    assert "dontAsk" not in argv and "--dangerously-skip-permissions" not in argv
    assert argv[argv.index("--tools") + 1] == "" and argv[argv.index("--setting-sources") + 1] == ""


def test_claude_env_is_an_allowlist() -> None:
    source = {
        "ANTHROPIC_API_KEY": "sk-secret",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "LANG": "C.UTF-8",
        "HOME": "/home/user",
        "PATH": "/evil:/usr/bin",
        "AWS_SECRET_ACCESS_KEY": "x",
        "PYTHONPATH": "/x",
        "LD_PRELOAD": "/x.so",
        "CLAUDE_CONFIG_DIR": "/home/user/.claude",
        "SSH_AUTH_SOCK": "/tmp/agent",
    }
    env = claude_env(SandboxPaths.inside(INV), source)
    shown = {k: ("<secret>" if k == "ANTHROPIC_API_KEY" else v) for k, v in env.items()}
    check_golden("claude_env", shown)
    assert (
        env["HOME"] == "/INV/agent/home" and env["CLAUDE_CONFIG_DIR"] == "/INV/agent/home/.claude"
    )
    for leaked in ("AWS_SECRET_ACCESS_KEY", "PYTHONPATH", "LD_PRELOAD", "SSH_AUTH_SOCK"):
        assert leaked not in env
    assert env["PATH"] == ENV_FIXED["PATH"]


def test_mcp_config_matches_golden_and_is_private(tmp_path: Path) -> None:
    cfg = mcp_config("http://127.0.0.1:PORT/mcp", "TOKEN")
    check_golden("mcp_config", cfg)
    assert list(cfg["mcpServers"]) == ["spd"]
    path = tmp_path / "mcp_config.json"
    write_private_json(path, cfg)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == cfg
    write_private_json(path, mcp_config("http://127.0.0.1:1/mcp", "T2"))  # rewrite on resume
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("bad", [["mcp__spd__*"], ["get_ci", "a*"], ["x y"], ["a,b"], []])
def test_allowed_tools_reject_wildcards_and_empty(bad: list[str]) -> None:
    with pytest.raises(AssertionError):
        allowed_tool_names(bad)


def test_sandbox_cwd_must_be_empty(tmp_path: Path) -> None:
    paths = SandboxPaths.inside(tmp_path)
    paths.prepare()
    (paths.cwd / "stray.txt").write_text("x")
    with pytest.raises(AssertionError, match="must be empty"):
        paths.prepare()


def test_golden_mismatch_says_how_to_regenerate() -> None:
    with pytest.raises(AssertionError, match="delete .* to regenerate"):
        check_golden("mcp_config", {"mcpServers": {}})
