"""SPD losses: faithfulness, importance minimality, stochastic / CI-masked reconstruction (all
layers, layerwise, per-position layer subsets, one random layer per step or per sequence) and PGD
reconstruction.

Reconstruction compares the masked model's output with the target's: MSE (mean over elements) for
toys, KL(target ‖ masked) per position, averaged over positions, for language models.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from spd_core.errors import require
from spd_core.masks import (
    Sampling,
    fold_routing,
    layer_subset_routing,
    sequence_layer_routing,
    stochastic_masks,
)
from spd_core.model import ComponentModel

OutputLoss = Literal["mse", "kl"]
ReconMode = Literal["all", "layerwise", "subset", "random_layer", "sequence_layer"]


def output_loss(pred: Tensor, target: Tensor, kind: OutputLoss) -> Tensor:
    """MSE over all elements, or KL(target ‖ pred) over the last (vocab) dim, averaged over
    positions."""
    if kind == "mse":
        return F.mse_loss(pred.float(), target.float())
    if kind == "kl":
        return kl_div(target, pred).mean()
    raise ValueError(f"unknown output loss {kind!r}; valid: mse, kl")


def kl_div(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """KL(p ‖ q) over the last dim, in nats, computed in float32 (the one KL of the project: the
    training loss and every analysis that reports one)."""
    log_p = F.log_softmax(p_logits.float(), dim=-1)
    log_q = F.log_softmax(q_logits.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def faithfulness_loss(model: ComponentModel) -> Tensor:
    """Σ_layers ‖W − (V U)ᵀ‖²_F divided by the total number of decomposed weight entries; in fp32
    even under bf16 autocast (bf16's 3 digits cannot resolve a delta of 1e-4 of W)."""
    device_type = next(model.components.parameters()).device.type
    with torch.autocast(device_type, enabled=False):
        deltas = model.weight_deltas().values()
        return sum(d.pow(2).sum() for d in deltas) / sum(d.numel() for d in deltas)  # type: ignore[return-value]


def importance_minimality_loss(
    ci_upper: Mapping[str, Tensor], p: float, eps: float = 1e-12
) -> Tensor:
    """Σ_layers Σ_c mean over batch and positions of (g_upper + ε)^p."""
    total = torch.zeros((), device=next(iter(ci_upper.values())).device)
    for g in ci_upper.values():
        rows = g.numel() // g.shape[-1]  # the mean over positions, taken after the sum over all
        total = total + (g.float() + eps).pow(p).sum() / rows
    return total


# Modes that route each position through components or the target; the rest mask whole layer sets.
_ROUTING = {"subset": layer_subset_routing, "sequence_layer": sequence_layer_routing}


def _layer_sets(
    model: ComponentModel, mode: ReconMode, layer: str | None = None
) -> list[list[str]]:
    layers = list(model.layers)
    if mode == "random_layer" and layer is not None:
        require(layer in model.layers, f"unknown layer {layer!r}; valid: {', '.join(layers)}")
        return [[layer]]
    if mode in ("all", "subset", "sequence_layer"):
        return [layers]
    if mode == "layerwise":
        return [[name] for name in layers]
    if mode == "random_layer":
        return [[layers[int(torch.randint(len(layers), ()))]]]
    raise ValueError(
        f"unknown reconstruction mode {mode!r}; valid: all, layerwise, subset, random_layer, "
        "sequence_layer"
    )


def _first_run(acts: Mapping[str, Tensor], layer_set: Sequence[str]) -> str | None:
    """The layer of ``layer_set`` that runs first: ``acts`` are keyed in the order the layers ran
    in the target pass (``ComponentModel.forward`` caches inputs as they arrive)."""
    return next((k for k in acts if k in layer_set), None)


def masked_recon_loss(
    model: ComponentModel,
    x: Tensor,
    target_out: Tensor,
    masks: Mapping[str, Tensor],
    delta_masks: Mapping[str, Tensor] | None,
    kind: OutputLoss,
    mode: ReconMode = "all",
    acts: Mapping[str, Tensor] | None = None,
    layer: str | None = None,
    target_outs: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Mean output loss over the layer sets of ``mode`` with the given masks.

    ``acts`` (inner activations from the target pass, in the order the layers run) are reused for
    the first masked layer to run, since nothing before it is masked and its input is then the
    target's (a layer that runs alone is that layer). ``layer`` fixes the layer of
    ``random_layer`` mode (else drawn uniformly). ``target_outs`` (with ``acts``: the decomposed
    layers' outputs from the same target pass) are reused likewise: the layers that run before the
    first masked one return them without running, and the first masked one takes its weight-delta
    product from its own.
    """
    sets = _layer_sets(model, mode, layer)
    total = torch.zeros((), device=target_out.device)
    for layer_set in sets:
        sub_masks = {k: masks[k] for k in layer_set}
        sub_delta = (
            None
            if delta_masks is None
            else {k: delta_masks[k] for k in layer_set if k in delta_masks}
        )
        routing = None
        if mode in _ROUTING:
            leading = next(iter(masks.values())).shape[:-1]
            routing = _ROUTING[mode](layer_set, leading, target_out.device)
            if (
                mode == "sequence_layer" and sub_delta is None
            ):  # CI-masked: the routed layer has no delta
                sub_delta = {k: torch.zeros_like(m[..., 0]) for k, m in sub_masks.items()}
            if sub_delta is not None and set(sub_delta) == set(
                layer_set
            ):  # one masked path instead of two
                sub_masks, sub_delta = fold_routing(sub_masks, sub_delta, routing)
                routing = None
        sub_acts, sub_outs = None, None
        first = None if acts is None or mode in _ROUTING else _first_run(acts, layer_set)
        if acts is not None and first is not None:
            sub_acts = {first: acts[first]}
            if target_outs is not None:
                ran = list(acts)
                ran = ran[: ran.index(first) + 1]
                sub_outs = {k: target_outs[k] for k in ran if k in target_outs}
        out = model(
            x,
            masks=sub_masks,
            delta_masks=sub_delta,
            routing=routing,
            acts=sub_acts,
            target_outs=sub_outs,
        ).output
        total = total + output_loss(out, target_out, kind)
    return total / len(sets)


def stochastic_recon_loss(
    model: ComponentModel,
    x: Tensor,
    target_out: Tensor,
    ci_lower: Mapping[str, Tensor],
    kind: OutputLoss,
    mode: ReconMode = "all",
    sampling: Sampling = "continuous",
    n_samples: int = 1,
    use_delta: bool = True,
    acts: Mapping[str, Tensor] | None = None,
    target_outs: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Reconstruction under masks sampled uniformly in [ci, 1] (mean over ``n_samples``)."""
    total = torch.zeros((), device=target_out.device)
    for _ in range(n_samples):
        masks, delta = stochastic_masks(ci_lower, sampling)
        total = total + masked_recon_loss(
            model,
            x,
            target_out,
            masks,
            delta if use_delta else None,
            kind,
            mode,
            acts,
            target_outs=target_outs,
        )
    return total / n_samples


def ci_recon_loss(
    model: ComponentModel,
    x: Tensor,
    target_out: Tensor,
    ci_lower: Mapping[str, Tensor],
    kind: OutputLoss,
    mode: ReconMode = "all",
    acts: Mapping[str, Tensor] | None = None,
    layer: str | None = None,
    target_outs: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Reconstruction with the CI itself as the mask and no weight delta."""
    return masked_recon_loss(
        model, x, target_out, ci_lower, None, kind, mode, acts, layer, target_outs
    )


class LossWeightedLayers:
    """Draws the layer of a ``random_layer`` term with probability growing with that layer's recent
    loss: half uniform (so every layer keeps being measured), half in proportion to a running mean
    of the loss each layer had when last drawn. Layers that are hard to reconstruct alone get more
    of the term's gradient than the uniform 1/L."""

    def __init__(self, layers: Sequence[str], decay: float = 0.9) -> None:
        assert len(layers) >= 1, "needs at least one layer"
        assert 0 <= decay < 1, f"decay must be in [0, 1), got {decay}"
        self.layers, self.decay = list(layers), decay
        self.mean: dict[str, float] = {}

    def probabilities(self) -> list[float]:
        seen = [self.mean[k] for k in self.layers if k in self.mean]
        fill = max(seen) if seen else 1.0
        w = [max(self.mean.get(k, fill), 0.0) for k in self.layers]
        total = sum(w)
        n = len(self.layers)
        return [0.5 / n + (0.5 * v / total if total > 0 else 0.5 / n) for v in w]

    def draw(self) -> str:
        """One layer, from torch's global generator (checkpointed with the run)."""
        return self.layers[int(torch.multinomial(torch.tensor(self.probabilities()), 1))]

    def update(self, layer: str, loss: float) -> None:
        old = self.mean.get(layer)
        self.mean[layer] = loss if old is None else self.decay * old + (1 - self.decay) * loss


def signed_gradient_masks(
    lower: Mapping[str, Tensor],
    objective: Callable[[dict[str, Tensor], dict[str, Tensor]], Tensor],
    steps: int,
    step_size: float,
    init: Literal["random", "ones", "zeros"] = "random",
    maximize: bool = True,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Masks m = g + (1 − g)·s and delta masks d = s_δ whose sources s ∈ [0, 1] are chosen by
    ``steps`` signed-gradient steps of size ``step_size`` on ``objective(masks, delta)`` (ascent
    when ``maximize``, else descent). The one PGD loop of the project: training's adversarial masks
    and the analyses' worst cases both come from here. Gradients flow back to g through the returned
    masks."""
    g_d = {k: g.detach() for k, g in lower.items()}
    make = {"random": torch.rand_like, "ones": torch.ones_like, "zeros": torch.zeros_like}[init]
    sources = {k: make(torch.cat([g, g[..., :1]], dim=-1)) for k, g in g_d.items()}
    sign = 1.0 if maximize else -1.0

    def split(
        src: Mapping[str, Tensor], g: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        return (
            {k: g[k] + (1 - g[k]) * s[..., :-1] for k, s in src.items()},
            {k: s[..., -1] for k, s in src.items()},
        )

    for _ in range(steps):
        for s in sources.values():
            s.requires_grad_(True)
        loss = objective(*split(sources, g_d))
        grads = torch.autograd.grad(loss, list(sources.values()), allow_unused=True)
        with torch.no_grad():
            sources = {
                k: s.detach() if gr is None else (s + sign * step_size * gr.sign()).clamp(0, 1)
                for (k, s), gr in zip(sources.items(), grads, strict=True)
            }
    return split({k: s.detach() for k, s in sources.items()}, lower)


def pgd_masks(
    model: ComponentModel,
    x: Tensor,
    target_out: Tensor,
    ci_lower: Mapping[str, Tensor],
    kind: OutputLoss,
    steps: int,
    step_size: float,
    mode: ReconMode = "all",
    init: Literal["random", "ones", "zeros"] = "random",
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Adversarial masks m = g + (1 − g)·s whose sources s maximise the reconstruction loss
    (``signed_gradient_masks`` with the masked reconstruction loss as its objective)."""
    return signed_gradient_masks(
        ci_lower,
        lambda m, d: masked_recon_loss(model, x, target_out, m, d, kind, mode),
        steps,
        step_size,
        init,
    )


def pgd_recon_loss(
    model: ComponentModel,
    x: Tensor,
    target_out: Tensor,
    ci_lower: Mapping[str, Tensor],
    kind: OutputLoss,
    steps: int,
    step_size: float,
    mode: ReconMode = "all",
) -> Tensor:
    """Reconstruction loss at the PGD adversary's masks (see ``pgd_masks``)."""
    masks, delta = pgd_masks(model, x, target_out, ci_lower, kind, steps, step_size, mode)
    return masked_recon_loss(model, x, target_out, masks, delta, kind, mode)
