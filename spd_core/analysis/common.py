"""Shape conventions shared by the analyses: one input at a time, results per (position, component).

Inputs are token ids (1, seq) for language models or features (1, d_in) for toy models; a toy
model's single row counts as one position. Model-shaped tensors keep the batch dim; results drop it.
"""

from collections.abc import Mapping

import torch
from torch import Tensor

from spd_core.keys import resolve_position
from spd_core.losses import kl_div as kl_div  # re-exported: the analyses' KL is the training loss's


def check_single_input(x: Tensor) -> None:
    assert x.ndim >= 2 and x.shape[0] == 1, (
        "analyses take one input with a batch dim of 1: token ids (1, seq) or features (1, d_in); "
        f"got shape {tuple(x.shape)}"
    )


def per_position(t: Tensor) -> Tensor:
    """Drop the batch dim: (1, seq, X) -> (seq, X); a toy (1, X) stays (1, X) (one position)."""
    return t[0] if t.ndim >= 3 else t


def model_shaped(t: Tensor, like: Tensor) -> Tensor:
    """Inverse of ``per_position`` for a tensor shaped like the model's ``like``."""
    return t.unsqueeze(0) if like.ndim >= 3 else t


def resolve(pos: int, seq: int) -> int:
    return resolve_position(pos, seq)


def top_k(probs: Tensor, k: int) -> list[tuple[int, float]]:
    """[(token id, probability)] of the ``k`` most probable entries of a 1-D distribution."""
    k = min(k, probs.shape[-1])
    vals, idx = probs.topk(k)
    return [(int(i), float(v)) for i, v in zip(idx, vals, strict=True)]


def ones_like_ci(ci: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    return {k: torch.ones_like(g) for k, g in ci.items()}, {
        k: torch.ones_like(g[..., 0]) for k, g in ci.items()
    }
