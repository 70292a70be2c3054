"""Ablation: remove a set of components or nodes (necessity) or keep only them (sufficiency).

Masks per regime (``before`` is always the target model's own prediction). Under SPD a component
whose causal importance is 0 may take any mask in [0, 1] without changing the output, so:
- ``deterministic``: remove = all-ones masks with the weight delta, the set at 0: exactly the target
  minus the set's contribution (equal to subtracting their weights when the delta is negligible);
  keep_only = the set at 1, every other component at 0 and no delta: the set alone.
- ``stochastic`` (mean over seeded samples): remove = the set at 0, every other component uniform in
  [CI, 1], the delta uniform in [0, 1]; keep_only = the set uniform in [CI, 1], everything outside
  it (delta included) uniform in [0, 1], i.e. treated as causally unimportant.
- ``adversarial``: the same ranges, the free masks chosen by signed-gradient steps to be the worst
  case for the claim: keep_only maximises KL(target ‖ ablated) at the position (can the rest break
  the prediction?); remove minimises it (can the rest restore the prediction without the set?).
A component is ablated at every position; a node only at its position.
"""

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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
from spd_core.errors import require
from spd_core.keys import ComponentKey, NodeKey
from spd_core.losses import signed_gradient_masks
from spd_core.masks import stochastic_mask_batch
from spd_core.model import ComponentModel

AblationMode = Literal["remove", "keep_only"]
AblationRegime = Literal["deterministic", "stochastic", "adversarial"]


@dataclass(frozen=True)
class AblationResult:
    """Distributions at ``position``: top-k (token id, prob) before and after; ``kl`` = KL(before ‖
    after) in nats (mean over samples for stochastic); token probability before/after when ``token``
    given."""

    mode: AblationMode
    regime: AblationRegime
    position: int
    before_top: list[tuple[int, float]]
    after_top: list[tuple[int, float]]
    kl: float
    token: int | None
    token_prob_before: float | None
    token_prob_after: float | None
    also_before: dict[int, float] = field(
        default_factory=dict
    )  # probabilities of the ``also`` tokens
    also_after: dict[int, float] = field(default_factory=dict)

    @property
    def token_prob_change(self) -> float | None:
        if self.token_prob_before is None or self.token_prob_after is None:
            return None
        return self.token_prob_after - self.token_prob_before


@dataclass(frozen=True)
class TargetPass:
    """One input's target pass: every layer's lower-leaky CI (model shape) and the target output.
    Computed once, it serves every ablation of that input (``ablate``'s ``pre``)."""

    ci_lower: dict[str, Tensor]
    output: Tensor


def target_pass(model: ComponentModel, x: Tensor) -> TargetPass:
    with torch.no_grad():
        ci, _, out = model_ci(model, x)
    return TargetPass({k: v.detach() for k, v in ci.lower.items()}, out)


class TargetPasses:
    """Target passes of recent inputs, least recently used dropped past ``max_bytes``: for a caller
    that validates many sets on the same prompts with the model unchanged (no edit applied)."""

    def __init__(self, max_bytes: int = 256 * 2**20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[int, bytes], tuple[TargetPass, int]] = OrderedDict()
        self._bytes = 0

    def get(self, model: ComponentModel, x: Tensor) -> TargetPass:
        key = (id(model), x.detach().cpu().numpy().tobytes() + str(tuple(x.shape)).encode())
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key][0]
        tp = target_pass(model, x)
        size = tp.output.nbytes + sum(v.nbytes for v in tp.ci_lower.values())
        self._items[key] = (tp, size)
        self._bytes += size
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, (_, dropped) = self._items.popitem(last=False)
            self._bytes -= dropped
        return tp


def selection_masks(
    model: ComponentModel,
    seq: int,
    components: Sequence[ComponentKey] = (),
    nodes: Sequence[NodeKey] = (),
) -> dict[str, Tensor]:
    """Per layer a (seq, C) 0/1 tensor: 1 where a listed component (any position) or node is."""
    sel = {name: torch.zeros(seq, info.C) for name, info in model.layers.items()}
    for key in components:
        require(
            key.layer in sel,
            f"unknown layer {key.layer!r}; valid layers: {', '.join(model.layers)}",
        )
        require(
            0 <= key.c < model.layers[key.layer].C,
            f"component {key} out of range; valid: 0..{model.layers[key.layer].C - 1}",
        )
        sel[key.layer][:, key.c] = 1.0
    for node in nodes:
        require(
            node.layer in sel,
            f"unknown layer {node.layer!r}; valid layers: {', '.join(model.layers)}",
        )
        require(
            0 <= node.c < model.layers[node.layer].C,
            f"node {node} component out of range; valid: 0..{model.layers[node.layer].C - 1}",
        )
        sel[node.layer][resolve(node.pos, seq), node.c] = 1.0
    return sel


def _lower_bounds(
    g: Mapping[str, Tensor], sel: Mapping[str, Tensor], mode: AblationMode
) -> dict[str, Tensor]:
    """The lowest mask each component may take: its CI, except the set (remove) or everything
    outside the set (keep_only), which has 0."""
    return {k: v * (1 - sel[k]) if mode == "remove" else v * sel[k] for k, v in g.items()}


def _constrain(
    masks: Mapping[str, Tensor], sel: Mapping[str, Tensor], mode: AblationMode
) -> dict[str, Tensor]:
    """Removal forces the set to 0; keep_only leaves every mask free in its range."""
    return {k: m * (1 - sel[k]) for k, m in masks.items()} if mode == "remove" else dict(masks)


