"""Test support shared by every test tier: real external systems (SLURM, node MCP clients) as
fixtures."""
