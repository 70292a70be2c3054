"""The pinned node MCP clients (Claude Code, MCP Inspector) from scripts/install_node_tools.sh, as
fixtures.

They live in `.tools/node_modules/.bin` (`make node-tools`), or under `SPD_MCP_TOOLS_DIR`. When they
are missing, tests using them skip, or fail when `SPD_MCP_REQUIRE_NODE_TOOLS` is set (CI). The
pinned versions are read from the install script, the single place they are written.
"""

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.requirements import unavailable

REPO = Path(__file__).resolve().parents[2]
INSTALL_SCRIPT = REPO / "scripts" / "install_node_tools.sh"
REQUIRE_ENV = "SPD_MCP_REQUIRE_NODE_TOOLS"
DIR_ENV = "SPD_MCP_TOOLS_DIR"


def pinned_versions() -> dict[str, str]:
    """{"claude-code": ..., "inspector": ...} as pinned in scripts/install_node_tools.sh."""
    text = INSTALL_SCRIPT.read_text()
    pins = {
        name: re.search(rf"^{var}=(\S+)$", text, flags=re.M)
        for name, var in (
            ("claude-code", "CLAUDE_CODE_VERSION"),
            ("inspector", "INSPECTOR_VERSION"),
        )
    }
    missing = [name for name, match in pins.items() if match is None]
    assert not missing, (
        f"{INSTALL_SCRIPT} must define CLAUDE_CODE_VERSION= and INSPECTOR_VERSION= lines"
    )
    return {name: match.group(1) for name, match in pins.items() if match is not None}


def tools_dir() -> Path:
    """Where the node tools are installed: $SPD_MCP_TOOLS_DIR or <repo>/.tools."""
    return Path(os.environ.get(DIR_ENV) or REPO / ".tools").resolve()


def isolated_env(home: Path, **extra: str) -> dict[str, str]:
    """A minimal environment for the node tools: PATH (with node), HOME and Claude's config dir in
    `home`, no telemetry or update checks. Nothing else of os.environ leaks in (no API keys)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "CLAUDE_CONFIG_DIR": str(home / ".claude"),
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "NO_COLOR": "1",
    }
    return env | extra


@dataclass(frozen=True)
class NodeTools:
    """Paths of the installed CLIs and their pinned versions."""

    claude: Path
    inspector: Path
    claude_version: str
    inspector_version: str

    def inspector_cli(self, *args: str, home: Path, timeout: float = 60) -> Any:
        """Runs `mcp-inspector --cli ARGS` and returns its JSON output; asserts exit status 0."""
        proc = subprocess.run(
            [str(self.inspector), "--cli", *args],
            env=isolated_env(home),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, (
            f"mcp-inspector --cli {' '.join(args)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-2000:]}"
        )
        return json.loads(proc.stdout)


@pytest.fixture(scope="session")
def node_tools() -> NodeTools:
    """The pinned Claude Code and MCP Inspector CLIs; skips (or fails, see module docstring) if
    absent."""
    bin_dir = tools_dir() / "node_modules" / ".bin"
    pins = pinned_versions()
    claude, inspector = bin_dir / "claude", bin_dir / "mcp-inspector"
    missing = [p.name for p in (claude, inspector) if not os.access(p, os.X_OK)]
    if missing:
        unavailable(
            REQUIRE_ENV, f"{', '.join(missing)} not installed in {bin_dir} (`make node-tools`)"
        )
    if shutil.which("node") is None:
        unavailable(REQUIRE_ENV, "node is not on PATH (the Inspector CLI runs on node)")
    return NodeTools(
        claude=claude,
        inspector=inspector,
        claude_version=pins["claude-code"],
        inspector_version=pins["inspector"],
    )
