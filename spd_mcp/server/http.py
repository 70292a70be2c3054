"""Streamable HTTP on 127.0.0.1 only: a bearer token on every request, foreign Host/Origin rejected.

The socket is bound before the app is built, so ``--port 0`` works: the OS picks the port, the
allowed Host/Origin values use it, and it is written atomically to ``--port-file`` once the server
(model loaded) accepts connections.
"""

import asyncio
import hmac
import logging
import os
import secrets
import socket
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from spd_mcp.server.safe_files import write_file
from spd_mcp.server.state import ServerConfig
from spd_mcp.server.wire_check import RequestGuard

log = logging.getLogger(__name__)
LOCAL_HOSTS = ("127.0.0.1", "localhost")
TOKEN_ENV = "SPD_MCP_TOKEN"
TOKEN_FILE = "server_token"


def resolve_token(config: ServerConfig) -> str:
    """The bearer token: $SPD_MCP_TOKEN, else --token-file (created if missing), else
    <workspace>/server_token."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    path = config.token_file or (config.workspace / TOKEN_FILE if config.workspace else None)
    if path is None:
        raise ValueError(
            f"HTTP needs a token: set ${TOKEN_ENV}, pass --token-file FILE, or pass --workspace DIR"
        )
    if path.exists():
        token = path.read_text().strip()
        if not token:
            raise ValueError(f"token file {path} is empty")
        return token
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
    finally:
        os.close(fd)
    return token


def write_port_file(path: Path, port: int) -> None:
    path = path.absolute()
    write_file(path.parent.resolve(), path.name, f"{port}\n".encode())


class LocalGuard:
    """ASGI middleware: only Host 127.0.0.1/localhost:<port>, same Origin if any, and the bearer
    token."""

    def __init__(self, app: ASGIApp, token: str, port: int) -> None:
        self.app = app
        self.token = token.encode()
        self.hosts = {f"{h}:{port}".encode() for h in LOCAL_HOSTS}
        self.origins = {f"http://{h}:{port}".encode() for h in LOCAL_HOSTS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no websockets or anything else
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = dict(scope["headers"])
        if headers.get(b"host") not in self.hosts:
            await _reject(
                send,
                421,
                "invalid Host header: this server answers only 127.0.0.1 or localhost on its port",
            )
            return
        origin = headers.get(b"origin")
        if origin is not None and origin not in self.origins:
            await _reject(send, 403, "invalid Origin header")
            return
        if not hmac.compare_digest(_bearer_token(headers.get(b"authorization", b"")), self.token):
            await _reject(
                send, 401, "missing or wrong bearer token", {b"www-authenticate": b"Bearer"}
            )
            return
        await self.app(scope, receive, send)


def _bearer_token(header: bytes) -> bytes:
    """The credentials of an ``Authorization: Bearer <token>`` header (the scheme is
    case-insensitive)."""
    scheme, _, credentials = header.strip().partition(b" ")
    return credentials.strip() if scheme.lower() == b"bearer" else b""


async def _reject(
    send: Send, status: int, text: str, extra: dict[bytes, bytes] | None = None
) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    headers += list((extra or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class CoalescingTransport:
    """Hands the socket one write per loop iteration: a response's head and body leave as one
    segment.

    uvicorn writes the status line and headers, then the body, as separate writes; on a TCP_NODELAY
    socket that is two segments and two wake-ups of the client. Everything else is the real
    transport's.
    """

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _protocol_class() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol when installed (C parser), else h11; writes coalesced per
    iteration."""
    try:
        from uvicorn.protocols.http.httptools_impl import (
            HttpToolsProtocol as Base,  # needs httptools
        )
    except ImportError:
        from uvicorn.protocols.http.h11_impl import H11Protocol as Base

    class Coalescing(Base):  # type: ignore[misc, valid-type]
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(CoalescingTransport(transport))  # type: ignore[arg-type]

    return Coalescing


def bind_local(host: str, port: int) -> socket.socket:
    if host not in LOCAL_HOSTS:
        raise ValueError(
            f"--host {host!r} refused: the server binds only to 127.0.0.1 (or localhost)"
        )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    return sock


async def serve_http(server: MCPServer, config: ServerConfig, token: str) -> None:
    sock = bind_local(config.host, config.port)
    port = sock.getsockname()[1]
    hosts = [f"{h}:{port}" for h in LOCAL_HOSTS]
    app = server.streamable_http_app(
        streamable_http_path="/mcp",
        transport_security=TransportSecuritySettings(
            allowed_hosts=hosts, allowed_origins=[f"http://{h}" for h in hosts]
        ),
        host="127.0.0.1",
    )
    uv = uvicorn.Server(
        uvicorn.Config(
            LocalGuard(RequestGuard(app), token, port),
            http=_protocol_class(),
            log_config=None,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=False,
        )
    )

    async def announce() -> None:
        while not uv.started:
            if uv.should_exit:
                return
            await asyncio.sleep(0.02)
        if config.port_file is not None:
            write_port_file(config.port_file, port)
        log.info("serving MCP over HTTP at http://127.0.0.1:%d/mcp", port)

    task = asyncio.create_task(announce())
    try:
        await uv.serve(sockets=[sock])
    finally:
        task.cancel()
        sock.close()
