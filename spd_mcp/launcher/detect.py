"""Probe the machine once: is the claude CLI there and authenticated, is there an API key, does
SLURM answer."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from spd_mcp.launcher.sandbox import SandboxPaths, claude_env
from spd_mcp.launcher.spec import Environment
from spd_mcp.launcher.stream import cut

CLAUDE_BIN_ENV = "SPD_CLAUDE_BIN"
AUTH_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")


def find_claude() -> str | None:
    """$SPD_CLAUDE_BIN, else `claude` on PATH, else the project's
    .tools/node_modules/.bin/claude."""
    explicit = os.environ.get(CLAUDE_BIN_ENV)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    on_path = shutil.which("claude")
    if on_path:
        return on_path
    local = Path(__file__).resolve().parents[2] / ".tools" / "node_modules" / ".bin" / "claude"
    return str(local) if os.access(local, os.X_OK) else None


def claude_auth(claude_bin: str, timeout_s: float = 20.0) -> tuple[bool, str]:
    """Whether claude is logged in *inside the lockdown* (allowlisted env, HOME in a scratch
    dir)."""
    with tempfile.TemporaryDirectory(prefix="spd-claude-auth-") as tmp:
        paths = SandboxPaths.inside(Path(tmp))
        paths.prepare()
        try:
            proc = subprocess.run(
                [claude_bin, "auth", "status", "--json"],
                env=claude_env(paths),
                cwd=paths.cwd,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"claude auth status failed: {type(exc).__name__}"
    try:
        status = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return False, f"claude auth status gave no JSON (rc {proc.returncode})"
    if status.get("loggedIn"):
        return True, f"auth {status.get('authMethod')} via {status.get('apiKeySource', 'login')}"
    return False, (
        "claude is not authenticated for headless use "
        "(set ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN)"
    )


def slurm_answers(timeout_s: float = 15.0) -> tuple[bool, str]:
    """True when sbatch is on PATH and the controller answers `sinfo`."""
    if shutil.which("sbatch") is None:
        return False, "no sbatch on PATH"
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-o", "%P"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"sinfo failed: {type(exc).__name__}"
    if proc.returncode != 0:
        return False, f"sinfo rc {proc.returncode}: {last_error(proc.stderr)}"
    parts = ",".join(proc.stdout.split())
    return True, f"partitions {parts or '(none listed)'}"


def last_error(stderr: str, limit: int = 100) -> str:
    """A failing SLURM client's last message on one short line (its stderr runs to several lines,
    each `sinfo: error: ...`; the last, often `fatal`, says what went wrong)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return "no message"
    return cut(re.sub(r"^\w+: (error|fatal): ", "", lines[-1]), limit)


def probe(agent_choice: str, executor_choice: str) -> Environment:
    """Probe only what the choices need (a forced choice still needs its own facts)."""
    claude_bin = claude_ok = None
    claude_note = ""
    if agent_choice in ("auto", "claude_code"):
        claude_bin = find_claude()
        if claude_bin is None:
            claude_note = "claude CLI not found"
        else:
            claude_ok, claude_note = claude_auth(claude_bin)
    slurm_ok, slurm_note = False, "not probed"
    if executor_choice in ("auto", "slurm"):
        slurm_ok, slurm_note = slurm_answers()
    return Environment(
        claude_bin=claude_bin,
        claude_authenticated=bool(claude_ok),
        claude_note=claude_note,
        api_key_set=bool(os.environ.get("ANTHROPIC_API_KEY")),
        slurm_available=slurm_ok,
        slurm_note=slurm_note,
    )
