"""CI and inner activations from one pass agree with the model's own CI route; profiles agree with
them."""

import torch

from spd_core.analysis.ci import component_profile, compute_ci
from spd_core.errors import InvalidInput
from spd_core.model import ComponentModel


def test_compute_ci_matches_model_route(llama: ComponentModel, tokens: torch.Tensor) -> None:
    res = compute_ci(llama, tokens)
    with torch.no_grad():
        fwd = llama(tokens, cache_inputs=True)
        ci = llama.causal_importance(fwd.inputs).lower
    assert list(res.ci) == list(llama.layers)
    for layer in llama.layers:
        assert torch.equal(res.ci[layer], ci[layer][0])
        x = fwd.inputs[layer][0]
        assert torch.allclose(res.inner_acts[layer], x @ llama.comp(layer).V, atol=1e-6)
        assert res.ci[layer].shape == (tokens.shape[1], llama.layers[layer].C)
    assert torch.equal(res.output, llama.target_output(tokens)[0])
    l0 = res.l0(0.5)
    assert all(int(v.sum()) == int((res.ci[k] > 0.5).sum()) for k, v in l0.items())
    assert len(res.active(0.5)) == sum(int(v.sum()) for v in l0.values())


def test_component_profile_matches_compute_ci(llama: ComponentModel, tokens: torch.Tensor) -> None:
    res = compute_ci(llama, tokens)
    prof = component_profile(llama, tokens, "1.mlp.gate", 3)
    assert torch.equal(prof.ci, res.ci["1.mlp.gate"][:, 3])
    assert torch.equal(prof.inner_acts, res.inner_acts["1.mlp.gate"][:, 3])
    assert prof.max_ci == float(prof.ci.max()) and prof.ci[prof.argmax_ci] == prof.max_ci
    assert abs(prof.inner_acts[prof.argmax_abs_act]) == prof.max_abs_act


def test_profile_rejects_bad_component(llama: ComponentModel, tokens: torch.Tensor) -> None:
    import pytest

    with pytest.raises(InvalidInput, match="valid: 0..7"):
        component_profile(llama, tokens, "1.mlp.gate", 8)
    with pytest.raises(InvalidInput, match="valid layers"):
        component_profile(llama, tokens, "2.mlp.gate", 0)
