"""Command line: ``spd-mcp-server --run demo|PATH [--workspace DIR] [--transport stdio|http]
...``."""

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from spd_mcp.server.config import ServerConfig
from spd_mcp.server.safe_files import open_append
from spd_mcp.server.workspace import SERVER_LOG

if TYPE_CHECKING:
    from spd_mcp.server.state import ServedRun
    from spd_mcp.server.tooling import ToolSpec


def parse_args(argv: list[str] | None = None) -> ServerConfig:
    p = argparse.ArgumentParser(
        prog="spd-mcp-server",
        description="MCP server over an SPD decomposition (server name 'spd').",
    )
    p.add_argument("--run", required=True, help="'demo' or a run directory")
    p.add_argument(
        "--workspace", type=Path, help="directory for the research log, events, store and artifacts"
    )
    p.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="HTTP only: the server binds only to 127.0.0.1 (or localhost)",
    )
    p.add_argument(
        "--port", type=int, default=0, help="HTTP port; 0 lets the OS pick (see --port-file)"
    )
    p.add_argument("--port-file", type=Path, help="HTTP: write the actual port here once serving")
    p.add_argument(
        "--token-file", type=Path, help="HTTP: bearer token file (created, mode 0600, if missing)"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--agent-id",
        default=os.environ.get("SPD_AGENT_ID", "agent"),
        help="recorded in every event",
    )
    p.add_argument(
        "--short-wait-s",
        type=float,
        default=3.0,
        help="how long short tools wait for a busy device",
    )
    a = p.parse_args(argv)
    if a.host not in ("127.0.0.1", "localhost"):
        p.error(f"--host {a.host!r} refused: the server binds only to 127.0.0.1 (or localhost)")
    return ServerConfig(
        run=a.run,
        workspace=a.workspace,
        transport=a.transport,
        host=a.host,
        port=a.port,
        port_file=a.port_file,
        token_file=a.token_file,
        device=a.device,
        threads=a.threads,
        agent_id=a.agent_id,
        short_wait_s=a.short_wait_s,
    )


def setup_logging(config: ServerConfig) -> None:
    """Logs go to stderr and <workspace>/server.log; stdout belongs to the stdio protocol."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    handlers[0].setLevel(logging.WARNING)
    if config.workspace is not None:
        config.workspace.mkdir(parents=True, exist_ok=True)
        try:
            log_fd = open_append(
                config.workspace.resolve(), SERVER_LOG
            )  # links and shared files refused
        except ValueError as exc:
            sys.stderr.write(f"spd-mcp-server: {exc}\n")
            raise SystemExit(1) from exc
        fh = logging.StreamHandler(
            os.fdopen(log_fd, "a", encoding="utf-8", errors="backslashreplace")
        )
        fh.setLevel(logging.INFO)
        handlers.append(fh)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def loop_options() -> dict[str, Any]:
    """uvloop when installed (a faster event loop: less per-call overhead), else the standard
    asyncio loop."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def serve(
    config: ServerConfig, run: "ServedRun | None" = None, extra_tools: Sequence["ToolSpec"] = ()
) -> None:
    """Serve until the transport closes; ``run`` given: serve it instead of loading
    ``config.run``."""
    import torch

    torch.set_num_threads(max(1, config.threads))
    from spd_mcp.server.app import build_server

    server = build_server(config, run, extra_tools)
    try:
        if config.transport == "stdio":
            from spd_mcp.server.wire_check import run_stdio

            anyio.run(run_stdio, server, backend_options=loop_options())
        else:
            from spd_mcp.server.http import resolve_token, serve_http

            token = resolve_token(config)
            anyio.run(serve_http, server, config, token, backend_options=loop_options())
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # a clear one-line reason on stderr, the traceback in server.log
        logging.getLogger("spd_mcp.server").exception("server failed")
        sys.stderr.write(f"spd-mcp-server: {exc}\n")
        raise SystemExit(1) from exc


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv)
    setup_logging(config)
    # Start-up allocates millions of long-lived objects (torch, transformers, the SDK, the model)
    # and frees almost none: the cyclic GC would only rescan them. The lifespan freezes them and
    # turns it back on.
    gc.disable()
    serve(config)


if __name__ == "__main__":
    main()
