"""Steering: scale chosen components (0 ablates, > 1 boosts) and generate continuations.

Steered forward = all components on with the weight delta (exactly the target) except the chosen
components, whose masks are their scale factors at every position, or, with ``only_where_ci_above``,
only at positions where their CI (from the target pass on the current text) exceeds the threshold.
Generation recomputes the whole sequence each step (no cache), greedy at temperature 0 or sampled
with a seeded generator.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from spd_core.analysis.ci import model_ci
from spd_core.analysis.common import check_single_input, per_position, top_k
from spd_core.analysis.health import checked_forward
from spd_core.analysis.overlay import Edit, applied
from spd_core.errors import require
from spd_core.keys import ComponentKey
from spd_core.model import ComponentModel


@dataclass(frozen=True)
class TokenChange:
    token: int
    baseline_logit: float
    steered_logit: float
    baseline_prob: float
    steered_prob: float

    @property
    def logit_change(self) -> float:
        return self.steered_logit - self.baseline_logit


@dataclass(frozen=True)
class SteerResult:
    """Continuations are new token ids only (one list per sample); ``changes`` are at the prompt's
    last position, the ``k`` tokens with the largest |logit change|."""

    baseline: list[list[int]]
    steered: list[list[int]]
    baseline_top: list[tuple[int, float]]
    steered_top: list[tuple[int, float]]
    changes: list[TokenChange]


def _steered_logits(
    model: ComponentModel,
    ids: Tensor,
    scales: Mapping[ComponentKey, float],
    ci_threshold: float | None,
) -> Tensor:
    ci, _, _ = model_ci(model, ids)
    masks = {k: torch.ones_like(g) for k, g in ci.lower.items()}
    delta = {k: torch.ones_like(g[..., 0]) for k, g in ci.lower.items()}
    for key, factor in scales.items():
        m = masks[key.layer][..., key.c]
        if ci_threshold is None:
            m.fill_(factor)
        else:
            m.copy_(torch.where(ci.lower[key.layer][..., key.c] > ci_threshold, factor, 1.0))
    return checked_forward(
        model, ids, masks=masks, delta_masks=delta, what="steered forward"
    ).output


def _generate(
    step_logits, ids: Tensor, max_new: int, temperature: float, gen: torch.Generator
) -> list[int]:
    new: list[int] = []
    for _ in range(max_new):
        logits = per_position(step_logits(ids))[-1].float()
        if temperature <= 0:
            nxt = int(logits.argmax())
        else:
            nxt = int(torch.multinomial((logits / temperature).softmax(-1), 1, generator=gen))
        new.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]], dtype=ids.dtype)], dim=1)
    return new


def steer(
    model: ComponentModel,
    x: Tensor,
    scales: Mapping[ComponentKey, float],
    max_new_tokens: int = 20,
    n_samples: int = 1,
    temperature: float = 0.0,
    seed: int = 0,
    only_where_ci_above: float | None = None,
    k: int = 10,
    edit: Edit | None = None,
) -> SteerResult:
    """Baseline and steered continuations of token ids ``x`` (1, seq) and the logit change at its
    last position."""
    check_single_input(x)
    require(
        not x.is_floating_point(),
        f"steering generates text: x must be token ids (1, seq), got dtype {x.dtype}",
    )
    require(scales, "give at least one component to scale, e.g. {'0.mlp.up:3': 0.0}")
    for key in scales:
        require(
            key.layer in model.layers,
            f"unknown layer {key.layer!r}; valid layers: {', '.join(model.layers)}",
        )
        require(
            0 <= key.c < model.layers[key.layer].C,
            f"component {key} out of range; valid: 0..{model.layers[key.layer].C - 1}",
        )
    require(max_new_tokens >= 0 and n_samples >= 1, "max_new_tokens must be ≥ 0 and n_samples ≥ 1")
    require(temperature >= 0, f"temperature must be ≥ 0 (0 = greedy); got {temperature}")
    with applied(model, edit), torch.no_grad():
        base_fn = lambda ids: checked_forward(model, ids, what="baseline forward").output  # noqa: E731
        steer_fn = lambda ids: _steered_logits(model, ids, scales, only_where_ci_above)  # noqa: E731
        base_last = per_position(base_fn(x))[-1].float()
        steer_last = per_position(steer_fn(x))[-1].float()
        runs = 1 if temperature <= 0 else n_samples
        gen_b, gen_s = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        baseline = [_generate(base_fn, x, max_new_tokens, temperature, gen_b) for _ in range(runs)]
        steered = [_generate(steer_fn, x, max_new_tokens, temperature, gen_s) for _ in range(runs)]
    bp, sp = base_last.softmax(-1), steer_last.softmax(-1)
    diff = steer_last - base_last
    idx = diff.abs().topk(min(k, diff.numel())).indices
    changes = [
        TokenChange(int(i), float(base_last[i]), float(steer_last[i]), float(bp[i]), float(sp[i]))
        for i in idx
    ]
    return SteerResult(baseline, steered, top_k(bp, k), top_k(sp, k), changes)
