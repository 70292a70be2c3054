"""Fixtures of the infrastructure tests: the real SLURM cluster and the pinned node MCP clients."""

from tests.support.node_tools import node_tools
from tests.support.slurm import slurm_cluster, slurm_env

__all__ = ["node_tools", "slurm_cluster", "slurm_env"]
