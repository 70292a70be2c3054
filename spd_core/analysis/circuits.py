"""Circuit optimisation: the sparsest CI that still makes one prediction.

Parameters are the pre-sigmoid CI values of the (position, component) entries whose natural CI is
> 0 (all other entries are fixed off). Each step runs the model under CI masks (no delta) or one
stochastic mask (with delta), optionally also under a PGD adversary, and minimises
``ce_coeff`` × (CE of the target token at the position, or KL(target ‖ masked) there) plus
``sparsity`` × importance minimality (upper-leaky CI, exponent ``p``). Seeded; AdamW, constant LR.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from spd_core.analysis.ci import model_ci
from spd_core.analysis.common import check_single_input, kl_div, per_position, resolve
from spd_core.analysis.health import checked_forward
from spd_core.analysis.overlay import Edit, applied
from spd_core.analysis.regimes import Regime, RegimeSettings, regime_outputs
from spd_core.ci import lower_leaky_hard_sigmoid, upper_leaky_hard_sigmoid
from spd_core.errors import require
from spd_core.keys import NodeKey
from spd_core.losses import importance_minimality_loss, pgd_masks
from spd_core.masks import stochastic_masks
from spd_core.model import ComponentModel

Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class CircuitConfig:
    steps: int = 200
    lr: float = 0.1
    sparsity: float = 0.1
    p: float = 0.5
    ce_coeff: float = 1.0
    loss: Literal["ce", "kl"] = "ce"
    mask: Literal["ci", "stochastic"] = "ci"
    adversarial_steps: int = 0
    adversarial_step_size: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class Circuit:
    """``ci[layer]`` (seq, C) is the optimised CI; ``nodes`` the entries with CI > 0, largest first.

    ``probs`` gives the target token's probability at the position under every regime;
    ``loss_trace`` one total loss per step.
    """

    nodes: list[tuple[NodeKey, float]]
    ci: dict[str, Tensor]
    l0: dict[str, int]
    probs: dict[Regime, float]
    loss_trace: list[float]
    final_loss: float
    converged: bool
    steps: int
    position: int
    target_token: int


def _position_loss(out: Tensor, target_out: Tensor, pos: int, token: int, kind: str) -> Tensor:
    logits = per_position(out)[pos].float()
    if kind == "ce":
        return F.cross_entropy(logits[None], torch.tensor([token], device=logits.device))
    return kl_div(per_position(target_out)[pos], logits)


def optimize_circuit(
    model: ComponentModel,
    x: Tensor,
    target_token: int,
    position: int = -1,
    config: CircuitConfig | None = None,
    regimes: RegimeSettings | None = None,
    progress: Progress | None = None,
    edit: Edit | None = None,
) -> Circuit:
    """Optimise CI so that ``x`` still predicts ``target_token`` at ``position`` with as few
    components as possible."""
    check_single_input(x)
    config = config or CircuitConfig()
    regimes = regimes or RegimeSettings()
    require(config.steps >= 1, f"steps must be ≥ 1; got {config.steps}")
    require(config.loss in ("ce", "kl"), f"loss must be 'ce' or 'kl'; got {config.loss!r}")
    require(
        config.mask in ("ci", "stochastic"),
        f"mask must be 'ci' or 'stochastic'; got {config.mask!r}",
    )
    with applied(model, edit), torch.random.fork_rng():
        torch.manual_seed(config.seed)
        with torch.no_grad():
            ci0, _, target_out = model_ci(model, x)
        vocab = target_out.shape[-1]
        require(
            0 <= target_token < vocab,
            f"target token id {target_token} out of range; valid: 0..{vocab - 1}",
        )
        pos = resolve(position, per_position(target_out).shape[0])
        # All layers share the leading (1, seq) shape: one (1, seq, ΣC) parameter, split into layer
        # views.
        names = list(ci0.pre)
        sizes = [ci0.pre[k].shape[-1] for k in names]
        alive = torch.cat([ci0.lower[k] > 0 for k in names], dim=-1)
        param = torch.cat([ci0.pre[k] for k in names], dim=-1).detach().clone().requires_grad_(True)
        keep = alive.to(param.dtype)
        opt = torch.optim.AdamW([param], lr=config.lr, weight_decay=0.0)
        trace: list[float] = []
        for step in range(config.steps):
            pre = param * keep  # entries with natural CI 0 stay off (their gradient is 0)
            lower = dict(
                zip(names, lower_leaky_hard_sigmoid(pre).split(sizes, dim=-1), strict=True)
            )
            if config.mask == "ci":
                out = checked_forward(
                    model, x, masks=lower, what="circuit CI-masked forward", layer_flags=False
                ).output
            else:
                masks, delta = stochastic_masks(lower)
                out = checked_forward(
                    model,
                    x,
                    masks=masks,
                    delta_masks=delta,
                    what="circuit stochastic forward",
                    layer_flags=False,
                ).output
            loss = config.ce_coeff * _position_loss(out, target_out, pos, target_token, config.loss)
            if config.adversarial_steps:
                masks, delta = pgd_masks(
                    model,
                    x,
                    target_out,
                    lower,
                    "kl",
                    config.adversarial_steps,
                    config.adversarial_step_size,
                )
                adv = checked_forward(
                    model, x, masks=masks, delta_masks=delta, what="circuit adversarial forward"
                ).output
                loss = loss + config.ce_coeff * _position_loss(
                    adv, target_out, pos, target_token, config.loss
                )
            # Σ_layers Σ_c mean over positions, as importance_minimality_loss computes it per layer
            loss = loss + config.sparsity * importance_minimality_loss(
                {"all": upper_leaky_hard_sigmoid(pre)}, config.p
            )
            # autograd.grad, not backward: nothing accumulates in the model's own .grad fields
            (param.grad,) = torch.autograd.grad(loss, [param])
            opt.step()
            trace.append(float(loss.detach()))
            if progress is not None:
                progress(step + 1, config.steps, trace[-1])
        with torch.no_grad():
            final = dict(
                zip(names, lower_leaky_hard_sigmoid(param * keep).split(sizes, dim=-1), strict=True)
            )
        outs = regime_outputs(model, x, final, target_out, regimes)
    probs: dict[Regime, float] = {
        r: float(
            torch.stack([per_position(o)[pos].float().softmax(-1)[target_token] for o in os]).mean()
        )
        for r, os in outs.items()
    }
    ci_out = {k: per_position(final[k]) for k in model.layers}
    nodes = [
        (NodeKey(layer, p, c), float(g[p, c]))
        for layer, g in ci_out.items()
        for p, c in (g > 0).nonzero().tolist()
    ]
    nodes.sort(key=lambda n: -n[1])
    tail = trace[-max(1, len(trace) // 10) :]
    converged = len(trace) >= 10 and (max(tail) - min(tail)) <= 1e-2 * max(1e-8, abs(tail[-1]))
    return Circuit(
        nodes=nodes,
        ci=ci_out,
        l0={k: int((g > 0).sum()) for k, g in ci_out.items()},
        probs=probs,
        loss_trace=trace,
        final_loss=trace[-1],
        converged=converged,
        steps=config.steps,
        position=pos,
        target_token=target_token,
    )
