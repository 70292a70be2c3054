"""The forward pass behind attribution graphs and the layout of its alive nodes.

Every decomposed layer's inner activations are re-leafed (a detached copy that requires grad feeds
the layer's output), so gradients from a target reach a source only through computation that is not
a decomposed layer's components. The weight-delta term is kept in the values (the pass equals the
target) and, unless ``through_delta``, is a constant for gradients. A non-decomposed input embedding
is re-leafed too (one source node per position).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from spd_core.analysis.common import per_position
from spd_core.analysis.health import check_input, flagged, raise_if_nonfinite
from spd_core.keys import NodeKey
from spd_core.model import ComponentModel

EMBED = "embed"  # node layer of a non-decomposed embedding (a decomposed one has component nodes)
OUTPUT = "output"


@dataclass
class GraphPass:
    pre: dict[str, Tensor]  # layer -> inner acts connected to upstream leaves (model shape)
    leaves: dict[str, Tensor]  # layer -> detached inner acts requiring grad (model shape)
    order: list[str]  # decomposed layers in execution order
    embed: Tensor | None  # (1, seq, d_model) leaf, when the embedding is not decomposed
    output: Tensor


def input_embedding(model: ComponentModel) -> nn.Module | None:
    get = getattr(model.target, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    if not isinstance(emb, nn.Module) or any(
        model.target.get_submodule(info.path) is emb for info in model.layers.values()
    ):
        return None
    return emb


@contextmanager
def releafed(model: ComponentModel, gp: GraphPass, through_delta: bool) -> Iterator[None]:
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
        handles.append(
            model.target.get_submodule(info.path).register_forward_hook(layer_hook(name))
        )
    emb = input_embedding(model)
    if emb is not None:
        handles.append(emb.register_forward_hook(embed_hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def graph_pass(model: ComponentModel, x: Tensor, through_delta: bool) -> GraphPass:
    gp = GraphPass({}, {}, [], None, torch.empty(0))
    check_input(x)
    # The math attention kernel has batching rules; the fused CPU kernel falls back to a loop under
    # vmap.
    with (
        torch.enable_grad(),
        releafed(model, gp, through_delta),
        sdpa_kernel([SDPBackend.MATH]),
        flagged(model) as flags,
    ):
        gp.output = model.target_output(x)
    raise_if_nonfinite(
        model,
        gp.output.detach(),
        lambda: model.target_output(x),
        "attribution-graph forward",
        flags,
    )
    return gp


@dataclass
class Layout:
    """Alive nodes of each layer as flat (position·C + c) indices, and their rows in the graph."""

    layers: list[str]  # "embed", decomposed layers in execution order, "output"
    flat: dict[str, Tensor]  # layer -> flat indices into that layer's (seq, C|d|vocab) grid
    offset: dict[str, int]
    width: dict[str, int]  # C of the layer (1 for embed, vocab for output)
    nodes: list[NodeKey]


def layout_nodes(
    gp: GraphPass, ci: dict[str, Tensor], threshold: float, outputs: list[tuple[int, int]]
) -> Layout:
    layers, flat, offset, width, nodes = [], {}, {}, {}, []

    def add(layer: str, idx: Tensor, w: int) -> None:
        layers.append(layer)
        flat[layer], offset[layer], width[layer] = idx, len(nodes), w
        nodes.extend(NodeKey(layer, i // w, i % w) for i in idx.tolist())

    if gp.embed is not None:
        add(EMBED, torch.arange(per_position(gp.embed).shape[0]), 1)
    for name in gp.order:
        g = ci[name]
        add(name, (g.flatten() > threshold).nonzero()[:, 0], g.shape[-1])
    vocab = gp.output.shape[-1]
    add(OUTPUT, torch.tensor([p * vocab + t for p, t in outputs], dtype=torch.long), vocab)
    return Layout(layers, flat, offset, width, nodes)


def sources_of(gp: GraphPass, layout: Layout, target: str) -> list[str]:
    """Source layers of a target: the embedding and every decomposed layer that ran before it."""
    before = gp.order if target == OUTPUT else gp.order[: gp.order.index(target)]
    return ([EMBED] if gp.embed is not None else []) + [k for k in before if layout.flat[k].numel()]


def reachable(gp: GraphPass, layout: Layout) -> dict[str, set[str]]:
    """Per target layer, the source layers its autograd graph reaches (one memoised walk of the
    graph)."""
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
        if pseudo_embed(gp, t):
            continue
        fn = target_tensor(gp, t).grad_fn
        out[t] = set() if fn is None else set(walk(fn))
    return out


def pseudo_embed(gp: GraphPass, layer: str) -> bool:
    return layer == EMBED and gp.embed is not None


def source_tensor(gp: GraphPass, layer: str) -> Tensor:
    return gp.embed if pseudo_embed(gp, layer) else gp.leaves[layer]  # type: ignore[return-value]


def target_tensor(gp: GraphPass, layer: str) -> Tensor:
    return gp.output if layer == OUTPUT else gp.pre[layer]
