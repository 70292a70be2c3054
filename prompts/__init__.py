"""Agent prompt templates (markdown with named placeholders), installed as ``spd_mcp.prompts``."""
