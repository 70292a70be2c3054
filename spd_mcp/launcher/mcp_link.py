"""The launcher's MCP client to its server: connect with the bearer token, list and call tools.

Uses the official SDK (`mcp.Client` over streamable HTTP). `wait_until_answers` is how the job
knows the server is up: it has answered a real `tools/list`, not merely opened a port.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult


@dataclass(frozen=True)
class ToolInfo:
    name: str
    description: str
    input_schema: dict[str, Any]


@asynccontextmanager
async def connect(url: str, token: str, read_timeout_s: float = 300.0) -> AsyncIterator[Client]:
    """An MCP client session to `url`, sending `Authorization: Bearer <token>`."""
    timeout = httpx2.Timeout(30.0, read=read_timeout_s)
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        yield client


async def list_all_tools(client: Client) -> list[ToolInfo]:
    """Every tool the server lists, following pagination."""
    tools: list[ToolInfo] = []
    cursor: str | None = None
    while True:
        page = await client.list_tools(cursor=cursor)
        tools += [ToolInfo(t.name, t.description or "", dict(t.input_schema)) for t in page.tools]
        cursor = page.next_cursor
        if not cursor:
            return tools


def result_text(result: CallToolResult) -> str:
    """A tool result as the text an agent reads: compact structured JSON if any, else the text."""
    if result.structured_content is not None:
        return json.dumps(result.structured_content, separators=(",", ":"))
    parts = [getattr(c, "text", None) or f"[{c.type} content]" for c in result.content]
    return "\n".join(parts) if parts else "(empty result)"


async def _tools_once(url: str, token: str) -> list[ToolInfo]:
    async with connect(url, token, read_timeout_s=30.0) as client:
        return await list_all_tools(client)


class ServerNotReady(RuntimeError):
    """The server did not answer an MCP request in time, or exited first."""


def wait_until_answers(
    url: str, token: str, proc: subprocess.Popen[bytes] | None, timeout_s: float, log_hint: str = ""
) -> list[ToolInfo]:
    """Poll `tools/list` until the server answers; its tools. Raises ServerNotReady with the
    cause."""
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServerNotReady(
                f"server exited with code {proc.returncode} before answering at {url}{log_hint}"
            )
        try:
            return anyio.run(_tools_once, url, token)
        except (
            Exception
        ) as exc:  # connection refused, 401, protocol errors: keep trying until timeout
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise ServerNotReady(
                f"server at {url} did not answer tools/list within {timeout_s:g} s "
                f"(last error: {last}){log_hint}"
            )
        time.sleep(0.25)
