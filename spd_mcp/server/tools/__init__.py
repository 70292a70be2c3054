"""The tool handlers, grouped by the question they answer."""

from spd_mcp.server.tools import data, jobs, model, records

ALL_TOOLS = [*model.TOOLS, *data.TOOLS, *records.TOOLS, *jobs.TOOLS]