def ablate(
    model: ComponentModel,
    x: Tensor,
    components: Sequence[ComponentKey] = (),
    nodes: Sequence[NodeKey] = (),
    mode: AblationMode = "remove",
    regime: AblationRegime = "deterministic",
    position: int = -1,
    token: int | None = None,
    also: Sequence[int] = (),
    k: int = 5,
    n_samples: int = 8,
    pgd_steps: int = 20,
    pgd_step_size: float = 0.1,
    seed: int = 0,
    edit: Edit | None = None,
    pre: TargetPass | None = None,
) -> AblationResult:
    """Ablate ``components`` (all positions) and/or ``nodes`` (one position) of ``x``; see module
    doc. ``pre``: ``x``'s target pass when the caller has it (not with an ``edit``)."""
    check_single_input(x)
    require(mode in ("remove", "keep_only"), f"mode must be 'remove' or 'keep_only'; got {mode!r}")
    require(
        regime in ("deterministic", "stochastic", "adversarial"),
        f"regime must be 'deterministic', 'stochastic' or 'adversarial'; got {regime!r}",
    )
    require(
        components or nodes,
        "give at least one component ('layer:c') or node ('layer:pos:c') to ablate",
    )
    require(pre is None or edit is None, "a precomputed target pass cannot be used with an edit")
    with applied(model, edit), torch.random.fork_rng():
        torch.manual_seed(seed)
        tp = pre or target_pass(model, x)
        target_out = tp.output
        like = next(iter(tp.ci_lower.values()))
        seq = per_position(like).shape[0]
        out_seq = per_position(target_out).shape[0]
        pos = resolve(position, out_seq)
        vocab = target_out.shape[-1]
        for t in ([] if token is None else [token]) + list(also):
            require(0 <= t < vocab, f"token id {t} out of range; valid: 0..{vocab - 1}")
        sel = {
            kk: model_shaped(v, like)
            for kk, v in selection_masks(model, seq, components, nodes).items()
        }
        g = tp.ci_lower
        outs: list[Tensor] = []

        def forward(masks: Mapping[str, Tensor], delta: Mapping[str, Tensor], n: int = 1) -> Tensor:
            inp = x if n == 1 else x.expand(n, *x.shape[1:])  # n mask samples as one batch
            return checked_forward(
                model, inp, masks=dict(masks), delta_masks=dict(delta), what="ablated forward"
            ).output

        lower = _lower_bounds(g, sel, mode)
        if regime == "deterministic":
            on = 1.0 if mode == "remove" else 0.0  # everything outside the set: on (remove) or off
            masks = {kk: on + (1 - 2 * on) * sel[kk].expand_as(v) for kk, v in g.items()}
            delta = {kk: torch.full_like(v[..., 0], on) for kk, v in g.items()}
            with torch.no_grad():
                outs.append(forward(masks, delta))
        elif regime == "stochastic":
            with torch.no_grad():
                masks, delta = stochastic_mask_batch(lower, n_samples)
                out = forward(_constrain(masks, sel, mode), delta, n_samples)
                outs.extend(out[i : i + 1] for i in range(n_samples))
        else:
            ref = per_position(target_out)[pos]
            masks, delta = signed_gradient_masks(
                lower,
                lambda m, d: kl_div(ref, per_position(forward(_constrain(m, sel, mode), d))[pos]),
                pgd_steps,
                pgd_step_size,
                maximize=mode == "keep_only",
            )
            with torch.no_grad():
                outs.append(forward(_constrain(masks, sel, mode), delta))
    before = per_position(target_out)[pos].float().softmax(-1)
    afters = [per_position(o)[pos].float() for o in outs]
    after_probs = torch.stack([a.softmax(-1) for a in afters]).mean(0)
    kl = float(torch.stack([kl_div(per_position(target_out)[pos], a) for a in afters]).mean())
    return AblationResult(
        mode=mode,
        regime=regime,
        position=pos,
        before_top=top_k(before, k),
        after_top=top_k(after_probs, k),
        kl=kl,
        token=token,
        token_prob_before=None if token is None else float(before[token]),
        token_prob_after=None if token is None else float(after_probs[token]),
        also_before={t: float(before[t]) for t in also},
        also_after={t: float(after_probs[t]) for t in also},
    )


def ablate_regimes(
    model: ComponentModel,
    x: Tensor,
    *,
    components: Sequence[ComponentKey] = (),
    nodes: Sequence[NodeKey] = (),
    mode: AblationMode = "remove",
    regime: Sequence[AblationRegime] = ("deterministic",),
    position: int = -1,
    token: int | None = None,
    top_k: int = 5,
    n_samples: int = 8,
    adversarial_steps: int = 20,
    seed: int = 0,
    edit: Edit | None = None,
) -> list[AblationResult]:
    """``ablate`` once per regime in ``regime``, with the ablate tool's argument names (``top_k``
    most probable tokens kept, ``adversarial_steps`` PGD steps)."""
    return [
        ablate(
            model,
            x,
            components,
            nodes,
            mode=mode,
            regime=r,
            position=position,
            token=token,
            k=top_k,
            n_samples=n_samples,
            pgd_steps=adversarial_steps,
            seed=seed,
            edit=edit,
        )
        for r in regime
    ]
