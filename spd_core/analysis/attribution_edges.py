"""Edge computation for attribution graphs: batched backwards that exploit position locality.

Sources that no target reads at another position (one joint random probe per prompt, exact with
probability 1) are handled by packed backwards whose row r holds the r-th alive node of a target
layer at every position at once; targets with the same such sources share one backward. Sources
read across positions (e.g. keys and values feeding an attention output) get one batched row per
target node (``fill_rows``). Only the sources a target's autograd graph reaches are differentiated.
"""

import functools
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from spd_core.analysis.graph_pass import (
    EMBED,
    GraphPass,
    Layout,
    pseudo_embed,
    source_tensor,
    target_tensor,
)


def fill_rows(
    edges: Tensor,
    embed_abs: Tensor,
    gp: GraphPass,
    layout: Layout,
    target: str,
    rows: Tensor,
    sources: list[str],
    grads: Sequence[Tensor | None],
) -> None:
    """Write grad × act of one batch of target rows (grads: per source (n, *source shape)).

    ``embed_abs`` (n_nodes, seq) receives Σ_d |grad × act| of embedding sources (the abs variant).
    """
    n = rows.numel()
    for src, g in zip(sources, grads, strict=True):
        if g is None:
            continue
        act = source_tensor(gp, src).detach()
        start = layout.offset[src]
        if pseudo_embed(gp, src):  # every position is a node: sum grad × act over d_model
            ga = (g * act).reshape(n, -1, act.shape[-1])
            edges[rows, start : start + ga.shape[1]] = ga.sum(-1)
            embed_abs[rows] = ga.abs().sum(-1)
        else:  # read the gradient at alive source nodes only
            cols = layout.flat[src]
            edges[rows, start : start + cols.numel()] = (
                g.reshape(n, -1)[:, cols] * act.reshape(-1)[cols]
            )


