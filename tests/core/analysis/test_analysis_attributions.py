"""Attribution graphs: the batched route equals the one-backward-per-node reference; on a linear
model an attribution equals the exact logit change of ablating the component; logits come from the
graph's pass."""

import pytest
import torch
from torch import nn

from spd_core.analysis.attributions import (
    EMBED,
    OUTPUT,
    attribution_graph,
    attribution_graph_reference,
)
from spd_core.errors import InvalidInput
from spd_core.keys import NodeKey
from spd_core.model import ComponentModel
from tests.core.analysis.tiny_models import tiny_gpt2, tiny_llama


@pytest.mark.parametrize("through_delta", [False, True])
def test_batched_equals_reference_llama(
    llama: ComponentModel, tokens: torch.Tensor, through_delta: bool
) -> None:
    outputs = [(-1, 3), (-1, 7), (4, 11)]
    fast = attribution_graph(
        llama, tokens, threshold=0.05, outputs=outputs, through_delta=through_delta, chunk=7
    )
    ref = attribution_graph_reference(
        llama, tokens, threshold=0.05, outputs=outputs, through_delta=through_delta
    )
    assert fast.nodes == ref.nodes
    assert {"0.attn.o", "1.attn.o"} <= {n.layer for n in fast.nodes}  # cross-position targets
    # Through the delta of an untrained decomposition edges reach ~1e3: compare at float32
    # resolution.
    scale = 1.0 if not through_delta else max(1.0, float(ref.edges.abs().max()))
    assert (fast.edges - ref.edges).abs().max() <= 1e-5 * scale
    assert (fast.edges_abs - ref.edges_abs).abs().max() <= 1e-5 * scale
    assert int((fast.edges != 0).sum()) > 50, "graph should have many nonzero edges"
    layers = {n.layer for n in fast.nodes}
    assert EMBED in layers and OUTPUT in layers
    # edges point from earlier to later nodes only (acyclic, topological order)
    assert torch.triu(fast.edges).abs().max() == 0
    # signed edges really have both signs; the abs variant bounds them
    assert (fast.edges > 0).any() and (fast.edges < 0).any()
    assert bool((fast.edges_abs + 1e-6 >= fast.edges.abs()).all())


def test_batched_equals_reference_gpt2_conv1d_and_embedding() -> None:
    model = tiny_gpt2()
    x = torch.randint(0, 40, (1, 7), generator=torch.Generator().manual_seed(3))
    fast = attribution_graph(model, x, threshold=0.1, through_delta=True)
    ref = attribution_graph_reference(model, x, threshold=0.1, through_delta=True)
    assert (fast.edges - ref.edges).abs().max() <= 1e-5 * max(1.0, float(ref.edges.abs().max()))
    fast0 = attribution_graph(model, x, threshold=0.1)
    ref0 = attribution_graph_reference(model, x, threshold=0.1)
    assert (fast0.edges - ref0.edges).abs().max() <= 1e-5
    assert any(n.layer == "embed" for n in fast.nodes)  # embedding is decomposed: component nodes


def test_logits_come_from_the_graph_pass(llama: ComponentModel, tokens: torch.Tensor) -> None:
    g = attribution_graph(llama, tokens, threshold=0.5)
    target = llama.target_output(tokens)[0]
    assert (g.logits - target).abs().max() <= 1e-5
    assert torch.allclose(g.probs, g.logits.softmax(-1))
    out_nodes = [(i, n) for i, n in enumerate(g.nodes) if n.layer == OUTPUT]
    assert len(out_nodes) == 3 and all(n.pos == tokens.shape[1] - 1 for _, n in out_nodes)
    for i, n in out_nodes:
        assert float(g.node_acts[i]) == pytest.approx(float(g.logits[n.pos, n.c]), abs=1e-6)


