"""Tool arguments as core inputs: text or features as a model input, component and node keys, target
tokens.

Keys are parsed only by ``spd_core.keys``; token strings go through the server's ``TokenizerView``.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from spd_core.analysis.graph_pass import EMBED, OUTPUT
from spd_core.keys import ComponentKey, NodeKey, parse_component_key, parse_node_key
from spd_mcp.server.errors import check_finite_values
from spd_mcp.server.state import AppState

TOY_TOKEN = "<input>"  # the single "position" of a toy model's feature vector


@dataclass(frozen=True)
class ModelInput:
    """``x``: token ids (1, seq) or features (1, d_in) on the model's device; ``tokens``: display
    strings."""

    x: Tensor
    tokens: list[str]
    token_ids: list[int]
    text: str | None

    @property
    def seq(self) -> int:
        return len(self.tokens)


def model_device(state: AppState) -> torch.device:
    return next(state.run.model.parameters()).device


def require_lm(state: AppState, tool: str) -> None:
    if not state.run.is_lm:
        raise ValueError(
            f"{tool} needs a language model (text and tokens); run {state.run.name!r} is a toy "
            f"model taking a feature vector of length {state.run.input_dim}. Valid tools for it: "
            "run_prompt, get_ci, probe_component, get_attributions (with 'features')"
        )


def text_input(state: AppState, text: str) -> ModelInput:
    ids = state.tok.tokenize(text, state.run.context_length)
    x = torch.tensor([ids], device=model_device(state))
    return ModelInput(x=x, tokens=state.tok.pieces(ids), token_ids=ids, text=text)


def checked_features(state: AppState, features: Sequence[float]) -> list[float]:
    """A toy model's input vector, checked: the run is a toy model, the values are finite and there
    are exactly ``input_dim`` of them; the error says what is valid."""
    run = state.run
    if run.is_lm:
        raise ValueError("this is a language model: give 'text', not 'features'")
    check_finite_values(features, "features")
    if run.input_dim is not None and len(features) != run.input_dim:
        raise ValueError(
            f"features has length {len(features)}; this model takes exactly {run.input_dim} values"
        )
    return list(features)


def model_input(state: AppState, text: str | None, features: list[float] | None) -> ModelInput:
    """Text for language models, a feature vector for toy models; the error says which one is
    valid."""
    run = state.run
    if (text is None) == (features is None):
        need = "'text'" if run.is_lm else f"'features' (a list of {run.input_dim} numbers)"
        raise ValueError(f"give exactly one of 'text' or 'features'; this run takes {need}")
    if features is not None:
        features = checked_features(state, features)
        param = next(run.model.parameters())
        x = torch.tensor([features], dtype=param.dtype, device=param.device)
        return ModelInput(x=x, tokens=[TOY_TOKEN], token_ids=[], text=None)
    assert text is not None
    return text_input(state, text)


def component_keys(state: AppState, keys: Sequence[str]) -> list[ComponentKey]:
    return [parse_component_key(k, state.layer_c()) for k in keys]


def node_keys(state: AppState, keys: Sequence[str], seq: int) -> list[NodeKey]:
    return [parse_node_key(k, state.layer_c(), seq) for k in keys]


def output_width(state: AppState) -> int:
    """Vocabulary size (language models) or output length (toy models)."""
    if state.run.is_lm:
        return state.tok.vocab_size
    info = list(state.run.model.layers.values())[-1]
    return info.d_out


def graph_node_key(state: AppState, key: str, seq: int) -> NodeKey:
    """A node of an attribution graph: a component node, 'output:<pos>:<token id>' or
    'embed:<pos>:0'."""
    layer_c = {**state.layer_c(), EMBED: 1, OUTPUT: output_width(state)}
    return parse_node_key(key, layer_c, seq)


def target_token(state: AppState, token: str) -> int:
    """The id of a string that must be exactly one token (the error lists its tokenizations)."""
    return state.tok.single_token(token)


def token_label(state: AppState, token_id: int) -> str:
    return state.tok.display(token_id) if state.run.is_lm else f"output[{token_id}]"
