"""The MCP tool contract, shared by the server and the launcher: for every tool its name, group,
manual, annotations, argument model and result model. Standard library and pydantic only (no
torch), so the launcher imports it; the server binds one handler to each entry.
"""

from spd_mcp.contract import (
    circuits,
    components,
    data,
    editing,
    interventions,
    jobs,
    model,
    records,
    validation,
)
from spd_mcp.contract.spec import GROUPS, ToolContract

SERVER_NAME = "spd"

TOOLS: tuple[ToolContract, ...] = (
    *model.TOOLS,
    *data.TOOLS,
    *components.TOOLS,
    *circuits.TOOLS,
    *interventions.TOOLS,
    *validation.TOOLS,
    *editing.TOOLS,
    *records.TOOLS,
    *jobs.TOOLS,
)
BY_NAME: dict[str, ToolContract] = {t.name: t for t in TOOLS}
TOOL_NAMES: tuple[str, ...] = tuple(BY_NAME)

# The tools by the question they answer, in the order of GROUPS (the agent's prompt lists them so).
TOOL_GROUPS: dict[str, tuple[str, ...]] = {
    g: tuple(t.name for t in TOOLS if t.group == g) for g in GROUPS
}

# Tools that only record the investigation or ask about jobs; a run that called nothing else never
# looked at the model.
RECORD_TOOLS: frozenset[str] = frozenset(TOOL_GROUPS["records"] + TOOL_GROUPS["jobs and status"])


def claude_tool_name(tool: str, server: str = SERVER_NAME) -> str:
    """Claude Code's full name for an MCP tool: `mcp__<server>__<tool>`."""
    return f"mcp__{server}__{tool}"


def bare_tool_name(full: str, server: str = SERVER_NAME) -> str | None:
    """The MCP tool name inside a Claude Code tool name of our server, else None."""
    prefix = f"mcp__{server}__"
    return full[len(prefix) :] if full.startswith(prefix) else None


__all__ = [
    "BY_NAME",
    "GROUPS",
    "RECORD_TOOLS",
    "SERVER_NAME",
    "TOOLS",
    "TOOL_GROUPS",
    "TOOL_NAMES",
    "ToolContract",
    "bare_tool_name",
    "claude_tool_name",
]
