"""Multi-hop influence of every node on one target node, sign preserved.

The one-hop edge matrix A (targets × sources) is normalised per target row by the sum of the
absolute values of its incoming edges, Â[i, j] = A[i, j] / Σ_j |A[i, j]|, so a node's incoming
weights have total magnitude 1 while keeping their signs. The influence of j on t is the sum over
all paths of the products of normalised edges, Σ_{k≥1} (Â^k)[t, j]; the graph is acyclic (edges
point from earlier to later layers), so the sum is finite.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from spd_core.analysis.attributions import AttributionGraph
from spd_core.errors import require
from spd_core.keys import NodeKey


@dataclass(frozen=True)
class Influence:
    """``total[j]``: signed multi-hop influence of node j on ``target``; ``direct[j]``: the one-hop
    part."""

    target: NodeKey
    nodes: list[NodeKey]
    total: Tensor
    direct: Tensor
    hops: int

    def top(self, k: int) -> list[tuple[NodeKey, float]]:
        idx = self.total.abs().topk(min(k, int((self.total != 0).sum()))).indices
        return [(self.nodes[int(i)], float(self.total[i])) for i in idx]


def normalise_rows(edges: Tensor) -> Tensor:
    """Divide each row by its absolute row sum (rows with no incoming edges stay zero)."""
    denom = edges.abs().sum(-1, keepdim=True)
    return torch.where(
        denom > 0, edges / denom.clamp_min(torch.finfo(edges.dtype).tiny), torch.zeros_like(edges)
    )


def influence_on(
    graph: AttributionGraph, target: NodeKey, max_hops: int | None = None
) -> Influence:
    """Signed influence of every node of ``graph`` on ``target`` through all paths (see module
    doc)."""
    index = graph.index()
    require(
        target in index,
        f"target node {target} is not in the graph; valid targets are its nodes, e.g. "
        f"{', '.join(str(n) for n in graph.nodes[-3:])}",
    )
    a_hat = normalise_rows(graph.edges.double())
    row = torch.zeros(len(graph.nodes), dtype=torch.float64)
    row[index[target]] = 1.0
    total = torch.zeros_like(row)
    direct = a_hat[index[target]].clone()
    limit = len(graph.nodes) if max_hops is None else max_hops
    hops = 0
    while hops < limit:
        row = row @ a_hat
        if not bool(row.any()):
            break
        total += row
        hops += 1
    return Influence(
        target=target, nodes=graph.nodes, total=total.float(), direct=direct.float(), hops=hops
    )
