"""Next-token predictions of the target model (and output vectors of toy models), with NaN/Inf
located."""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from spd_core.analysis import health
from spd_core.keys import canonical_layer_name
from spd_core.model import ComponentModel
from spd_mcp.server.errors import NotFiniteError


@dataclass(frozen=True)
class TopToken:
    token_id: int
    prob: float


@dataclass(frozen=True)
class TokenPredictions:
    token_ids: list[int]
    top: list[list[TopToken]]  # per reported position
    positions: list[int]
    next_token_probs: list[float | None]  # P(token i+1 | tokens ≤ i); None at the last position


@dataclass(frozen=True)
class VectorOutput:
    values: list[float]


def locate_nonfinite(model: ComponentModel, run: Callable[[], Tensor]) -> str:
    """Re-run ``run`` with hooks (``analysis.health.locate_nonfinite``); name the first module of
    the target model whose output holds a NaN or Inf."""
    site = health.locate_nonfinite(model, run)
    if site is None:
        return "NaN/Inf appeared in the model output"
    layer = canonical_layer_name(site.module)
    return f"{site.kind} first appeared in the output of layer {layer} (module {site.module})"


@torch.no_grad()
def predict_tokens(
    model: ComponentModel, token_ids: list[int], top_k: int, all_positions: bool
) -> TokenPredictions:
    """Target-model next-token distribution: top-k at the last (or every) position, and P(actual
    next token)."""
    device = next(model.parameters()).device
    ids = torch.tensor([token_ids], device=device)
    logits = model.target_output(ids)[0]  # (seq, vocab)
    if not bool(torch.isfinite(logits).all()):
        raise NotFiniteError(locate_nonfinite(model, lambda: model.target_output(ids)))
    probs = logits.float().softmax(-1)
    seq, vocab = probs.shape
    k = min(top_k, vocab)
    positions = list(range(seq)) if all_positions else [seq - 1]
    top_p, top_i = probs[positions].topk(k, dim=-1)
    top = [
        [TopToken(int(i), float(p)) for p, i in zip(pr, ir, strict=True)]
        for pr, ir in zip(top_p, top_i, strict=True)
    ]
    nxt = probs[torch.arange(seq - 1), ids[0, 1:]].tolist() if seq > 1 else []
    return TokenPredictions(list(token_ids), top, positions, [*map(float, nxt), None])


@torch.no_grad()
def predict_vector(model: ComponentModel, features: list[float]) -> VectorOutput:
    """A toy model's output vector for one input feature vector."""
    param = next(model.parameters())
    x = torch.tensor([features], dtype=param.dtype, device=param.device)
    out = model.target_output(x)
    if not bool(torch.isfinite(out).all()):
        raise NotFiniteError(locate_nonfinite(model, lambda: model.target_output(x)))
    return VectorOutput([float(v) for v in out.reshape(-1).tolist()])
