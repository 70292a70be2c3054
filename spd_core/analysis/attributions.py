"""Attribution graphs: signed gradient × activation edges between alive nodes of one input, one hop.

One forward pass (all components on, weight delta on: exactly the target) re-leafs every decomposed
layer's inner activations (``graph_pass``), so a gradient from a target node reaches a source node
only through computation that is not a decomposed layer (residual stream, norms, attention,
nonlinearities; weight-delta paths too with ``through_delta``). Nodes: components with CI >
threshold at each position, one node per position for a non-decomposed embedding (grad × act summed
over d_model), and output nodes (the logit of a chosen token at a chosen position). The logits in
the result come from that same pass.

``attribution_graph`` batches all alive nodes of a target layer, every position, into a few batched
backwards (``attribution_edges``); ``attribution_graph_reference`` does one backward per target node
and exists to check it.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from spd_core.analysis.attribution_edges import fill_rows, leaky_sources, packed_edges_group
from spd_core.analysis.ci import model_ci
from spd_core.analysis.common import check_single_input, per_position, resolve
from spd_core.analysis.graph_pass import (
    EMBED,
    OUTPUT,
    GraphPass,
    Layout,
    graph_pass,
    layout_nodes,
    pseudo_embed,
    reachable,
    source_tensor,
    sources_of,
    target_tensor,
)
from spd_core.analysis.overlay import Edit, applied
from spd_core.errors import require
from spd_core.keys import NodeKey
from spd_core.model import ComponentModel

__all__ = [
    "EMBED",
    "OUTPUT",
    "AttributionGraph",
    "attribution_graph",
    "attribution_graph_reference",
]


@dataclass(frozen=True)
class AttributionGraph:
    """``edges[i, j]``: signed attribution of source node j to target node i (grad of i × act of j).

    ``nodes`` are in topological order (embedding, decomposed layers in execution order, outputs).
    ``node_ci``: CI for component nodes, 1 for embedding nodes, probability for output nodes.
    ``node_acts``: inner activation, embedding norm, or logit. ``edges_abs`` sums |grad × act|
    (equal to |edges| except for embedding sources, whose d_model terms are summed after abs; those
    columns are ``embed_abs``, (n_nodes, seq), or (n_nodes, 0) when the embedding is decomposed).
    ``logits`` (seq, vocab) and ``probs`` are from the graph's own forward pass.
    """

    nodes: list[NodeKey]
    node_ci: Tensor
    node_acts: Tensor
    edges: Tensor
    embed_abs: Tensor
    logits: Tensor
    probs: Tensor
    threshold: float

    @property
    def edges_abs(self) -> Tensor:
        """|grad × act| edges; embedding sources sum |grad × act| over d_model (kept in
        ``embed_abs``)."""
        out = self.edges.abs()
        out[:, : self.embed_abs.shape[1]] = self.embed_abs  # embedding nodes come first
        return out

    def index(self) -> dict[NodeKey, int]:
        return {n: i for i, n in enumerate(self.nodes)}

    def top_edges(self, k: int, signed: bool = True) -> list[tuple[NodeKey, NodeKey, float]]:
        """(source, target, value) of the k largest edges by |value| (signed value, or the abs
        variant)."""
        vals = self.edges if signed else self.edges_abs
        flat = vals.abs().flatten()
        k = min(k, int((flat > 0).sum()))
        idx = flat.topk(k).indices
        n = vals.shape[1]
        return [
            (self.nodes[int(i) % n], self.nodes[int(i) // n], float(vals.flatten()[i])) for i in idx
        ]


def _outputs(
    gp: GraphPass, outputs: Sequence[tuple[int, int]] | None, top_k_outputs: int
) -> list[tuple[int, int]]:
    logits = per_position(gp.output.detach())
    seq, vocab = logits.shape
    if outputs is None:
        last = seq - 1
        return [(last, int(t)) for t in logits[last].topk(min(top_k_outputs, vocab)).indices]
    out = []
    for p, t in outputs:
        require(0 <= t < vocab, f"output token id {t} out of range; valid: 0..{vocab - 1}")
        out.append((resolve(p, seq), int(t)))
    return out


def attribution_graph(
    model: ComponentModel,
    x: Tensor,
    threshold: float = 0.0,
    outputs: Sequence[tuple[int, int]] | None = None,
    top_k_outputs: int = 3,
    method: Literal["batched", "reference"] = "batched",
    chunk: int = 512,
    max_nodes: int = 8_000,
    ci: dict[str, Tensor] | None = None,
    through_delta: bool = False,
    edit: Edit | None = None,
) -> AttributionGraph:
    """The one-hop attribution graph of ``x`` (token ids (1, seq) or features (1, d_in)).

    Component nodes are those with CI > ``threshold``; output nodes are ``outputs`` [(position,
    token id)] or, by default, the ``top_k_outputs`` most probable tokens at the last position.
    ``ci`` (layer -> (seq, C)) replaces the natural CI when choosing nodes, e.g. an optimised
    circuit's CI; the edges are always those of the full (target) model. ``through_delta`` lets
    gradients also flow through the weight-delta term of intermediate decomposed layers (the public
    implementation's choice); by default that term is a constant at its value, so an edge never
    crosses a decomposed layer and each backward stops at the layers that feed its target.
    ``method`` ``reference`` runs one backward per target node (slow; for tests).
    """
    check_single_input(x)
    require(threshold >= 0.0, f"threshold must be ≥ 0 (CI is in [0, 1]); got {threshold}")
    require(
        method in ("batched", "reference"),
        f"method must be 'batched' or 'reference'; got {method!r}",
    )
    with applied(model, edit):
        if ci is None:
            with torch.no_grad():
                ci_model, _, _ = model_ci(model, x)
            ci = {k: per_position(v) for k, v in ci_model.lower.items()}
        missing = set(model.layers) - set(ci)
        assert not missing, (
            f"ci must give every decomposed layer; missing: {', '.join(sorted(missing))}"
        )
        gp = graph_pass(model, x, through_delta)
        layout = layout_nodes(gp, ci, threshold, _outputs(gp, outputs, top_k_outputs))
        n = len(layout.nodes)
        require(
            n <= max_nodes,
            f"{n} alive nodes exceed max_nodes={max_nodes}; raise the CI threshold (now "
            f"{threshold}) or max_nodes",
        )
        edges = torch.zeros(n, n, dtype=torch.float32)
        n_embed = layout.flat[EMBED].numel() if gp.embed is not None else 0
        embed_abs = torch.zeros(n, n_embed, dtype=torch.float32)
        leaky = leaky_sources(gp, layout) if method == "batched" else set()
        reach = reachable(gp, layout) if method == "batched" else {}
        if method == "batched":  # targets with the same local sources share one packed backward
            groups: dict[tuple[str, ...], list[str]] = {}
            for target in layout.layers:
                if pseudo_embed(gp, target) or not layout.flat[target].numel():
                    continue
                if not target_tensor(gp, target).requires_grad:
                    continue
                sure = tuple(
                    s
                    for s in sources_of(gp, layout, target)
                    if s in reach[target] and s not in leaky
                )
                if sure:
                    groups.setdefault(sure, []).append(target)
            for sure, targets in groups.items():
                packed_edges_group(edges, embed_abs, gp, layout, targets, list(sure))
        for target in layout.layers:
            if pseudo_embed(gp, target):
                continue
            sources = sources_of(gp, layout, target)
            idx = layout.flat[target]
            if not sources or not idx.numel():
                continue
            t_tensor = target_tensor(gp, target)
            if not t_tensor.requires_grad:  # e.g. a decomposed embedding: nothing feeds it
                continue
            src_tensors = [source_tensor(gp, s) for s in sources]
            base = layout.offset[target]
            if method == "batched":
                # sources some target reads across positions: one row per target node, all positions
                cross = [s for s in sources if s in reach[target] and s in leaky]
                cross_tensors = [source_tensor(gp, s) for s in cross]
                for lo in range(0, idx.numel() if cross else 0, chunk):
                    part = idx[lo : lo + chunk]
                    cot = torch.zeros(part.numel(), t_tensor.numel(), dtype=t_tensor.dtype)
                    cot[torch.arange(part.numel()), part] = 1.0
                    grads = torch.autograd.grad(
                        t_tensor,
                        cross_tensors,
                        cot.view(part.numel(), *t_tensor.shape),
                        retain_graph=True,
                        allow_unused=True,
                        is_grads_batched=True,
                    )
                    fill_rows(
                        edges,
                        embed_abs,
                        gp,
                        layout,
                        target,
                        base + lo + torch.arange(part.numel()),
                        cross,
                        grads,
                    )
            else:
                flat_t = t_tensor.reshape(-1)
                for i, f in enumerate(idx.tolist()):
                    grads = torch.autograd.grad(
                        flat_t[f], src_tensors, retain_graph=True, allow_unused=True
                    )
                    grads = [None if g is None else g.unsqueeze(0) for g in grads]
                    fill_rows(
                        edges,
                        embed_abs,
                        gp,
                        layout,
                        target,
                        torch.tensor([base + i]),
                        sources,
                        grads,
                    )
        node_ci, node_acts = _node_values(gp, layout, ci)
    logits = per_position(gp.output.detach())
    return AttributionGraph(
        nodes=layout.nodes,
        node_ci=node_ci,
        node_acts=node_acts,
        edges=edges,
        embed_abs=embed_abs,
        logits=logits,
        probs=logits.float().softmax(-1),
        threshold=threshold,
    )


def _node_values(gp: GraphPass, layout: Layout, ci: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    cis, acts = [], []
    for layer in layout.layers:
        idx = layout.flat[layer]
        if pseudo_embed(gp, layer):
            cis.append(torch.ones(idx.numel()))
            acts.append(per_position(gp.embed.detach()).norm(dim=-1))  # type: ignore[union-attr]
        elif layer == OUTPUT:
            logits = per_position(gp.output.detach())
            cis.append(logits.float().softmax(-1).flatten()[idx])
            acts.append(logits.flatten()[idx])
        else:
            cis.append(ci[layer].flatten()[idx])
            acts.append(per_position(gp.leaves[layer].detach()).flatten()[idx])
    return torch.cat(cis).float(), torch.cat(acts).float()


def attribution_graph_reference(
    model: ComponentModel, x: Tensor, **kwargs: Any
) -> AttributionGraph:
    """``attribution_graph`` with one backward per target node (the slow route the fast one is
    checked against)."""
    return attribution_graph(model, x, method="reference", **kwargs)
