"""The tool handlers, grouped by the question they answer; each module binds its handlers to the
contract's entries (``spd_mcp.contract``)."""

from spd_mcp.server.tools import (
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

ALL_TOOLS = [
    *model.TOOLS, *data.TOOLS, *components.TOOLS, *circuits.TOOLS, *interventions.TOOLS,
    *validation.TOOLS, *editing.TOOLS, *records.TOOLS, *jobs.TOOLS,
]
