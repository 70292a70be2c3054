"""Each loss against a value computed by hand on tiny tensors; PGD raises the loss; gradients flow;
the loss-weighted layer draw and its checkpointed state."""

import math

import pytest
import torch
from torch import nn

from spd_core.ci import lower_leaky_hard_sigmoid, upper_leaky_hard_sigmoid
from spd_core.config import DecompositionConfig, ModulePattern
from spd_core.decompose import decompose, loss_terms
from spd_core.errors import InvalidInput
from spd_core.losses import (
    LossWeightedLayers,
    faithfulness_loss,
    importance_minimality_loss,
    masked_recon_loss,
    output_loss,
    pgd_masks,
)
from spd_core.masks import (
    fold_routing,
    layer_subset_routing,
    rounded_masks,
    sequence_layer_routing,
    stochastic_masks,
)
from spd_core.model import ComponentModel


class TwoLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4, bias=False)
        self.b = nn.Linear(4, 2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def _model(ci_fn_type="mlp") -> ComponentModel:
    return ComponentModel(TwoLinear(), [("a", 3), ("b", 2)], ci_fn_type=ci_fn_type)


def test_mse_and_kl_output_losses_match_hand_values() -> None:
    pred, target = torch.tensor([[1.0, 2.0], [0.0, -1.0]]), torch.tensor([[0.0, 2.0], [1.0, 1.0]])
    assert output_loss(pred, target, "mse").item() == pytest.approx((1 + 0 + 1 + 4) / 4)
    p = [math.exp(0) / (math.exp(0) + math.exp(2)), math.exp(2) / (math.exp(0) + math.exp(2))]
    q = [math.exp(1) / (math.exp(1) + math.exp(2)), math.exp(2) / (math.exp(1) + math.exp(2))]
    kl0 = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    p1 = [0.5, 0.5]
    q1 = [math.exp(0) / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))]
    kl1 = sum(pi * math.log(pi / qi) for pi, qi in zip(p1, q1, strict=True))
    assert output_loss(pred, target, "kl").item() == pytest.approx((kl0 + kl1) / 2, rel=1e-5)


def test_faithfulness_is_mean_squared_delta() -> None:
    model = _model()
    with torch.no_grad():
        model.comp("a").V.zero_()
        model.comp("b").V.zero_()
    wa, wb = model.comp("a").target_weight, model.comp("b").target_weight
    expected = (wa.pow(2).sum() + wb.pow(2).sum()) / (wa.numel() + wb.numel())
    assert faithfulness_loss(model).item() == pytest.approx(expected.item(), rel=1e-6)


def test_faithfulness_stays_fp32_under_bf16_autocast() -> None:
    """bf16 keeps about 3 digits: under autocast the loss must still equal the value computed by
    hand in float64 to 1e-5 (the bf16 product's is 1.2e-3 off here)."""
    model = _model()
    with torch.no_grad():
        for layer in ("a", "b"):
            comp = model.comp(layer)
            comp.V.copy_(comp.target_weight.T @ torch.linalg.pinv(comp.U))  # (V U)ᵀ close to W
    deltas = [
        (model.comp(k).target_weight - (model.comp(k).V @ model.comp(k).U).T).detach()
        for k in ("a", "b")
    ]
    expected = sum(float(d.double().pow(2).sum()) for d in deltas) / sum(d.numel() for d in deltas)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = faithfulness_loss(model).detach()
    assert got.dtype == torch.float32 and got.item() == pytest.approx(expected, rel=1e-5)


def test_importance_minimality_hand_value() -> None:
    g = {"x": torch.tensor([[0.5, 0.0], [1.0, 0.2]]), "y": torch.tensor([[[0.3]], [[0.1]]])}
    # p = 1: per component means over batch: x -> [0.75, 0.1]; y -> [0.2]
    assert importance_minimality_loss(g, p=1.0, eps=0).item() == pytest.approx(0.75 + 0.1 + 0.2)
    # p = 2: x -> [(0.25 + 1) / 2, (0 + 0.04) / 2]; y -> [(0.09 + 0.01) / 2]
    assert importance_minimality_loss(g, p=2.0, eps=0).item() == pytest.approx(0.625 + 0.02 + 0.05)


