"""A scripted Anthropic Messages API on 127.0.0.1 that plays the model from a list of turns.

Each `POST /v1/messages` that offers tools (or answers a tool_use) consumes the next `Turn`: its
tool calls come back as `tool_use` blocks (stop_reason "tool_use"), else its text ends the turn.
Requests without tools (side requests a client may make, e.g. titles) get a short text answer and
consume nothing. Both streaming (`"stream": true`, SSE events as the real API sends them) and plain
JSON answers are served. Every request is recorded (path, headers, body) so a test can read the
tool_results a client sent back. A `Turn` with `status` != 200 answers that HTTP error instead
(529 -> `overloaded_error`) and also consumes the turn, so retries can be scripted.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class ToolCall:
    name: str
    input: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Turn:
    """One model answer: tool calls (if any) else final text; or an HTTP error status."""

    tool_calls: tuple[ToolCall, ...] = ()
    text: str = ""
    status: int = 200
    delay_s: float = 0.0


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    consumed_turn: int | None


def _tokens(obj: Any) -> int:
    return max(1, len(json.dumps(obj)) // 4)


class FakeMessagesAPI:
    """Start with `with FakeMessagesAPI(script) as api:`; point clients at `api.url`."""

    def __init__(self, script: list[Turn], model: str = "claude-fake-1") -> None:
        self.script = list(script)
        self.model = model
        self.requests: list[Recorded] = []
        self._next = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def turns_used(self) -> int:
        return self._next

    def tool_results(self) -> list[dict[str, Any]]:
        """Every distinct tool_result block the client sent (any message of any request), in
        order."""
        out: dict[str, dict[str, Any]] = {}
        for rec in self.requests:
            for msg in rec.body.get("messages", []):
                content = msg.get("content")
                if isinstance(content, list):
                    for b in content:
                        if isinstance(b, dict) and b.get("type") == "tool_result":
                            out.setdefault(b.get("tool_use_id", ""), b)
        return list(out.values())

    def __enter__(self) -> FakeMessagesAPI:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    # -- answering --------------------------------------------------------------------------

    def _take_turn(self, body: dict[str, Any]) -> tuple[Turn | None, int | None]:
        wants_turn = bool(body.get("tools"))
        with self._lock:
            if not wants_turn:
                return None, None
            if self._next >= len(self.script):
                return Turn(text="(fake API: script exhausted)"), None
            idx = self._next
            self._next += 1
            return self.script[idx], idx

    def _message(self, turn: Turn | None, body: dict[str, Any], n: int) -> dict[str, Any]:
        blocks: list[dict[str, Any]]
        if turn is None:
            blocks, stop = [{"type": "text", "text": "ok"}], "end_turn"
        elif turn.tool_calls:
            blocks = [
                {"type": "tool_use", "id": f"toolu_fake_{n}_{i}", "name": c.name, "input": c.input}
                for i, c in enumerate(turn.tool_calls)
            ]
            stop = "tool_use"
        else:
            blocks, stop = [{"type": "text", "text": turn.text}], "end_turn"
        return {
            "id": f"msg_fake_{n}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {
                "input_tokens": _tokens(body.get("messages", [])),
                "output_tokens": _tokens(blocks),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send_json(self, status: int, obj: dict[str, Any]) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("request-id", "req_fake")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._send_json(
                    404,
                    {"type": "error", "error": {"type": "not_found_error", "message": self.path}},
                )

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.startswith("/v1/messages") or "count_tokens" in self.path:
                    api.requests.append(Recorded(self.path, dict(self.headers), body, None))
                    self._send_json(200, {"input_tokens": _tokens(body)})
                    return
                turn, idx = api._take_turn(body)
                api.requests.append(Recorded(self.path, dict(self.headers), body, idx))
                if turn is not None and turn.delay_s:
                    api._closing.wait(turn.delay_s)
                if turn is not None and turn.status != 200:
                    kind = ERROR_TYPES.get(turn.status, "api_error")
                    self._send_json(
                        turn.status,
                        {"type": "error", "error": {"type": kind, "message": f"fake {kind}"}},
                    )
                    return
                msg = api._message(turn, body, len(api.requests))
                try:
                    if body.get("stream"):
                        self._stream(msg)
                    else:
                        self._send_json(200, msg)
                except (BrokenPipeError, ConnectionResetError):  # the client went away (killed job)
                    self.close_connection = True

            def _stream(self, msg: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("cache-control", "no-cache")
                self.send_header("connection", "close")
                self.end_headers()
                for event in sse_events(msg):
                    self.wfile.write(
                        f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()
                    )
                    self.wfile.flush()
                self.close_connection = True

        return Handler


def sse_events(msg: dict[str, Any]) -> list[dict[str, Any]]:
    """The Messages API's streaming events for one complete message."""
    start = dict(msg, content=[], stop_reason=None, usage=dict(msg["usage"], output_tokens=1))
    events: list[dict[str, Any]] = [{"type": "message_start", "message": start}]
    for i, block in enumerate(msg["content"]):
        if block["type"] == "text":
            events.append(
                {
                    "type": "content_block_start",
                    "index": i,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            events.append(
                {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {"type": "text_delta", "text": block["text"]},
                }
            )
        else:
            events.append(
                {
                    "type": "content_block_start",
                    "index": i,
                    "content_block": {
                        "type": "tool_use",
                        "id": block["id"],
                        "name": block["name"],
                        "input": {},
                    },
                }
            )
            events.append(
                {
                    "type": "content_block_delta",
                    "index": i,
                    "delta": {
                        "type": "input_json_delta",
                        "partial_json": json.dumps(block["input"]),
                    },
                }
            )
        events.append({"type": "content_block_stop", "index": i})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": msg["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": msg["usage"]["output_tokens"]},
        }
    )
    events.append({"type": "message_stop"})
    return events
