"""The tool handlers, grouped by the question they answer."""

from spd_mcp.server.tools import jobs, model, records

ALL_TOOLS = [*model.TOOLS, *records.TOOLS, *jobs.TOOLS]