def test_leaky_hard_sigmoids_values_and_gradients() -> None:
    x = torch.tensor([-1.0, 0.5, 1.5], requires_grad=True)
    assert upper_leaky_hard_sigmoid(x).tolist() == pytest.approx([0.0, 0.5, 1.005])
    lower = lower_leaky_hard_sigmoid(x)
    assert lower.tolist() == [0.0, 0.5, 1.0]
    # A loss that wants every value larger: gradient of -sum is -1 everywhere.
    (grad_up,) = torch.autograd.grad(-lower.sum(), x)
    assert grad_up.tolist() == pytest.approx([-0.01, -1.0, 0.0])
    # A loss that wants them smaller: no leak below 0.
    (grad_down,) = torch.autograd.grad(lower_leaky_hard_sigmoid(x).sum(), x)
    assert grad_down.tolist() == pytest.approx([0.0, 1.0, 0.0])


def test_stochastic_masks_are_ci_plus_the_rest_times_the_source() -> None:
    """Second route: with the same draws, m = g + (1 − g)·s as written, to within one rounding;
    exactly g where s = 0 and exactly 1 where s = 1 (binomial), and exactly 1 where g = 1."""
    g = torch.rand(256, 7)
    g[:3] = 1.0
    g[3:6] = 0.0
    torch.manual_seed(5)
    masks, _ = stochastic_masks({"a": g})
    torch.manual_seed(5)
    s = torch.rand(256, 7)
    torch.testing.assert_close(masks["a"], g + (1 - g) * s, rtol=0, atol=1.2e-7)
    assert (masks["a"][:3] == 1).all() and torch.equal(masks["a"][3:6], s[3:6])
    torch.manual_seed(6)
    binomial, _ = stochastic_masks({"a": g}, "binomial")
    torch.manual_seed(6)
    s = torch.randint(0, 2, (256, 7)).float()
    assert torch.equal(binomial["a"], torch.where(s == 1, 1.0, g))


def test_stochastic_masks_lie_between_ci_and_one() -> None:
    ci = {"a": torch.rand(64, 5)}
    masks, delta = stochastic_masks(ci, "continuous")
    assert (masks["a"] >= ci["a"] - 1e-7).all() and (masks["a"] <= 1 + 1e-7).all()
    assert delta["a"].shape == (64,) and ((delta["a"] >= 0) & (delta["a"] <= 1)).all()
    masks_b, delta_b = stochastic_masks(ci, "binomial")
    on_ci = torch.isclose(masks_b["a"], ci["a"])
    assert (on_ci | torch.isclose(masks_b["a"], torch.ones(()))).all()
    assert set(delta_b["a"].unique().tolist()) <= {0.0, 1.0}
    assert rounded_masks({"a": torch.tensor([0.05, 0.5])}, 0.1)["a"].tolist() == [0.0, 1.0]


def test_subset_routing_picks_at_least_one_layer_per_position() -> None:
    routing = layer_subset_routing(["a", "b", "c"], torch.Size([500]), torch.device("cpu"))
    chosen = torch.stack(list(routing.values()), dim=-1)
    assert chosen.any(-1).all()
    counts = chosen.sum(-1).bincount(minlength=4)[1:].float() / 500
    assert all(0.2 < c < 0.47 for c in counts.tolist()), (
        f"k should be ~uniform on 1..3, got {counts}"
    )


