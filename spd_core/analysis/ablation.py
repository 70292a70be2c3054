"""Ablation: remove a set of components or nodes (necessity) or keep only them (sufficiency).

Masks per regime (``before`` is always the target model's own prediction):
- ``deterministic``: remove = all-ones masks with the weight delta, the set at 0, so exactly the
  target minus the set's contribution (equal to subtracting their weights); keep_only = the set at 1,
  every other component at 0 and no delta (the decomposition's residual is not part of the set).
- ``stochastic``: masks uniform in [CI, 1] (delta uniform in [0, 1]) with the set forced to 0
  (remove); or the set sampled in [CI, 1] and everything else, delta included, at 0 (keep_only).
  Mean over samples, seeded.
- ``adversarial``: the same constraint, with the free masks chosen in [CI, 1] (delta in [0, 1]) by
  signed-gradient ascent on KL(target ‖ ablated) at the position (worst case for the claim).
A component is ablated at every position; a node only at its position.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from spd_core.analysis.ci import model_ci
from spd_core.analysis.common import (
    check_single_input,
    kl_div,
    model_shaped,
    per_position,
    resolve,
    top_k,
)
from spd_core.analysis.health import checked_forward
from spd_core.analysis.overlay import Edit, applied
from spd_core.keys import ComponentKey, NodeKey
from spd_core.model import ComponentModel

AblationMode = Literal["remove", "keep_only"]
AblationRegime = Literal["deterministic", "stochastic", "adversarial"]


@dataclass(frozen=True)
class AblationResult:
    """Distributions at ``position``: top-k (token id, prob) before and after; ``kl`` = KL(before ‖ after)
    in nats (mean over samples for stochastic); token probability before/after when ``token`` given."""

    mode: AblationMode
    regime: AblationRegime
    position: int
    before_top: list[tuple[int, float]]
    after_top: list[tuple[int, float]]
    kl: float
    token: int | None
    token_prob_before: float | None
    token_prob_after: float | None

    @property
    def token_prob_change(self) -> float | None:
        if self.token_prob_before is None or self.token_prob_after is None:
            return None
        return self.token_prob_after - self.token_prob_before


def selection_masks(
    model: ComponentModel,
    seq: int,
    components: Sequence[ComponentKey] = (),
    nodes: Sequence[NodeKey] = (),
) -> dict[str, Tensor]:
    """Per layer a (seq, C) 0/1 tensor: 1 where a listed component (any position) or node is."""
    sel = {name: torch.zeros(seq, info.C) for name, info in model.layers.items()}
    for key in components:
        assert key.layer in sel, f"unknown layer {key.layer!r}; valid layers: {', '.join(model.layers)}"
        assert 0 <= key.c < model.layers[key.layer].C, (
            f"component {key} out of range; valid: 0..{model.layers[key.layer].C - 1}"
        )
        sel[key.layer][:, key.c] = 1.0
    for node in nodes:
        assert node.layer in sel, f"unknown layer {node.layer!r}; valid layers: {', '.join(model.layers)}"
        assert 0 <= node.c < model.layers[node.layer].C, (
            f"node {node} component out of range; valid: 0..{model.layers[node.layer].C - 1}"
        )
        sel[node.layer][resolve(node.pos, seq), node.c] = 1.0
    return sel


def _constrain(
    free: Mapping[str, Tensor], free_delta: Mapping[str, Tensor], sel: Mapping[str, Tensor], mode: AblationMode
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    if mode == "remove":
        return {k: m * (1 - sel[k]) for k, m in free.items()}, dict(free_delta)
    return {k: m * sel[k] for k, m in free.items()}, {k: torch.zeros_like(d) for k, d in free_delta.items()}


def ablate(
    model: ComponentModel,
    x: Tensor,
    components: Sequence[ComponentKey] = (),
    nodes: Sequence[NodeKey] = (),
    mode: AblationMode = "remove",
    regime: AblationRegime = "deterministic",
    position: int = -1,
    token: int | None = None,
    k: int = 5,
    n_samples: int = 8,
    pgd_steps: int = 20,
    pgd_step_size: float = 0.1,
    seed: int = 0,
    edit: Edit | None = None,
) -> AblationResult:
    """Ablate ``components`` (all positions) and/or ``nodes`` (one position) of ``x``; see module doc."""
    check_single_input(x)
    assert mode in ("remove", "keep_only"), f"mode must be 'remove' or 'keep_only'; got {mode!r}"
    assert regime in ("deterministic", "stochastic", "adversarial"), (
        f"regime must be 'deterministic', 'stochastic' or 'adversarial'; got {regime!r}"
    )
    assert components or nodes, "give at least one component ('layer:c') or node ('layer:pos:c') to ablate"
    with applied(model, edit), torch.random.fork_rng():
        torch.manual_seed(seed)
        with torch.no_grad():
            ci, _, target_out = model_ci(model, x)
        like = next(iter(ci.lower.values()))
        seq = per_position(like).shape[0]
        out_seq = per_position(target_out).shape[0]
        pos = resolve(position, out_seq)
        if token is not None:
            vocab = target_out.shape[-1]
            assert 0 <= token < vocab, f"token id {token} out of range; valid: 0..{vocab - 1}"
        sel = {kk: model_shaped(v, like) for kk, v in selection_masks(model, seq, components, nodes).items()}
        g = {kk: v.detach() for kk, v in ci.lower.items()}
        outs: list[Tensor] = []
        if regime == "deterministic":
            ones = {kk: torch.ones_like(v) for kk, v in g.items()}
            masks, delta = _constrain(ones, {kk: torch.ones_like(v[..., 0]) for kk, v in g.items()}, sel, mode)
            with torch.no_grad():
                outs.append(checked_forward(model, x, masks=masks, delta_masks=delta, what="ablated forward").output)
        elif regime == "stochastic":
            with torch.no_grad():
                for _ in range(n_samples):
                    free = {kk: v + (1 - v) * torch.rand_like(v) for kk, v in g.items()}
                    masks, delta = _constrain(free, {kk: torch.rand_like(v[..., 0]) for kk, v in g.items()}, sel, mode)
                    outs.append(checked_forward(model, x, masks=masks, delta_masks=delta, what="ablated forward").output)
        else:
            outs.append(_adversarial(model, x, g, sel, mode, target_out, pos, pgd_steps, pgd_step_size))
    before = per_position(target_out)[pos].float().softmax(-1)
    afters = [per_position(o)[pos].float() for o in outs]
    after_probs = torch.stack([a.softmax(-1) for a in afters]).mean(0)
    kl = float(torch.stack([kl_div(per_position(target_out)[pos], a) for a in afters]).mean())
    return AblationResult(
        mode=mode, regime=regime, position=pos, before_top=top_k(before, k), after_top=top_k(after_probs, k), kl=kl,
        token=token,
        token_prob_before=None if token is None else float(before[token]),
        token_prob_after=None if token is None else float(after_probs[token]),
    )


def _adversarial(
    model: ComponentModel, x: Tensor, g: Mapping[str, Tensor], sel: Mapping[str, Tensor], mode: AblationMode,
    target_out: Tensor, pos: int, steps: int, step_size: float,
) -> Tensor:
    """Signed-gradient ascent on the sources s of m = g + (1 − g)·s (and of the delta mask), constrained."""
    src = {kk: torch.rand_like(v) for kk, v in g.items()}
    src_d = {kk: torch.rand_like(v[..., 0]) for kk, v in g.items()}
    ref = per_position(target_out)[pos]
    for _ in range(steps):
        leaves = [*src.values(), *src_d.values()]
        for t in leaves:
            t.requires_grad_(True)
        masks, delta = _constrain({kk: g[kk] + (1 - g[kk]) * src[kk] for kk in g}, src_d, sel, mode)
        out = checked_forward(model, x, masks=masks, delta_masks=delta, what="adversarial ablation forward").output
        loss = kl_div(ref, per_position(out)[pos])
        grads = torch.autograd.grad(loss, leaves)
        with torch.no_grad():
            new = [(t + step_size * gr.sign()).clamp(0, 1) for t, gr in zip(leaves, grads, strict=True)]
        src = dict(zip(src, new[: len(src)], strict=True))
        src_d = dict(zip(src_d, new[len(src) :], strict=True))
    with torch.no_grad():
        masks, delta = _constrain({kk: g[kk] + (1 - g[kk]) * src[kk] for kk in g}, src_d, sel, mode)
        return checked_forward(model, x, masks=masks, delta_masks=delta, what="adversarial ablation forward").output
