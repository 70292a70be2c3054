"""The server's command-line configuration (light: importable before torch and the SDK)."""

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict


class ServerConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    run: str = "demo"
    workspace: Path | None = None
    transport: Literal["stdio", "http"] = "stdio"
    host: str = "127.0.0.1"
    port: int = 0
    port_file: Path | None = None
    token_file: Path | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 1
    agent_id: str = "agent"
    short_wait_s: float = 3.0
