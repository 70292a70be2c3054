"""Masks over components: CI, stochastic (continuous or binomial), rounded, all-ones, and
per-position random layer subsets (routing). Adversarial (PGD) masks live in ``losses.py`` next to
their loss.

A stochastic mask is m = g + (1 − g)·s with g the lower-leaky CI and s ~ U(0, 1) (``continuous``) or
s ∈ {0, 1} with probability ½ (``binomial``): m is uniform in [g, 1] and gradients reach g.
The weight delta gets its own mask per position, U(0, 1) (or {0, 1}) in the stochastic case.
"""

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

Sampling = Literal["continuous", "binomial"]
Masks = dict[str, Tensor]


def _source(shape: torch.Size, like: Tensor, sampling: Sampling) -> Tensor:
    if sampling == "continuous":
        return torch.rand(shape, device=like.device, dtype=like.dtype)
    if sampling == "binomial":
        return torch.randint(0, 2, shape, device=like.device).to(like.dtype)
    raise ValueError(f"unknown sampling {sampling!r}; valid: continuous, binomial")


def _between(g: Tensor, s: Tensor) -> Tensor:
    """g + (1 − g)·s, computed as s + g·(1 − s): one fused product and a single pass back to g.
    With s a multiple of 2⁻²⁴ in [0, 1] (torch.rand, or 0 / 1), 1 − s is exact, so the mask stays
    in [s, 1] and equals g at s = 0 and 1 at s = 1 exactly."""
    return torch.addcmul(s, g, 1 - s)


def stochastic_masks(
    ci: Mapping[str, Tensor], sampling: Sampling = "continuous"
) -> tuple[Masks, Masks]:
    """(component masks uniform in [ci, 1], delta masks) for every layer in ``ci``."""
    masks = {k: _between(g, _source(g.shape, g, sampling)) for k, g in ci.items()}
    delta = {k: _source(g.shape[:-1], g, sampling) for k, g in ci.items()}
    return masks, delta


def stochastic_mask_batch(
    ci: Mapping[str, Tensor], n: int, sampling: Sampling = "continuous"
) -> tuple[Masks, Masks]:
    """``n`` independent stochastic samples for one input as one batch: each CI (1, ...) is expanded
    to (n, ...) before sampling."""
    return stochastic_masks({k: g.expand(n, *g.shape[1:]) for k, g in ci.items()}, sampling)


def rounded_masks(ci: Mapping[str, Tensor], threshold: float) -> Masks:
    """1 where CI > threshold, else 0."""
    return {k: (g > threshold).to(g.dtype) for k, g in ci.items()}


def ones_masks(ci: Mapping[str, Tensor]) -> tuple[Masks, Masks]:
    """All components on and the delta on: reproduces the target exactly."""
    return {k: torch.ones_like(g) for k, g in ci.items()}, {
        k: torch.ones_like(g[..., 0]) for k, g in ci.items()
    }


def layer_subset_routing(
    layers: Sequence[str], leading_shape: torch.Size, device: torch.device
) -> Masks:
    """Per position, k ~ U{1..L} layers chosen uniformly at random route through components."""
    n = len(layers)
    assert n >= 1, "routing needs at least one layer"
    scores = torch.rand((*leading_shape, n), device=device)
    k = torch.randint(1, n + 1, (*leading_shape, 1), device=device)
    ranks = scores.argsort(dim=-1).argsort(dim=-1)
    chosen = ranks < k
    return {name: chosen[..., i] for i, name in enumerate(layers)}


def sequence_layer_routing(
    layers: Sequence[str], leading_shape: torch.Size, device: torch.device
) -> Masks:
    """Per sequence (first leading dim), one layer drawn uniformly routes through components at
    every position; the rest run the target. Each layer is then exactly "alone" on its sequences."""
    n = len(layers)
    assert n >= 1, "routing needs at least one layer"
    pick = torch.randint(n, leading_shape[:1], device=device).view(
        -1, *[1] * (len(leading_shape) - 1)
    )
    return {name: (pick == i).expand(leading_shape) for i, name in enumerate(layers)}


def fold_routing(
    masks: Mapping[str, Tensor], delta: Mapping[str, Tensor], routing: Mapping[str, Tensor]
) -> tuple[Masks, Masks]:
    """Masks that route like ``routing`` without a second (target) path: where a layer is not routed
    through components, its component mask and delta mask are 1, so (a ⊙ (m − d))·U + d·x·Wᵀ = x·Wᵀ,
    the target layer. Only for layers that carry a delta mask."""
    assert set(routing) <= set(masks) and set(routing) <= set(delta), (
        "every routed layer needs a mask and a delta mask"
    )
    folded = {
        k: torch.where(routing[k].unsqueeze(-1), m, 1.0) if k in routing else m
        for k, m in masks.items()
    }
    folded_delta = {
        k: torch.where(routing[k], d, 1.0) if k in routing else d for k, d in delta.items()
    }
    return folded, folded_delta
