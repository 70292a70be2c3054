"""Agent back ends: what every agent gets (AgentContext) and gives back (AgentResult)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spd_mcp.common.events import EventLog
from spd_mcp.contract import RECORD_TOOLS
from spd_mcp.launcher.layout import InvestigationDir
from spd_mcp.launcher.mcp_link import ToolInfo
from spd_mcp.launcher.spec import AVAILABLE_AGENTS, JobSpec


class TranscriptWriter:
    """Appends one JSON object per line to agent_transcript.jsonl, flushed as each arrives."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._f = path.open("a")

    def write(self, obj: dict[str, Any]) -> None:
        self._f.write(json.dumps(obj, default=str) + "\n")
        self._f.flush()

    def write_line(self, line: str) -> None:
        self._f.write(line if line.endswith("\n") else line + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


@dataclass
class AgentContext:
    spec: JobSpec
    inv: InvestigationDir
    url: str
    token: str
    tools: list[ToolInfo]
    system_prompt: str
    kickoff: str
    events: EventLog
    transcript: TranscriptWriter


@dataclass
class AgentResult:
    """How an agent run ended. `status`: completed, max_turns, budget, no_model_tool_called, failed,
    or incomplete (the built-in protocol reached its end but some steps could not be done)."""

    status: str
    turns: int = 0
    cost_usd: float | None = None
    model_tool_calls: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    denials: list[dict[str, Any]] = field(default_factory=list)
    final_text: str = ""
    error: str | None = None
    returncode: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("completed", "max_turns", "budget")

    def as_event(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "ok": self.ok,
            "turns": self.turns,
            "cost_usd": self.cost_usd,
            "model_tool_calls": self.model_tool_calls,
            "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors,
            "denials": len(self.denials),
            "returncode": self.returncode,
            "error": self.error,
        }


def is_model_tool(bare_name: str | None) -> bool:
    """True for one of our tools that looks at the model (not a record or job tool)."""
    return bare_name is not None and bare_name not in RECORD_TOOLS


def flag_no_model_tool(result: AgentResult) -> AgentResult:
    """A run that never called a model tool is not a success, whatever the agent said."""
    if result.status in ("completed", "max_turns", "budget") and result.model_tool_calls == 0:
        result.status = "no_model_tool_called"
    return result


def run_agent(ctx: AgentContext) -> AgentResult:
    """Run the agent the spec names (imported lazily: each back end has its own dependencies)."""
    if ctx.spec.agent == "claude_code":
        from spd_mcp.launcher.agents.claude_code import run_claude_code

        return run_claude_code(ctx)
    if ctx.spec.agent == "anthropic_api":
        from spd_mcp.launcher.agents.anthropic_api import run_anthropic_api

        return run_anthropic_api(ctx)
    if ctx.spec.agent == "builtin":
        from spd_mcp.launcher.agents.builtin import run_builtin

        return run_builtin(ctx)
    raise NotImplementedError(
        f"agent {ctx.spec.agent!r} is not available in this build; available: "
        f"{', '.join(AVAILABLE_AGENTS)}"
    )
