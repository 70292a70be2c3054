"""The MCP tool names of the server's contract (TOOLS.md), grouped by the question they answer.

The launcher cannot import the server, so it keeps the names here; the prompt, the Claude Code
allow-list check and the tests read them from this one place. At run time the allow-list is built
from the live server's `tools/list`, never from this table.
"""

from __future__ import annotations

SERVER_NAME = "spd"

TOOL_GROUPS: dict[str, tuple[str, ...]] = {
    "model and data": ("get_model_info", "run_prompt", "search_dataset", "list_probe_prompts"),
    "components": ("get_ci", "probe_component", "get_component_info", "get_activation_examples",
                   "find_components"),
    "circuits and attributions": ("get_attributions", "optimize_circuit",
                                  "get_dataset_attributions"),
    "interventions": ("ablate", "steer", "edit_component"),
    "validation": ("validate_claim",),
    "records": ("update_research_log", "record_hypothesis", "save_graph_artifact",
                "save_explanation", "set_investigation_summary"),
    "jobs and status": ("get_job", "cancel_job", "server_status"),
}

TOOL_NAMES: tuple[str, ...] = tuple(name for group in TOOL_GROUPS.values() for name in group)

# Tools that only record the investigation; a run that called nothing else never looked at the model.
RECORD_TOOLS: frozenset[str] = frozenset(TOOL_GROUPS["records"]) | {"get_job", "cancel_job",
                                                                    "server_status"}


def claude_tool_name(tool: str, server: str = SERVER_NAME) -> str:
    """Claude Code's full name for an MCP tool: `mcp__<server>__<tool>`."""
    return f"mcp__{server}__{tool}"


def bare_tool_name(full: str, server: str = SERVER_NAME) -> str | None:
    """The MCP tool name inside a Claude Code tool name of our server, else None."""
    prefix = f"mcp__{server}__"
    return full[len(prefix):] if full.startswith(prefix) else None
