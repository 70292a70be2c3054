"""spd-mcp: the MCP server over a decomposition and the launcher of investigations."""