def test_folded_routing_equals_the_two_path_routing_in_value_and_gradient() -> None:
    torch.manual_seed(3)
    model = _model()
    x = torch.randn(200, 3)
    with torch.no_grad():
        tgt = model(x, cache_inputs=True)
    ci = model.causal_importance(tgt.inputs).lower
    masks, delta = stochastic_masks(ci)
    routing = layer_subset_routing(list(model.layers), x.shape[:-1], x.device)
    assert all(0 < int(r.sum()) < 200 for r in routing.values()), (
        "each layer should be routed at some positions only"
    )
    routed = model(x, masks=masks, delta_masks=delta, routing=routing).output
    folded_masks, folded_delta = fold_routing(masks, delta, routing)
    folded = model(x, masks=folded_masks, delta_masks=folded_delta).output
    torch.testing.assert_close(folded, routed, rtol=1e-5, atol=1e-6)
    params = [p for p in model.parameters() if p.requires_grad]
    g_routed = torch.autograd.grad(
        routed.pow(2).sum(), params, allow_unused=True, retain_graph=True
    )
    g_folded = torch.autograd.grad(folded.pow(2).sum(), params, allow_unused=True)
    for a, b in zip(g_routed, g_folded, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_sequence_layer_routes_one_layer_per_sequence_at_every_position() -> None:
    torch.manual_seed(0)
    routing = sequence_layer_routing(["a", "b", "c"], torch.Size([300, 7]), torch.device("cpu"))
    stacked = torch.stack([routing[k] for k in "abc"], -1)  # (300, 7, 3)
    assert (stacked.sum(-1) == 1).all(), "exactly one layer per position"
    assert (stacked == stacked[:, :1]).all(), "the same layer at every position of a sequence"
    share = stacked[:, 0].float().mean(0)
    assert all(0.25 < v < 0.42 for v in share.tolist()), (
        f"layers should be drawn ~uniformly, got {share}"
    )


def test_sequence_layer_ci_loss_is_the_single_layer_loss_of_each_sequence_averaged() -> None:
    """Second route: split the batch by the drawn layer and run each part with that layer alone."""
    torch.manual_seed(5)
    model = _model()
    x = torch.randn(120, 3)
    with torch.no_grad():
        tgt = model(x, cache_inputs=True)
        ci = model.causal_importance(tgt.inputs).lower
        torch.manual_seed(11)
        picked = sequence_layer_routing(list(model.layers), x.shape[:-1], x.device)
        torch.manual_seed(11)
        got = masked_recon_loss(model, x, tgt.output, ci, None, "mse", "sequence_layer")
        total = torch.zeros(())
        for layer, rows in picked.items():
            assert 0 < int(rows.sum()) < 120, "both layers should be drawn for some sequences"
            part = masked_recon_loss(
                model,
                x[rows],
                tgt.output[rows],
                {k: g[rows] for k, g in ci.items()},
                None,
                "mse",
                "random_layer",
                layer=layer,
            )
            total = total + part * int(rows.sum())
    assert got.item() == pytest.approx((total / 120).item(), rel=1e-5)


def test_masked_recon_matches_hand_forward() -> None:
    model = _model()
    x = torch.randn(6, 3)
    y = model.target_output(x)
    ma, mb, da = torch.rand(6, 3), torch.rand(6, 2), torch.rand(6)
    a, b = model.comp("a"), model.comp("b")
    with torch.no_grad():
        h = torch.relu(((x @ a.V) * ma) @ a.U + da[:, None] * (x @ a.weight_delta().T))
        out = ((h @ b.V) * mb) @ b.U + b.bias
        expected = (out - y).pow(2).mean()
        got = masked_recon_loss(model, x, y, {"a": ma, "b": mb}, {"a": da}, "mse")
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    # layerwise: mean of the two single-layer losses
    with torch.no_grad():
        only_a = (
            (
                (
                    (torch.relu(((x @ a.V) * ma) @ a.U + da[:, None] * (x @ a.weight_delta().T)))
                    @ b.target_weight.T
                    + b.bias
                )
                - y
            )
            .pow(2)
            .mean()
        )
        only_b = (((torch.relu(x @ a.target_weight.T) @ b.V) * mb) @ b.U + b.bias - y).pow(2).mean()
        lw = masked_recon_loss(
            model, x, y, {"a": ma, "b": mb}, {"a": da, "b": torch.zeros(6)}, "mse", "layerwise"
        )
    assert lw.item() == pytest.approx(((only_a + only_b) / 2).item(), rel=1e-5)


def test_pgd_steps_increase_reconstruction_loss() -> None:
    model = _model()
    x = torch.randn(256, 3)
    y = model.target_output(x)
    ci = model.causal_importance(model(x, cache_inputs=True).inputs).lower
    ci = {k: (0.5 * v).detach() for k, v in ci.items()}
    torch.manual_seed(1)
    start = masked_recon_loss(
        model, x, y, *pgd_masks(model, x, y, ci, "mse", steps=0, step_size=0.1), "mse"
    )
    torch.manual_seed(1)
    adv = masked_recon_loss(
        model, x, y, *pgd_masks(model, x, y, ci, "mse", steps=5, step_size=0.1), "mse"
    )
    assert adv.item() > start.item() * 1.05, (start.item(), adv.item())


@pytest.mark.parametrize("ci_fn_type", ["mlp", "vector_mlp", "shared_mlp"])
def test_gradients_reach_components_and_ci_functions(ci_fn_type: str) -> None:
    model = _model(ci_fn_type)
    config = DecompositionConfig(
        steps=10,
        batch_size=8,
        modules=[ModulePattern(pattern="a", C=3)],
        importance_coeff=1e-2,
        faithfulness_coeff=1.0,
        stochastic_subset_coeff=1.0,
        ci_recon_coeff=1.0,
        pgd_recon_coeff=1.0,
        pgd_steps=2,
    )
    loss, values, _ = loss_terms(model, torch.randn(16, 3), config, step=0)
    loss.backward()
    assert set(values) == {
        "faithfulness",
        "importance",
        "stochastic",
        "stochastic_layerwise",
        "stochastic_subset",
        "ci_recon",
        "pgd",
    }
    for name, p in model.named_parameters():
        if name.startswith(("components.", "ci_fns.")):
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached {name}"
        else:
            assert p.grad is None, f"the frozen target got a gradient at {name}"


class Stack(nn.Module):
    """Three decomposed layers; ``inplace`` doubles the first one's output in place."""

    def __init__(self, dims: tuple[int, ...], inplace: bool = False) -> None:
        super().__init__()
        self.a = nn.Linear(dims[0], dims[1], bias=False)
        self.b = nn.Linear(dims[1], dims[2], bias=True)
        self.c = nn.Linear(dims[2], dims[3], bias=True)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        if self.inplace:
            h.mul_(2.0)
        return self.c(torch.relu(self.b(torch.relu(h))) + 0.5)


@pytest.mark.parametrize("mode", ["all", "layerwise", "random_layer"])
@pytest.mark.parametrize("dims", [(3, 4, 2, 5), (6, 3, 7, 2)])
@pytest.mark.parametrize("inplace", [False, True])
def test_reuse_of_target_pass_acts_and_outputs_changes_nothing(
    mode: str, dims: tuple[int, ...], inplace: bool
) -> None:
    """Second route: the masked loss with the target pass's inner activations and layer outputs
    reused (the first masked layer's x·V and delta product, the outputs of the layers before it)
    equals the loss computed from scratch, in value and in every gradient (components, CI masks).
    A layer output the target changes in place after the layer returned it is not reused."""
    model = ComponentModel(Stack(dims, inplace), [("a", 3), ("b", 4), ("c", 2)])
    x = torch.randn(32, dims[0])
    with torch.no_grad():
        tgt = model(x, cache_inputs=True, cache_outputs=True)
    assert list(tgt.inputs) == ["a", "b", "c"]  # the order the layers ran
    assert set(tgt.outputs) == ({"b", "c"} if inplace else {"a", "b", "c"})
    for layer in ("a", "b", "c"):
        if layer in tgt.outputs:
            expected = model.comp(layer).target_forward(tgt.inputs[layer])
            torch.testing.assert_close(tgt.outputs[layer], expected)
    ci = {k: v.detach() for k, v in model.causal_importance(tgt.inputs).lower.items()}
    lower = {k: v.clone().requires_grad_() for k, v in ci.items()}
    params = [p for n, p in model.named_parameters() if n.startswith("components.")]
    results = []
    for reuse in (False, True):
        torch.manual_seed(3)  # the same masks, and the same layer for random_layer
        masks, delta = stochastic_masks(lower)
        acts = model.inner_acts(tgt.inputs) if reuse else None
        outs = tgt.outputs if reuse else None
        loss = masked_recon_loss(
            model, x, tgt.output, masks, delta, "mse", mode, acts, target_outs=outs
        )
        wrt = params + list(lower.values())
        grads = torch.autograd.grad(loss, wrt, allow_unused=True)  # random_layer: one layer
        results.append(
            [loss]
            + [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt, strict=True)]
        )
    for plain, reused in zip(*results, strict=True):
        torch.testing.assert_close(reused, plain)


