"""Attribution graphs: signed gradient × activation edges between alive nodes of one input, one hop.

One forward pass (all components on, weight delta on: exactly the target) re-leafs every decomposed
layer's inner activations, so a gradient from a target node reaches a source node only through
computation that is not a decomposed layer's components (residual stream, norms, attention,
nonlinearities, weight-delta paths). Nodes: components with CI > threshold at each position, one
node per position for a non-decomposed embedding (grad × act summed over d_model), and output nodes
(the logit of a chosen token at a chosen position). The logits in the result come from that same pass.

``attribution_graph`` backpropagates all alive nodes of a target layer (every position) in one
batched backward, only to the layers that run before it; ``attribution_graph_reference`` does one
backward per target node and exists to check it.
"""

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from spd_core.analysis.ci import model_ci
from spd_core.analysis.common import check_single_input, per_position, resolve
from spd_core.analysis.health import check_input, flagged, raise_if_nonfinite
from spd_core.analysis.overlay import Edit, applied
from spd_core.keys import NodeKey
from spd_core.model import ComponentModel

EMBED = "embed"  # node layer of a non-decomposed embedding (a decomposed one has component nodes)
OUTPUT = "output"


@dataclass(frozen=True)
class AttributionGraph:
    """``edges[i, j]``: signed attribution of source node j to target node i (grad of i × act of j).

    ``nodes`` are in topological order (embedding, decomposed layers in execution order, outputs).
    ``node_ci``: CI for component nodes, 1 for embedding nodes, probability for output nodes.
    ``node_acts``: inner activation, embedding norm, or logit. ``edges_abs`` sums |grad × act| (equal
    to |edges| except for embedding sources, whose d_model terms are summed after abs).
    ``logits`` (seq, vocab) and ``probs`` are from the graph's own forward pass.
    """

    nodes: list[NodeKey]
    node_ci: Tensor
    node_acts: Tensor
    edges: Tensor
    edges_abs: Tensor
    logits: Tensor
    probs: Tensor
    threshold: float

    def index(self) -> dict[NodeKey, int]:
        return {n: i for i, n in enumerate(self.nodes)}

    def top_edges(self, k: int, signed: bool = True) -> list[tuple[NodeKey, NodeKey, float]]:
        """(source, target, value) of the k largest edges by |value| (signed value, or the abs variant)."""
        vals = self.edges if signed else self.edges_abs
        flat = vals.abs().flatten()
        k = min(k, int((flat > 0).sum()))
        idx = flat.topk(k).indices
        n = vals.shape[1]
        return [(self.nodes[int(i) % n], self.nodes[int(i) // n], float(vals.flatten()[i])) for i in idx]


@dataclass
class _GraphPass:
    pre: dict[str, Tensor]  # layer -> inner acts connected to upstream leaves (model shape)
    leaves: dict[str, Tensor]  # layer -> detached inner acts requiring grad (model shape)
    order: list[str]  # decomposed layers in execution order
    embed: Tensor | None  # (1, seq, d_model) leaf, when the embedding is not decomposed
    output: Tensor


def _input_embedding(model: ComponentModel) -> nn.Module | None:
    get = getattr(model.target, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if emb is None or any(model.target.get_submodule(info.path) is emb for info in model.layers.values()):
        return None
    return emb


@contextmanager
def _releafed(model: ComponentModel, gp: _GraphPass, through_delta: bool) -> Iterator[None]:
    handles = []

    def layer_hook(name: str) -> Callable[..., Tensor]:
        comp = model.comp(name)
        V, U = comp.V.detach(), comp.U.detach()
        delta = comp.target_weight - (V @ U).T  # Δ = W − (V U)ᵀ, (d_out, d_in)
        embedding = comp.kind == "embedding"

        def hook(module: nn.Module, args: tuple[Any, ...], out: Tensor) -> Tensor:
            x = args[0]
            pre = V[x] if embedding else x @ V
            leaf = pre.detach().requires_grad_(True)
            gp.pre[name], gp.leaves[name] = pre, leaf
            gp.order.append(name)
            new = leaf @ U
            x_delta = x if through_delta else x.detach()
            new = new + (delta.T[x] if embedding else x_delta @ delta.T)
            return new if comp.bias is None else new + comp.bias

        return hook

    def embed_hook(module: nn.Module, args: tuple[Any, ...], out: Tensor) -> Tensor:
        gp.embed = out.detach().requires_grad_(True)
        return gp.embed

    for name, info in model.layers.items():
        handles.append(model.target.get_submodule(info.path).register_forward_hook(layer_hook(name)))
    emb = _input_embedding(model)
    if emb is not None:
        handles.append(emb.register_forward_hook(embed_hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _graph_pass(model: ComponentModel, x: Tensor, through_delta: bool) -> _GraphPass:
    gp = _GraphPass({}, {}, [], None, torch.empty(0))
    check_input(x)
    # The math attention kernel has batching rules; the fused CPU kernel falls back to a loop under vmap.
    with torch.enable_grad(), _releafed(model, gp, through_delta), sdpa_kernel([SDPBackend.MATH]), flagged(model) as flags:
        gp.output = model.target_output(x)
    raise_if_nonfinite(model, gp.output.detach(), lambda: model.target_output(x), "attribution-graph forward", flags)
    return gp


@dataclass
class _Layout:
    """Alive nodes of each layer as flat (position·C + c) indices, and their rows in the graph."""

    layers: list[str]  # "embed", decomposed layers in execution order, "output"
    flat: dict[str, Tensor]  # layer -> flat indices into that layer's (seq, C|d|vocab) grid
    offset: dict[str, int]
    width: dict[str, int]  # C of the layer (1 for embed, vocab for output)
    nodes: list[NodeKey]


def _layout(gp: _GraphPass, ci: dict[str, Tensor], threshold: float, outputs: list[tuple[int, int]]) -> _Layout:
    layers, flat, offset, width, nodes = [], {}, {}, {}, []

    def add(layer: str, idx: Tensor, w: int) -> None:
        layers.append(layer)
        flat[layer], offset[layer], width[layer] = idx, len(nodes), w
        nodes.extend(NodeKey(layer, int(i) // w, int(i) % w) for i in idx)

    if gp.embed is not None:
        add(EMBED, torch.arange(per_position(gp.embed).shape[0]), 1)
    for name in gp.order:
        g = ci[name]
        add(name, (g.flatten() > threshold).nonzero()[:, 0], g.shape[-1])
    vocab = gp.output.shape[-1]
    add(OUTPUT, torch.tensor([p * vocab + t for p, t in outputs], dtype=torch.long), vocab)
    return _Layout(layers, flat, offset, width, nodes)


def _sources(gp: _GraphPass, layout: _Layout, target: str) -> list[str]:
    """Source layers of a target: the embedding and every decomposed layer that ran before it."""
    before = gp.order if target == OUTPUT else gp.order[: gp.order.index(target)]
    return ([EMBED] if gp.embed is not None else []) + [k for k in before if layout.flat[k].numel()]


def _reachable(gp: _GraphPass, layout: _Layout) -> dict[str, set[str]]:
    """Per target layer, the source layers its autograd graph reaches (one memoised walk of the graph)."""
    leaf_ids = {id(gp.leaves[k]): k for k in gp.order}
    if gp.embed is not None:
        leaf_ids[id(gp.embed)] = EMBED
    memo: dict[object, frozenset[str]] = {}

    def walk(root: object) -> frozenset[str]:
        stack: list[tuple[object, bool]] = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if node in memo:
                continue
            children = [f for f, _ in getattr(node, "next_functions", ()) if f is not None]
            if not expanded:
                stack.append((node, True))
                stack.extend((c, False) for c in children if c not in memo)
                continue
            found: set[str] = set()
            var = getattr(node, "variable", None)
            if var is not None and id(var) in leaf_ids:
                found.add(leaf_ids[id(var)])
            for c in children:
                found |= memo[c]
            memo[node] = frozenset(found)
        return memo[root]

    out = {}
    for t in layout.layers:
        if _pseudo_embed(gp, t):
            continue
        fn = _target_tensor(gp, t).grad_fn
        out[t] = set() if fn is None else set(walk(fn))
    return out


def _pseudo_embed(gp: _GraphPass, layer: str) -> bool:
    return layer == EMBED and gp.embed is not None


def _source_tensor(gp: _GraphPass, layer: str) -> Tensor:
    return gp.embed if _pseudo_embed(gp, layer) else gp.leaves[layer]  # type: ignore[return-value]


def _target_tensor(gp: _GraphPass, layer: str) -> Tensor:
    return gp.output if layer == OUTPUT else gp.pre[layer]


def _fill(
    edges: Tensor, edges_abs: Tensor, gp: _GraphPass, layout: _Layout, target: str, rows: Tensor,
    sources: list[str], grads: Sequence[Tensor | None],
) -> None:
    """Write grad × act of one batch of target rows (grads: per source (n, *source shape))."""
    n = rows.numel()
    for src, g in zip(sources, grads, strict=True):
        if g is None:
            continue
        act = _source_tensor(gp, src).detach()
        if _pseudo_embed(gp, src):  # every position is a node: sum grad × act over d_model
            ga = (g * act).reshape(n, -1, act.shape[-1])
            signed, absval = ga.sum(-1), ga.abs().sum(-1)
        else:  # read the gradient at alive source nodes only
            cols = layout.flat[src]
            signed = g.reshape(n, -1)[:, cols] * act.reshape(-1)[cols]
            absval = signed.abs()
        start = layout.offset[src]
        edges[rows, start : start + signed.shape[1]] = signed
        edges_abs[rows, start : start + signed.shape[1]] = absval


def _probe_cotangents(t_tensor: Tensor, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random cotangents on the positions whose bit b is 1 (or 0), for every bit of the position index,
    and the (rows, seq) position selections. Two different positions differ in some bit, so a target
    that depends on a source at another position leaves a nonzero gradient on the complementary
    positions of some row (with probability 1)."""
    seq = t_tensor.shape[1]
    pos = torch.arange(seq)
    bits = max(1, (seq - 1).bit_length())
    sel = torch.stack([((pos >> b) & 1) == v for b in range(bits) for v in (1, 0)])  # (rows, seq)
    cot = torch.randn(sel.shape[0], *t_tensor.shape, generator=torch.Generator().manual_seed(seed), dtype=t_tensor.dtype)
    cot = cot * sel.view(sel.shape[0], 1, seq, *([1] * (t_tensor.ndim - 2))).to(cot.dtype)
    return cot, sel


def _leaky_sources(gp: _GraphPass, layout: _Layout) -> set[str]:
    """Sources that some target depends on at another position (one joint probe over all targets;
    a sum of independent random probes leaks iff one of them does, with probability 1)."""
    targets = [
        t for t in layout.layers
        if not _pseudo_embed(gp, t) and layout.flat[t].numel() and _target_tensor(gp, t).requires_grad
    ]
    sources = ([EMBED] if gp.embed is not None else []) + [k for k in gp.order if layout.flat[k].numel()]
    tensors = [_target_tensor(gp, t) for t in targets]
    if not targets or not sources or any(t.ndim < 3 for t in tensors):
        return set()
    probes = [_probe_cotangents(t, seed=i) for i, t in enumerate(tensors)]
    sel = probes[0][1]
    grads = torch.autograd.grad(
        tensors, [_source_tensor(gp, s) for s in sources], [p for p, _ in probes],
        retain_graph=True, allow_unused=True, is_grads_batched=True,
    )
    leaky = set()
    for src, g in zip(sources, grads, strict=True):
        if g is not None and bool((g.reshape(sel.shape[0], sel.shape[1], -1).abs().sum(-1) * (~sel)).any()):
            leaky.add(src)
    return leaky


def _packed_edges(
    edges: Tensor, edges_abs: Tensor, gp: _GraphPass, layout: _Layout, target: str, sources: list[str],
    probe: bool = True,
) -> list[bool]:
    """Edges from the sources the target depends on only at its own position; returns per source
    whether it is such a local source (the others need ``_fill`` with one row per target node).

    One batched backward holds the locality probes (``_probe_cotangents``) and m packed rows: row r
    carries the r-th alive target node of every position at once, which positions cannot mix.
    """
    t_tensor = _target_tensor(gp, target)
    idx = layout.flat[target]
    width = layout.width[target]
    t_pos = idx // width
    first = torch.searchsorted(idx, t_pos * width)  # idx is sorted: rank within the node's position
    rank = torch.arange(idx.numel()) - first
    m = int(rank.max()) + 1
    packed = torch.zeros(m, t_tensor.numel(), dtype=t_tensor.dtype)
    packed[rank, idx] = 1.0
    has_seq = probe and t_tensor.ndim >= 3
    probe, sel = _probe_cotangents(t_tensor) if has_seq else (torch.zeros(0, *t_tensor.shape), torch.zeros(0, 1))
    n_probe = probe.shape[0]
    grads = torch.autograd.grad(
        t_tensor, [_source_tensor(gp, s) for s in sources], torch.cat([probe, packed.view(m, *t_tensor.shape)]),
        retain_graph=True, allow_unused=True, is_grads_batched=True,
    )
    rows = layout.offset[target] + torch.arange(idx.numel())
    local = []
    for src, g_all in zip(sources, grads, strict=True):
        if g_all is None:
            local.append(True)
            continue
        if has_seq:
            leaks = g_all[:n_probe].reshape(n_probe, sel.shape[1], -1).abs().sum(-1) * (~sel).to(g_all.dtype)
            if bool(leaks.any()):
                local.append(False)
                continue
        local.append(True)
        g = g_all[n_probe:]
        act = _source_tensor(gp, src).detach()
        start = layout.offset[src]
        if _pseudo_embed(gp, src):  # one node per position: sum over d_model at the target's own position
            ga = (g * act).reshape(m, -1, act.shape[-1])[rank, t_pos]  # (n_t, d_model)
            edges[rows, start + t_pos] = ga.sum(-1)
            edges_abs[rows, start + t_pos] = ga.abs().sum(-1)
            continue
        cols = layout.flat[src]
        same = t_pos[:, None] == (cols // layout.width[src])[None, :]  # (n_t, n_s)
        vals = g.reshape(m, -1)[:, cols][rank] * act.reshape(-1)[cols] * same
        edges[rows, start : start + cols.numel()] = vals
        edges_abs[rows, start : start + cols.numel()] = vals.abs()
    return local


def _outputs(gp: _GraphPass, outputs: Sequence[tuple[int, int]] | None, top_k_outputs: int) -> list[tuple[int, int]]:
    logits = per_position(gp.output.detach())
    seq, vocab = logits.shape
    if outputs is None:
        last = seq - 1
        return [(last, int(t)) for t in logits[last].topk(min(top_k_outputs, vocab)).indices]
    out = []
    for p, t in outputs:
        assert 0 <= t < vocab, f"output token id {t} out of range; valid: 0..{vocab - 1}"
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
    max_nodes: int = 20_000,
    ci: dict[str, Tensor] | None = None,
    through_delta: bool = False,
    edit: Edit | None = None,
) -> AttributionGraph:
    """The one-hop attribution graph of ``x`` (token ids (1, seq) or features (1, d_in)).

    Component nodes are those with CI > ``threshold``; output nodes are ``outputs`` [(position, token
    id)] or, by default, the ``top_k_outputs`` most probable tokens at the last position. ``ci``
    (layer -> (seq, C)) replaces the natural CI when choosing nodes, e.g. an optimised circuit's CI;
    the edges are always those of the full (target) model. ``through_delta`` lets gradients also flow
    through the weight-delta term of intermediate decomposed layers (the public implementation's
    choice); by default that term is a constant at its value, so an edge never crosses a decomposed
    layer and each backward stops at the layers that feed its target. ``method`` ``reference`` runs
    one backward per target node (slow; for tests).
    """
    check_single_input(x)
    assert threshold >= 0.0, f"threshold must be ≥ 0 (CI is in [0, 1]); got {threshold}"
    assert method in ("batched", "reference"), f"method must be 'batched' or 'reference'; got {method!r}"
    with applied(model, edit):
        if ci is None:
            with torch.no_grad():
                ci_model, _, _ = model_ci(model, x)
            ci = {k: per_position(v) for k, v in ci_model.lower.items()}
        missing = set(model.layers) - set(ci)
        assert not missing, f"ci must give every decomposed layer; missing: {', '.join(sorted(missing))}"
        gp = _graph_pass(model, x, through_delta)
        layout = _layout(gp, ci, threshold, _outputs(gp, outputs, top_k_outputs))
        n = len(layout.nodes)
        assert n <= max_nodes, (
            f"{n} alive nodes exceed max_nodes={max_nodes}; raise the CI threshold (now {threshold}) or max_nodes"
        )
        edges = torch.zeros(n, n, dtype=torch.float32)
        edges_abs = torch.zeros(n, n, dtype=torch.float32)
        leaky = _leaky_sources(gp, layout) if method == "batched" else set()
        reach = _reachable(gp, layout) if method == "batched" else {}
        for target in layout.layers:
            if _pseudo_embed(gp, target):
                continue
            sources = _sources(gp, layout, target)
            idx = layout.flat[target]
            if not sources or not idx.numel():
                continue
            t_tensor = _target_tensor(gp, target)
            if not t_tensor.requires_grad:  # e.g. a decomposed embedding: nothing feeds it
                continue
            src_tensors = [_source_tensor(gp, s) for s in sources]
            base = layout.offset[target]
            if method == "batched":
                sure = [s for s in sources if s in reach[target] and s not in leaky]
                maybe = [s for s in sources if s in reach[target] and s in leaky]
                if sure:
                    _packed_edges(edges, edges_abs, gp, layout, target, sure, probe=False)
                cross: list[str] = []
                if maybe:
                    local = _packed_edges(edges, edges_abs, gp, layout, target, maybe, probe=True)
                    cross = [s for s, is_local in zip(maybe, local, strict=True) if not is_local]
                cross_tensors = [_source_tensor(gp, s) for s in cross]
                for lo in range(0, idx.numel() if cross else 0, chunk):
                    part = idx[lo : lo + chunk]
                    cot = torch.zeros(part.numel(), t_tensor.numel(), dtype=t_tensor.dtype)
                    cot[torch.arange(part.numel()), part] = 1.0
                    grads = torch.autograd.grad(
                        t_tensor, cross_tensors, cot.view(part.numel(), *t_tensor.shape),
                        retain_graph=True, allow_unused=True, is_grads_batched=True,
                    )
                    _fill(edges, edges_abs, gp, layout, target, base + lo + torch.arange(part.numel()), cross, grads)
            else:
                flat_t = t_tensor.reshape(-1)
                for i, f in enumerate(idx.tolist()):
                    grads = torch.autograd.grad(flat_t[f], src_tensors, retain_graph=True, allow_unused=True)
                    grads = [None if g is None else g.unsqueeze(0) for g in grads]
                    _fill(edges, edges_abs, gp, layout, target, torch.tensor([base + i]), sources, grads)
        node_ci, node_acts = _node_values(gp, layout, ci)
    logits = per_position(gp.output.detach())
    return AttributionGraph(
        nodes=layout.nodes, node_ci=node_ci, node_acts=node_acts, edges=edges, edges_abs=edges_abs,
        logits=logits, probs=logits.float().softmax(-1), threshold=threshold,
    )


def _node_values(gp: _GraphPass, layout: _Layout, ci: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    cis, acts = [], []
    for layer in layout.layers:
        idx = layout.flat[layer]
        if _pseudo_embed(gp, layer):
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


def attribution_graph_reference(model: ComponentModel, x: Tensor, **kwargs: Any) -> AttributionGraph:
    """``attribution_graph`` with one backward per target node (the slow route the fast one is checked against)."""
    return attribution_graph(model, x, method="reference", **kwargs)
