"""Ablation regimes and steering, each checked against a direct masked forward of the model."""

import pytest
import torch

from spd_core.analysis.ablation import ablate
from spd_core.analysis.circuits import CircuitConfig
from spd_core.analysis.common import kl_div
from spd_core.analysis.finder import Example, find_components
from spd_core.analysis.steering import steer
from spd_core.errors import InvalidInput
from spd_core.keys import ComponentKey, NodeKey
from spd_core.model import ComponentModel
from tests.core.analysis.tms_like import tms_like


def _masks(model: ComponentModel, x: torch.Tensor, fill: float) -> tuple[dict, dict]:
    with torch.no_grad():
        ci = model.causal_importance(model(x, cache_inputs=True).inputs).lower
    return {k: torch.full_like(v, fill) for k, v in ci.items()}, {
        k: torch.full_like(v[..., 0], fill) for k, v in ci.items()
    }


def test_node_ablation_matches_direct_forward(llama: ComponentModel, tokens: torch.Tensor) -> None:
    node = NodeKey("0.mlp.up", 3, 2)
    res = ablate(llama, tokens, nodes=[node], mode="remove", token=5, k=4)
    masks, delta = _masks(llama, tokens, 1.0)
    masks["0.mlp.up"][0, 3, 2] = 0.0
    with torch.no_grad():
        after = llama(tokens, masks=masks, delta_masks=delta).output[0, -1]
        before = llama.target_output(tokens)[0, -1]
    assert res.kl == pytest.approx(float(kl_div(before, after)), abs=1e-6)
    assert res.token_prob_after == pytest.approx(float(after.softmax(-1)[5]), abs=1e-6)
    assert res.token_prob_before == pytest.approx(float(before.softmax(-1)[5]), abs=1e-6)
    assert res.kl > 0


def test_keep_only_everything_is_components_without_delta(
    llama: ComponentModel, tokens: torch.Tensor
) -> None:
    every = [ComponentKey(layer, c) for layer, info in llama.layers.items() for c in range(info.C)]
    res = ablate(llama, tokens, components=every, mode="keep_only", position=4)
    masks, _ = _masks(llama, tokens, 1.0)
    with torch.no_grad():
        after = llama(tokens, masks=masks).output[0, 4]
        before = llama.target_output(tokens)[0, 4]
    assert res.kl == pytest.approx(float(kl_div(before, after)), abs=1e-6)


def test_stochastic_and_adversarial_regimes_are_seeded(
    llama: ComponentModel, tokens: torch.Tensor
) -> None:
    keys = [ComponentKey("1.mlp.down", 1)]
    a = ablate(llama, tokens, components=keys, regime="stochastic", n_samples=3, seed=1)
    b = ablate(llama, tokens, components=keys, regime="stochastic", n_samples=3, seed=1)
    assert a == b
    adv = ablate(llama, tokens, components=keys, regime="adversarial", pgd_steps=5, seed=1)
    assert adv.kl >= 0 and adv.regime == "adversarial"
    with pytest.raises(
        InvalidInput, match="regime must be 'deterministic', 'stochastic' or 'adversarial'"
    ):
        ablate(llama, tokens, components=keys, regime="bogus")  # type: ignore[arg-type]


def test_steer_identity_and_zero_scale(llama: ComponentModel, tokens: torch.Tensor) -> None:
    key = ComponentKey("1.mlp.down", 2)
    same = steer(llama, tokens, {key: 1.0}, max_new_tokens=4)
    assert same.baseline == same.steered
    assert max(abs(c.logit_change) for c in same.changes) <= 1e-5
    off = steer(llama, tokens, {key: 0.0}, max_new_tokens=3, k=5)
    res = ablate(llama, tokens, components=[key], k=5)
    assert [t for t, _ in off.steered_top] == [t for t, _ in res.after_top]
    assert [p for _, p in off.steered_top] == pytest.approx([p for _, p in res.after_top], abs=1e-6)
    gated = steer(
        llama, tokens, {key: 0.0}, max_new_tokens=2, only_where_ci_above=2.0
    )  # CI ≤ 1: never applies
    assert max(abs(c.logit_change) for c in gated.changes) <= 1e-5
    sampled = steer(
        llama, tokens, {key: 3.0}, max_new_tokens=3, n_samples=2, temperature=1.0, seed=4
    )
    assert sampled == steer(
        llama, tokens, {key: 3.0}, max_new_tokens=3, n_samples=2, temperature=1.0, seed=4
    )
    assert len(sampled.steered) == 2 and all(len(s) == 3 for s in sampled.steered)


def test_finder_on_tms_like_finds_the_feature_components() -> None:
    model = tms_like()
    examples = []
    for scale in (0.8, 1.0, 1.2):
        x = torch.zeros(1, 5)
        x[0, 1] = scale
        examples.append(Example(x, target_token=1, position=0))
    res = find_components(
        model,
        examples,
        min_frequency=1.0,
        scope="any",
        ci_threshold=0.1,
        circuit=CircuitConfig(steps=100, sparsity=0.05),
    )
    assert {f.key for f in res.components} == {
        ComponentKey("linear1", 1),
        ComponentKey("linear2", 1),
    }
    assert all(f.frequency == 1.0 and f.count == 3 for f in res.components)
    ci_res = find_components(model, examples, min_frequency=1.0, method="ci")
    assert len(ci_res.components) == 10  # every CI of the hand-built model is 1
