"""The tool handlers, grouped by the question they answer."""

from spd_mcp.server.tools import circuits, components, interventions, jobs, model, records

ALL_TOOLS = [*model.TOOLS, *components.TOOLS, *circuits.TOOLS, *interventions.TOOLS, *records.TOOLS, *jobs.TOOLS]
