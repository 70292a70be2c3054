"""NaN/Inf in an input, a target weight, a component or a CI function is an error naming where it
appeared."""

import copy

import pytest
import torch

from spd_core.analysis.ablation import ablate
from spd_core.analysis.attributions import attribution_graph
from spd_core.analysis.ci import compute_ci
from spd_core.analysis.health import NonFiniteError
from spd_core.keys import ComponentKey
from spd_core.model import ComponentModel
from tests.core.analysis.tms_like import tms_like


def test_nan_input_is_reported_as_input() -> None:
    model = tms_like()
    x = torch.zeros(1, 5)
    x[0, 3] = float("nan")
    with pytest.raises(NonFiniteError, match="'input'") as err:
        compute_ci(model, x)
    assert err.value.layer == "input"


def test_nan_target_weight_names_the_layer(llama: ComponentModel, tokens: torch.Tensor) -> None:
    model = copy.deepcopy(llama)
    with torch.no_grad():
        model.target.get_submodule("model.layers.1.mlp.down_proj").weight[3, 5] = float("nan")
    with pytest.raises(NonFiniteError, match="1.mlp.down") as err:
        compute_ci(model, tokens)
    assert err.value.layer == "1.mlp.down" and err.value.position == 0
    with pytest.raises(NonFiniteError, match="1.mlp.down"):
        attribution_graph(model, tokens, threshold=0.5)


def test_inf_embedding_row_names_module_and_position(
    llama: ComponentModel, tokens: torch.Tensor
) -> None:
    model = copy.deepcopy(llama)
    tok = int(tokens[0, 4])
    first = int((tokens[0] == tok).nonzero()[0, 0])
    with torch.no_grad():
        model.target.get_submodule("model.embed_tokens").weight[tok, 0] = float("inf")
    with pytest.raises(NonFiniteError) as err:
        compute_ci(model, tokens)
    assert err.value.layer == "model.embed_tokens" and err.value.position == first


def test_nan_component_vector_names_the_layer_in_masked_forward(
    llama: ComponentModel, tokens: torch.Tensor
) -> None:
    model = copy.deepcopy(llama)
    with torch.no_grad():
        model.comp("0.attn.k").U[2, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="0.attn.k"):
        ablate(
            model,
            tokens,
            components=[ComponentKey("1.mlp.up", 0)],
            regime="stochastic",
            n_samples=1,
        )


def test_nan_ci_function_names_the_layer(llama: ComponentModel, tokens: torch.Tensor) -> None:
    model = copy.deepcopy(llama)
    with torch.no_grad():
        model.ci_fns["0-mlp-gate"].b_out[1] = float("nan")
    with pytest.raises(NonFiniteError, match="0.mlp.gate"):
        compute_ci(model, tokens)
