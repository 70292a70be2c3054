"""The named mask regimes under which probabilities are reported (the tools' `regime` argument):

- ``target``: the original model; ``unmasked``: all components with the weight delta (equals
  target);
- ``ci``: masks = CI, no delta (optimistic); ``stochastic``: masks uniform in [CI, 1] with the delta
  mask uniform in [0, 1], mean over samples; ``adversarial``: PGD worst case in [CI, 1]
  (``losses.pgd_masks``).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from spd_core.analysis.common import ones_like_ci
from spd_core.analysis.health import checked_forward
from spd_core.losses import OutputLoss, pgd_masks
from spd_core.masks import stochastic_mask_batch
from spd_core.model import ComponentModel

Regime = Literal["target", "ci", "stochastic", "adversarial", "unmasked"]
REGIMES: tuple[Regime, ...] = ("target", "ci", "stochastic", "adversarial", "unmasked")


@dataclass(frozen=True)
class RegimeSettings:
    n_samples: int = 8
    pgd_steps: int = 20
    pgd_step_size: float = 0.1
    pgd_loss: OutputLoss = "kl"
    seed: int = 0


def regime_outputs(
    model: ComponentModel,
    x: Tensor,
    ci_lower: Mapping[str, Tensor],
    target_out: Tensor,
    settings: RegimeSettings | None = None,
) -> dict[Regime, list[Tensor]]:
    """Model outputs (model shape) under every regime; ``stochastic`` has one per sample.

    ``ci_lower`` is in model shape (e.g. (1, seq, C)); its gradients are not tracked. Seeded.
    """
    settings = settings or RegimeSettings()
    ci = {k: v.detach() for k, v in ci_lower.items()}
    out: dict[Regime, list[Tensor]] = {"target": [target_out.detach()]}
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(settings.seed)
        out["ci"] = [checked_forward(model, x, masks=ci, what="CI-masked forward").output]
        ones, ones_delta = ones_like_ci(ci)
        out["unmasked"] = [
            checked_forward(
                model, x, masks=ones, delta_masks=ones_delta, what="unmasked forward"
            ).output
        ]
        n = settings.n_samples  # the samples as one batch
        masks, delta = stochastic_mask_batch(ci, n)
        batch = checked_forward(
            model,
            x.expand(n, *x.shape[1:]),
            masks=masks,
            delta_masks=delta,
            what="stochastic forward",
        ).output
        out["stochastic"] = [batch[i : i + 1] for i in range(n)]
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        with torch.enable_grad():
            masks, delta = pgd_masks(
                model,
                x,
                target_out.detach(),
                ci,
                settings.pgd_loss,
                settings.pgd_steps,
                settings.pgd_step_size,
            )
        with torch.no_grad():
            out["adversarial"] = [
                checked_forward(
                    model, x, masks=masks, delta_masks=delta, what="adversarial forward"
                ).output
            ]
    return out
