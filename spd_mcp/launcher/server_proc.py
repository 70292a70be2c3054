"""Start the MCP server as a child process, learn its port, and always stop it.

The server binds 127.0.0.1 on a port it picks (port 0) and writes that port to a file; the token
reaches it through the environment (SPD_MCP_TOKEN), never the command line. Its stdout and stderr
go to a log file, so no pipe can fill up and block it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TOKEN_ENV = "SPD_MCP_TOKEN"
SERVER_MODULE = "spd_mcp.server"


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    token: str
    log_path: Path
    port_file: Path
    port: int | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "the server's port is not known yet: call wait_for_port first"
        return f"http://127.0.0.1:{self.port}/mcp"


def server_argv(
    run: str, workspace: Path, port_file: Path, prefix: Sequence[str] | None = None
) -> list[str]:
    """The server's command line (the real server unless a test gives another `prefix`)."""
    head = list(prefix) if prefix else [sys.executable, "-m", SERVER_MODULE]
    return head + [
        "--run",
        run,
        "--workspace",
        str(workspace),
        "--transport",
        "http",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--port-file",
        str(port_file),
    ]


def log_tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty log)"


def start_server(argv: Sequence[str], log_path: Path, port_file: Path) -> ServerProcess:
    """Spawn the server with a fresh random token; output appended to `log_path`."""
    port_file.unlink(missing_ok=True)
    token = secrets.token_urlsafe(32)
    env = dict(os.environ)
    env[TOKEN_ENV] = token
    with log_path.open("ab") as log:
        log.write(
            f"\n=== launcher: starting server {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n".encode()
        )
        log.flush()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    return ServerProcess(proc=proc, token=token, log_path=log_path, port_file=port_file)


def wait_for_port(server: ServerProcess, timeout_s: float) -> int:
    """The port from the port file, once written; raises RuntimeError if the server dies or
    stalls."""
    deadline = time.monotonic() + timeout_s
    while True:
        if server.port_file.exists():
            text = server.port_file.read_text().strip()
            if text.isdigit() and 0 < int(text) < 65536:
                server.port = int(text)
                return server.port
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"server exited with code {server.proc.returncode} before writing its "
                f"port file; server.log ends with:\n{log_tail(server.log_path)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"server wrote no port file {server.port_file.name} within "
                f"{timeout_s:g} s; server.log ends with:\n{log_tail(server.log_path)}"
            )
        time.sleep(0.1)


def stop_server(server: ServerProcess, grace_s: float = 10.0) -> int | None:
    """SIGTERM the server's process group, SIGKILL after `grace_s`; its exit code."""
    proc = server.proc
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=30)
    return proc.returncode


def die_with_parent() -> None:
    """In the child before exec: ask Linux to SIGTERM it if the launcher's job dies (best
    effort)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
