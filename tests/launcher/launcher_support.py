"""Helpers shared by the launcher tests (imported as tests.launcher.launcher_support)."""

from __future__ import annotations

import sys
from pathlib import Path

from spd_mcp.launcher.spec import Environment, JobSpec, LaunchRequest, resolve

HERE = Path(__file__).resolve().parent
STANDIN = (sys.executable, str(HERE / "standin_server.py"))


def make_spec(
    out: Path, agent: str = "anthropic_api", server_argv: tuple[str, ...] = STANDIN, **kw
) -> JobSpec:
    env = Environment(
        api_key_set=True, claude_bin=kw.pop("claude_bin", None), claude_authenticated=True
    )
    req = LaunchRequest(
        question=kw.pop("question", "How does the model choose between he and she?"),
        agent=agent,
        executor="local",
        out=str(out),
        server_argv=server_argv,
        **kw,
    )
    return resolve(req, env)