def test_random_layer_with_a_fixed_layer_is_that_layer_alone() -> None:
    model = _model()
    x = torch.randn(6, 3)
    y = model.target_output(x)
    ma, mb = torch.rand(6, 3), torch.rand(6, 2)
    a, b = model.comp("a"), model.comp("b")
    with torch.no_grad():
        only_b = (((torch.relu(x @ a.target_weight.T) @ b.V) * mb) @ b.U + b.bias - y).pow(2).mean()
        got = masked_recon_loss(
            model, x, y, {"a": ma, "b": mb}, None, "mse", "random_layer", layer="b"
        )
    assert got.item() == pytest.approx(only_b.item(), rel=1e-5)
    with pytest.raises(InvalidInput, match="unknown layer 'c'; valid: a, b"):
        masked_recon_loss(model, x, y, {"a": ma, "b": mb}, None, "mse", "random_layer", layer="c")


def test_loss_weighted_layers_probabilities_updates_and_draws() -> None:
    sampler = LossWeightedLayers(["a", "b"], decay=0.5)
    assert sampler.probabilities() == pytest.approx([0.5, 0.5])
    sampler.update("a", 3.0)
    assert sampler.probabilities() == pytest.approx(
        [0.5, 0.5]
    )  # an unseen layer counts as the worst seen
    sampler.update("b", 1.0)
    assert sampler.probabilities() == pytest.approx([0.25 + 0.5 * 3 / 4, 0.25 + 0.5 * 1 / 4])
    sampler.update("b", 3.0)  # running mean 0.5·1 + 0.5·3
    assert sampler.mean == {"a": 3.0, "b": 2.0}
    torch.manual_seed(0)
    draws = [sampler.draw() for _ in range(4000)]
    assert draws.count("a") / 4000 == pytest.approx(0.25 + 0.5 * 3 / 5, abs=0.03)


