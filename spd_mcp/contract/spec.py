"""What the contract says of one tool: its name, group, manual, argument and result models, hints.

The server binds a handler to each (``spd_mcp.server.tooling.bind``); the launcher reads names,
groups and result models from the same entries.
"""

from dataclasses import dataclass

from spd_mcp.contract.wire import Input, Wire

GROUPS = (
    "model and data",
    "components",
    "circuits and attributions",
    "interventions",
    "validation",
    "records",
    "jobs and status",
)


@dataclass(frozen=True)
class ToolContract:
    """``result_model`` is what tools/call returns; for a long tool that is ``JobView``, and
    ``job_results`` are the models its ``result`` takes once the job is done."""

    name: str
    group: str
    title: str
    description: str
    input_model: type[Input]
    result_model: type[Wire]
    read_only: bool
    destructive: bool = False
    idempotent: bool = False
    job_results: tuple[type[Wire], ...] = ()

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(
                f"tool {self.name}: unknown group {self.group!r}; valid: {', '.join(GROUPS)}"
            )


def tool_hints(read_only: bool, destructive: bool, idempotent: bool) -> dict[str, bool]:
    """The annotations a tool advertises, only those that say something: MCP's destructive and
    idempotent hints mean nothing for a read-only tool, idempotent defaults to false, and no tool
    reaches outside the server (open world false)."""
    hints = {"read_only_hint": read_only, "open_world_hint": False}
    if not read_only:
        hints["destructive_hint"] = destructive
        if idempotent:
            hints["idempotent_hint"] = True
    return hints