def test_edit_and_threshold_change_nodes_not_definition(
    llama: ComponentModel, tokens: torch.Tensor
) -> None:
    g_all = attribution_graph(llama, tokens, threshold=0.0)
    g_hi = attribution_graph(llama, tokens, threshold=0.6)
    idx = g_all.index()
    keep = [idx[n] for n in g_hi.nodes]
    # an edge between two nodes alive in both graphs has the same value in both
    sub = g_all.edges[keep][:, keep]
    assert (sub - g_hi.edges).abs().max() <= 1e-5


class _OneLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def test_linear_attribution_equals_ablation_logit_change() -> None:
    torch.manual_seed(0)
    model = ComponentModel(_OneLinear(), [("proj", 5)])
    x = torch.randn(1, 6)
    outputs = [(0, j) for j in range(4)]
    g = attribution_graph(model, x, threshold=0.0, outputs=outputs, through_delta=True)
    with torch.no_grad():
        ci = model.causal_importance(model(x, cache_inputs=True).inputs).lower["proj"]
        full = model.target_output(x)[0]
    idx = g.index()
    alive = [c for c in range(5) if float(ci[0, c]) > 0]
    assert len(alive) >= 2, "the seeded CI functions should leave several components alive"
    for c in alive:
        masks = {"proj": torch.ones(1, 5)}
        masks["proj"][0, c] = 0.0
        with torch.no_grad():
            ablated = model(x, masks=masks, delta_masks={"proj": torch.ones(1)}).output[0]
        for j in range(4):
            edge = g.edges[idx[NodeKey(OUTPUT, 0, j)], idx[NodeKey("proj", 0, c)]]
            assert float(edge) == pytest.approx(float(full[j] - ablated[j]), abs=1e-5)


def test_max_nodes_error_names_the_fix(tokens: torch.Tensor) -> None:
    model = tiny_llama()
    with pytest.raises(InvalidInput, match="raise the CI threshold"):
        attribution_graph(model, tokens, threshold=0.0, max_nodes=10)


def test_graph_under_an_edit_uses_the_edited_model(
    llama: ComponentModel, tokens: torch.Tensor
) -> None:
    from spd_core.analysis.editing import remove_edit
    from spd_core.analysis.overlay import applied
    from spd_core.keys import ComponentKey

    edit = remove_edit(llama, [ComponentKey("1.mlp.down", 0)])
    g = attribution_graph(llama, tokens, threshold=0.5, edit=edit)
    with torch.no_grad(), applied(llama, edit):
        edited = llama.target_output(tokens)[0]
    assert (g.logits - edited).abs().max() <= 1e-5
    assert (g.logits - llama.target_output(tokens)[0].detach()).abs().max() > 1e-4


def test_bench_function_smoke() -> None:
    from bench.bench_analysis import bench_analysis

    out = bench_analysis(repeats=1, seq=6, circuit_steps=3)
    assert out["attr_max_abs_diff"] <= 1e-5 and out["circuit_steps"] == 3
    assert out["attr_speedup"] > 0 and out["circuit_total_s"] > 0


def test_separating_sets_separate_every_ordered_pair() -> None:
    from spd_core.analysis.attribution_edges import _separating_sets

    for seq in (1, 2, 7, 32, 70):
        sel = _separating_sets(seq)
        for p in range(seq):
            for q in range(seq):
                if p != q:
                    assert bool((sel[:, p] & ~sel[:, q]).any()), (seq, p, q)


def test_cross_position_edges_exist_only_where_attention_reads(
    llama: ComponentModel, tokens: torch.Tensor
) -> None:
    g = attribution_graph(llama, tokens, threshold=0.0)
    assert any(n.layer.endswith("attn.o") for n in g.nodes)
    nz = g.edges.nonzero().tolist()
    cross = {
        (g.nodes[j].layer, g.nodes[i].layer) for i, j in nz if g.nodes[i].pos != g.nodes[j].pos
    }
    assert cross, "keys/values should feed attention outputs at later positions"
    assert all(t.endswith("attn.o") and s.split(".")[-1] in ("k", "v") for s, t in cross), cross
    assert all(g.nodes[i].pos >= g.nodes[j].pos for i, j in nz), "edges must respect causality"