def test_loss_layer_sampling_needs_random_layer_mode() -> None:
    with pytest.raises(ValueError, match="needs ci_recon_mode 'random_layer', got 'all'"):
        DecompositionConfig(
            steps=1,
            batch_size=1,
            modules=[ModulePattern(pattern="a", C=1)],
            importance_coeff=1.0,
            ci_recon_coeff=1.0,
            ci_recon_layer_sampling="loss",
        )


class _Gaussian:
    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(batch_size, 3, generator=generator)


def test_loss_weighted_run_resumes_to_the_same_components(tmp_path) -> None:
    config = DecompositionConfig(
        steps=20,
        batch_size=16,
        modules=[ModulePattern(pattern="*", C=3)],
        importance_coeff=1e-2,
        checkpoint_freq=5,
        ci_recon_coeff=1.0,
        ci_recon_mode="random_layer",
        ci_recon_layer_sampling="loss",
        output_loss="mse",
    )
    torch.manual_seed(0)
    whole = _model()
    decompose(whole, _Gaussian(), config, progress=False)
    torch.manual_seed(0)
    decompose(_model(), _Gaussian(), config, tmp_path, progress=False, stop_after=10)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["ci_layer_loss"].keys() == {
        "a",
        "b",
    }
    torch.manual_seed(0)
    resumed = _model()
    result = decompose(resumed, _Gaussian(), config, tmp_path, progress=False)
    assert result.resumed_from == 10
    for (name, p), q in zip(
        whole.trainable_state().items(), resumed.trainable_state().values(), strict=True
    ):
        torch.testing.assert_close(p, q, msg=f"resumed run diverged at {name}")
