"""The lockdown of a headless Claude Code agent: argv, environment, config dir and MCP config.

What the lockdown covers (checked against claude 2.1.330 with a scripted fake API, see
tests/launcher/test_launcher_claude_real.py):
- Built-in tools are removed (`--tools ""`): Bash, Read, Write, Edit, WebFetch, WebSearch, Task and
  the rest answer "No such tool available" (they are absent, so they show up as tool errors in the
  stream, not in `permission_denials`).
- Only our server is loaded (`--mcp-config` + `--strict-mcp-config`); tools of any other server are
  absent the same way.
- Every one of our tools is allowed by its full name (`mcp__spd__<tool>`); no wildcard and no
  `dontAsk` (both have open bugs that deny everything), never a bypass mode. A tool of our server
  that is not listed is denied and appears in `permission_denials`.
- No user, project or local settings, hooks or plugins (`--setting-sources ""`), no skills or slash
  commands (`--disable-slash-commands`), HOME and CLAUDE_CONFIG_DIR inside the investigation
  directory (so `~/.claude` of the user is not read), an empty working directory, stdin closed.
- The environment is built from an allowlist (credentials, API base URL, proxies, locale), not
  copied from `os.environ`; telemetry, auto-update and non-essential traffic are off.

What it does NOT cover:
- It is not an OS sandbox: the claude process runs as the user, with the user's file permissions
  and network. A bug in Claude Code that ignores `--tools ""` would not be stopped by anything here.
- The network is not isolated: claude talks to the API endpoint (and whatever it decides to
  contact); our MCP server listens on 127.0.0.1 with a bearer token, which other local users'
  processes can still reach if they learn the token.
- Managed (enterprise/policy) settings of the machine still apply, by Claude Code's design.
- What the agent writes through our tools is bounded by the server (it writes only inside the
  investigation directory), not by this module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from spd_mcp.contract import SERVER_NAME, claude_tool_name

# Variables copied from the launcher's environment when set (credentials, endpoint, proxies,
# locale).
ENV_PASSTHROUGH: tuple[str, ...] = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "NODE_EXTRA_CA_CERTS",
    "LANG",
    "TZ",
)
# Variables always set to these values.
ENV_FIXED: dict[str, str] = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "ENABLE_TOOL_SEARCH": "false",  # every MCP tool in the request, none deferred behind ToolSearch
    "MCP_TIMEOUT": "60000",
    "MCP_TOOL_TIMEOUT": "120000",
}


@dataclass(frozen=True)
class SandboxPaths:
    """Where the locked-down claude lives inside an investigation directory."""

    home: Path
    config_dir: Path
    cwd: Path
    tmp: Path

    @classmethod
    def inside(cls, inv_dir: Path) -> SandboxPaths:
        home = inv_dir / "agent" / "home"
        return cls(
            home=home, config_dir=home / ".claude", cwd=inv_dir / "agent" / "cwd", tmp=home / "tmp"
        )

    def prepare(self) -> None:
        """Create the directories; the working directory must be empty."""
        for d in (self.home, self.config_dir, self.cwd, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        leftovers = sorted(p.name for p in self.cwd.iterdir())
        assert not leftovers, f"agent working directory {self.cwd} must be empty, holds {leftovers}"


def claude_env(paths: SandboxPaths, source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of the claude process: allowlisted variables plus fixed ones."""
    source = os.environ if source is None else source
    env = {k: source[k] for k in ENV_PASSTHROUGH if source.get(k)}
    env.update(ENV_FIXED)
    env.update(HOME=str(paths.home), CLAUDE_CONFIG_DIR=str(paths.config_dir), TMPDIR=str(paths.tmp))
    return env


def allowed_tool_names(tools: Sequence[str], server: str = SERVER_NAME) -> list[str]:
    """Full Claude Code names of our server's tools, sorted; rejects anything wildcard-like."""
    bad = [t for t in tools if not t or any(ch in t for ch in "*?(), ")]
    assert not bad, f"tool names must be plain MCP names (no wildcards, spaces or commas): {bad}"
    assert tools, "the server listed no tools: an agent with no allowed tool cannot investigate"
    return sorted(claude_tool_name(t, server) for t in set(tools))


def claude_argv(
    *,
    claude_bin: str,
    kickoff: str,
    system_prompt_file: Path,
    mcp_config_file: Path,
    tools: Sequence[str],
    max_turns: int,
    budget_usd: float,
    model: str,
) -> list[str]:
    """The exact command line of a locked-down headless claude run."""
    return [
        claude_bin,
        "-p",
        kickoff,
        "--output-format",
        "stream-json",
        "--verbose",
        "--max-turns",
        str(max_turns),
        "--max-budget-usd",
        f"{budget_usd:g}",
        "--model",
        model,
        "--system-prompt-file",
        str(system_prompt_file),
        "--mcp-config",
        str(mcp_config_file),
        "--strict-mcp-config",
        "--tools",
        "",
        "--allowedTools",
        ",".join(allowed_tool_names(tools)),
        "--setting-sources",
        "",
        "--disable-slash-commands",
        "--no-session-persistence",
    ]


def mcp_config(url: str, token: str, server: str = SERVER_NAME) -> dict[str, object]:
    """An MCP config naming exactly one HTTP server, with its bearer token."""
    return {
        "mcpServers": {
            server: {"type": "http", "url": url, "headers": {"Authorization": f"Bearer {token}"}}
        }
    }


def write_private_json(path: Path, obj: object) -> None:
    """Write JSON readable by the owner only (mode 0600 from creation), replacing atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    tmp.replace(path)
