"""A tiny real MCP server with the real server's CLI contract, for launcher tests.

`python standin_server.py --run demo|PATH --workspace DIR --transport http --host 127.0.0.1
--port 0 --port-file FILE`, bearer token from env SPD_MCP_TOKEN, path /mcp, server name `spd`.
Tools: `get_model_info` (fixed facts), `run_prompt` (a deterministic fake prediction),
`update_research_log` (appends to DIR/research_log.md), `set_investigation_summary` (writes
DIR/summary.json). `--fail-start` exits at once with an error; `--hang` never opens the port.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, Field

from spd_mcp.contract.model import LayerRow, ModelInfo


class Prediction(BaseModel):
    text: str
    top_tokens: list[str]
    summary: str


class Written(BaseModel):
    path: str
    summary: str


class LogInput(BaseModel):
    markdown: str = Field(description="markdown to append under a timestamped heading")


class SummaryInput(BaseModel):
    title: str = Field(description="short title")
    summary: str = Field(description="one paragraph")
    status: str = Field(description="in_progress | completed | inconclusive")


def build(workspace: Path) -> MCPServer:
    server = MCPServer("spd", log_level="WARNING")

    @server.tool()
    async def get_model_info() -> ModelInfo:
        """What model is this? (stand-in facts)"""
        layers = [
            LayerRow(
                layer=name,
                kind="linear",
                d_in=4,
                d_out=4,
                C=2,
                alive=None,
                delta_rel_norm=0.0,
                delta_mean_sq=0.0,
            )
            for name in ("0.mlp.up", "1.mlp.down")
        ]
        return ModelInfo(
            summary="A 2-layer stand-in model.",
            run="standin",
            description="stand-in facts",
            architecture="standin-2L",
            is_language_model=True,
            dtype="float32",
            device="cpu",
            vocab_size=15,
            context_length=32,
            input_dim=None,
            n_params_target=0,
            n_components_total=4,
            layers=layers,
            alive_source="not measured",
            weight_delta="negligible",
            metrics={},
            has_harvest=False,
            has_probe_suite=False,
            n_probe_prompts=0,
        )

    @server.tool()
    async def run_prompt(text: str = Field(description="prompt text")) -> Prediction:
        """What does the model predict here? (deterministic stand-in)"""
        words = text.split()
        return Prediction(
            text=text,
            top_tokens=[w[::-1] for w in words[-2:]] or ["?"],
            summary=f"{len(words)} words",
        )

    @server.tool()
    async def update_research_log(req: LogInput) -> Written:
        """Append markdown to research_log.md under a timestamped heading."""
        path = workspace / "research_log.md"
        with path.open("a") as f:
            f.write(f"\n## {datetime.now(UTC).isoformat(timespec='seconds')}\n\n{req.markdown}\n")
        return Written(path=path.name, summary="appended")

    @server.tool()
    async def set_investigation_summary(req: SummaryInput) -> Written:
        """Write summary.json."""
        (workspace / "summary.json").write_text(json.dumps(req.model_dump(), indent=2))
        return Written(path="summary.json", summary="written")

    return server


class BearerGuard:
    """ASGI middleware: 401 unless `Authorization: Bearer <token>`."""

    def __init__(self, app, token: str) -> None:
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] == "http"
            and dict(scope["headers"]).get(b"authorization") != self.expected
        ):
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"text/plain")],
                }
            )
            await send({"type": "http.response.body", "body": b"missing or wrong bearer token"})
            return
        await self.app(scope, receive, send)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--run", required=True)
    p.add_argument("--workspace", required=True, type=Path)
    p.add_argument("--transport", default="http")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", type=Path, required=True)
    p.add_argument("--fail-start", action="store_true")
    p.add_argument("--hang", action="store_true")
    a = p.parse_args()
    print(f"standin server: run={a.run} workspace={a.workspace}", file=sys.stderr, flush=True)
    if a.fail_start:
        sys.exit("standin server: failing on purpose (--fail-start)")
    if a.hang:
        time.sleep(3600)
    token = os.environ["SPD_MCP_TOKEN"]
    a.workspace.mkdir(parents=True, exist_ok=True)
    app = BearerGuard(build(a.workspace).streamable_http_app(host=a.host), token)
    sock = socket.socket()
    sock.bind((a.host, a.port))
    sock.listen(64)
    tmp = a.port_file.with_suffix(".tmp")
    tmp.write_text(str(sock.getsockname()[1]))
    tmp.replace(a.port_file)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    anyio.run(uvicorn.Server(config).serve, [sock])


if __name__ == "__main__":
    main()
