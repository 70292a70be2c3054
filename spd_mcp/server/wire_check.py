"""Every request gets an answer: parameters the SDK cannot decode become JSON-RPC errors naming the
field.

A lone UTF-16 surrogate (``"\\ud800"``) is valid JSON text but not Unicode: the SDK's stdio reader
and its HTTP transport fail to decode such a message and, over stdio, drop it without a reply. Three
guards answer it instead, with INVALID_PARAMS naming the field:

- ``CheckedLines`` wraps the stdio input: a line holding one is answered on the output stream.
- ``RequestGuard`` (ASGI) does the same for an HTTP POST body.
- ``check_request`` (server middleware) covers what reaches the server decoded (in memory, or HTTP
  bodies the SDK parses with the standard library), and answers ``arguments`` that are not an object
  and malformed parameters with what was wrong instead of a bare "Invalid request parameters".
"""

import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import INVALID_PARAMS, ErrorData, JSONRPCError
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_ESCAPE = re.compile(
    r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}"
)  # a surrogate escape, maybe half of a valid pair


def lone_surrogate(value: Any, path: str) -> str | None:
    """The path of the first string (or key) in ``value`` holding a lone surrogate, with where it
    is."""
    if isinstance(value, str):
        for i, ch in enumerate(value):
            if "\ud800" <= ch <= "\udfff":
                return f"{path} (character {i} is U+{ord(ch):04X}, half of a UTF-16 surrogate pair)"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            key = str(k)
            if (hit := lone_surrogate(key, f"{path} key")) is not None:
                return hit
            if (hit := lone_surrogate(v, f"{path}.{key}")) is not None:
                return hit
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if (hit := lone_surrogate(v, f"{path}[{i}]")) is not None:
                return hit
    return None


def invalid_params(method: str, params: Any) -> str | None:
    """What is wrong with a request's parameters that the SDK would not say (None: nothing)."""
    if (hit := lone_surrogate(params, "params")) is not None:
        return (
            f"invalid text in {hit}; every string must be valid Unicode (UTF-16 surrogates "
            "only in pairs)"
        )
    if method == "tools/call" and isinstance(params, dict):
        args = params.get("arguments")
        if args is not None and not isinstance(args, dict):
            kind = type(args).__name__.replace("dict", "object").replace("list", "array")
            return (
                "params.arguments must be an object mapping argument names to values (e.g. "
                '{"text": "..."}), '
                f"not a JSON {kind}; tools/list gives each tool's arguments"
            )
    return None


def rejection(text: str | bytes) -> JSONRPCError | None:
    """The error answering a raw JSON-RPC request that holds a lone surrogate (None: let the SDK
    decode it)."""
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    if not _ESCAPE.search(raw):
        return None
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(msg, dict) or "method" not in msg or "id" not in msg:
        return None  # a notification or response: nothing to answer
    problem = lone_surrogate(msg, "message")
    if problem is None:
        return None
    req_id = msg["id"]
    if (
        not isinstance(req_id, int | str)
        or isinstance(req_id, bool)
        or lone_surrogate(req_id, "id")
    ):
        req_id = None
    message = (
        f"invalid text in {problem.removeprefix('message.')}; every string must be valid Unicode"
    )
    field = problem.split(" (")[0].removeprefix("message.")
    return JSONRPCError(
        jsonrpc="2.0",
        id=req_id,
        error=ErrorData(code=INVALID_PARAMS, message=message, data={"field": field}),
    )


async def check_request(ctx: Any, call_next: Callable[[Any], Awaitable[Any]]) -> Any:
    """Server middleware: refuse undecodable or non-object parameters, say what failed
    validation."""
    problem = invalid_params(ctx.method, ctx.params)
    if problem is not None:
        raise MCPError(code=INVALID_PARAMS, message=problem, data={"method": ctx.method})
    try:
        return await call_next(ctx)
    except ValidationError as exc:
        errors = [e for e in exc.errors() if "_meta" not in e["loc"]] or exc.errors()
        locs = [[str(p) for p in e["loc"]] for e in errors]
        parts = [
            f"params.{'.'.join(loc[1:] if loc[:1] == ['params'] else loc)}: {e['msg']}"
            for loc, e in zip(locs[:5], errors[:5], strict=True)
        ]
        raise MCPError(
            code=INVALID_PARAMS,
            message=f"invalid {ctx.method} parameters: " + "; ".join(parts),
            data={"method": ctx.method},
        ) from exc


class CheckedLines:
    """The stdio input as lines; a request holding a lone surrogate is answered on ``reply`` and
    skipped."""

    def __init__(self, lines: Any) -> None:
        self._lines = lines
        self.reply: Any = None  # the server's write stream, set once the transport is open

    def __aiter__(self) -> "CheckedLines":
        return self

    async def __anext__(self) -> str:
        while True:
            line = await self._lines.readline()
            if not line:
                raise StopAsyncIteration
            error = rejection(line)
            if error is None or self.reply is None:
                return line
            await self.reply.send(SessionMessage(error))


class RequestGuard:
    """ASGI middleware: a POST body holding a lone surrogate is answered with a JSON-RPC error."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message, receive), send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        error = rejection(body)
        if error is None:
            await self.app(scope, _replay([body], None, receive), send)
            return
        data = error.model_dump_json(by_alias=True, exclude_none=True).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": data})


def _replay(bodies: list[bytes], last: Message | None, receive: Receive) -> Receive:
    """A ``receive`` that hands back the body already read, then the real channel."""
    pending: list[Message] = [
        {"type": "http.request", "body": b, "more_body": False} for b in bodies
    ]
    if last is not None:
        pending.append(last)

    async def again() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return again


async def run_stdio(server: Any) -> None:
    """Serve ``server`` (an MCPServer) over stdio with ``CheckedLines`` in front of the SDK's
    reader."""
    from mcp.server.stdio import stdio_server

    with open(os.dup(sys.stdin.fileno()), encoding="utf-8", errors="replace", newline="\n") as text:
        lines = CheckedLines(anyio.wrap_file(text))
        async with stdio_server(stdin=lines) as (read_stream, write_stream):  # pyright: ignore[reportArgumentType]
            lines.reply = write_stream
            low = server._lowlevel_server  # noqa: SLF001 (what the SDK's run_stdio_async runs)
            await low.run(read_stream, write_stream, low.create_initialization_options())
