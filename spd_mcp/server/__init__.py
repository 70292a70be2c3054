"""The MCP server: one loaded run, tool handlers, one device worker, workspace files, SQLite
store."""