@functools.lru_cache(maxsize=64)
def _separating_sets(seq: int) -> Tensor:
    """(k, seq) bool rows such that for any two positions p ≠ q some row holds p but not q.

    Each position gets a distinct ⌊k/2⌋-subset of the k rows (an antichain), so neither subset
    contains the other; k is the smallest with C(k, ⌊k/2⌋) ≥ seq (7 rows for 32 positions).
    """
    k = 1
    while math.comb(k, k // 2) < seq:
        k += 1
    sel = torch.zeros(k, seq, dtype=torch.bool)
    for p, subset in zip(range(seq), itertools.combinations(range(k), k // 2), strict=False):
        sel[list(subset), p] = True
    return sel


def probe_cotangents(t_tensor: Tensor, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random cotangents on the positions of each row of ``_separating_sets`` and those (rows, seq)
    selections: a target that depends on a source at another position leaves a nonzero gradient
    outside the selected positions of some row (with probability 1)."""
    seq = t_tensor.shape[1]
    sel = _separating_sets(seq)
    cot = torch.randn(
        sel.shape[0],
        *t_tensor.shape,
        generator=torch.Generator().manual_seed(seed),
        dtype=t_tensor.dtype,
    )
    cot = cot * sel.view(sel.shape[0], 1, seq, *([1] * (t_tensor.ndim - 2))).to(cot.dtype)
    return cot, sel


def leaky_sources(gp: GraphPass, layout: Layout) -> set[str]:
    """Sources that some target depends on at another position (one joint probe over all targets;
    a sum of independent random probes leaks iff one of them does, with probability 1)."""
    targets = [
        t
        for t in layout.layers
        if not pseudo_embed(gp, t) and layout.flat[t].numel() and target_tensor(gp, t).requires_grad
    ]
    sources = ([EMBED] if gp.embed is not None else []) + [
        k for k in gp.order if layout.flat[k].numel()
    ]
    tensors = [target_tensor(gp, t) for t in targets]
    if not targets or not sources or any(t.ndim < 3 for t in tensors):
        return set()
    probes = [probe_cotangents(t, seed=i) for i, t in enumerate(tensors)]
    sel = probes[0][1]
    grads = torch.autograd.grad(
        tensors,
        [source_tensor(gp, s) for s in sources],
        [p for p, _ in probes],
        retain_graph=True,
        allow_unused=True,
        is_grads_batched=True,
    )
    leaky = set()
    for src, g in zip(sources, grads, strict=True):
        if g is not None and bool(
            (g.reshape(sel.shape[0], sel.shape[1], -1).abs().sum(-1) * (~sel)).any()
        ):
            leaky.add(src)
    return leaky


@dataclass
class _Packing:
    """Row r of ``cot`` (m, *target shape) selects the r-th alive node of the target at every
    position."""

    target: str
    t_pos: Tensor  # (n_t,) position of each alive target node
    rank: Tensor  # (n_t,) its row
    m: int
    cot: Tensor


def _packing(gp: GraphPass, layout: Layout, target: str) -> _Packing:
    t_tensor = target_tensor(gp, target)
    idx = layout.flat[target]
    width = layout.width[target]
    t_pos = idx // width
    first = torch.searchsorted(idx, t_pos * width)  # idx is sorted: rank within the node's position
    rank = torch.arange(idx.numel()) - first
    m = int(rank.max()) + 1
    cot = torch.zeros(m, t_tensor.numel(), dtype=t_tensor.dtype)
    cot[rank, idx] = 1.0
    return _Packing(target, t_pos, rank, m, cot.view(m, *t_tensor.shape))


def _read_packed(
    edges: Tensor,
    embed_abs: Tensor,
    gp: GraphPass,
    layout: Layout,
    pk: _Packing,
    src: str,
    g: Tensor,
) -> None:
    """Write the edges of one local source from its packed gradients g (m, *source shape)."""
    rows = layout.offset[pk.target] + torch.arange(pk.t_pos.numel())
    act = source_tensor(gp, src).detach()
    start = layout.offset[src]
    if pseudo_embed(
        gp, src
    ):  # one node per position: sum over d_model at the target's own position
        ga = (g * act).reshape(pk.m, -1, act.shape[-1])[pk.rank, pk.t_pos]  # (n_t, d_model)
        edges[rows, start + pk.t_pos] = ga.sum(-1)
        embed_abs[rows, pk.t_pos] = ga.abs().sum(-1)
        return
    cols = layout.flat[src]
    same = pk.t_pos[:, None] == (cols // layout.width[src])[None, :]  # (n_t, n_s)
    vals = g.reshape(pk.m, -1)[:, cols][pk.rank] * act.reshape(-1)[cols] * same
    edges[rows, start : start + cols.numel()] = vals


def packed_edges_group(
    edges: Tensor,
    embed_abs: Tensor,
    gp: GraphPass,
    layout: Layout,
    targets: list[str],
    sources: list[str],
) -> None:
    """Edges from sources known to be local to every target in ``targets``: one batched backward
    with the targets' packed rows stacked (each target's rows are zero on the other targets)."""
    pks = [_packing(gp, layout, t) for t in targets]
    total = sum(pk.m for pk in pks)
    grad_outputs, offset = [], 0
    for pk in pks:
        go = torch.zeros(total, *pk.cot.shape[1:], dtype=pk.cot.dtype)
        go[offset : offset + pk.m] = pk.cot
        grad_outputs.append(go)
        offset += pk.m
    grads = torch.autograd.grad(
        [target_tensor(gp, t) for t in targets],
        [source_tensor(gp, s) for s in sources],
        grad_outputs,
        retain_graph=True,
        allow_unused=True,
        is_grads_batched=True,
    )
    for src, g in zip(sources, grads, strict=True):
        if g is None:
            continue
        offset = 0
        for pk in pks:
            _read_packed(edges, embed_abs, gp, layout, pk, src, g[offset : offset + pk.m])
            offset += pk.m
