"""One component-level circuit for several examples of a behaviour, and its score in every regime.

The examples run as one batch, right-padded (the model is causal: logits are read only at each
example's own position, so the padding changes nothing there). Parameters: one logit z_c per
(layer, component) shared by all examples, for the candidates, the components whose natural CI is
> 0 at some real position of some example (the rest are fixed out). The gate g_c is the lower leaky
hard sigmoid of z_c, starting at 1 (every candidate in). With l(e, t, c) = g_c · CI(e, t, c):

- ``mask="stochastic"`` (default): m = l + (1 − l)·U(0, 1), delta mask U(0, 1). A component in the
  circuit keeps at least its causal importance; every other one is free anywhere in [0, 1] (what
  "not causally important" means in SPD), so the circuit must work whatever they do.
- ``mask="ci"``: m = l, no delta. Optimistic: the regime where shortcut circuits live.

Loss: mean over examples of the CE of the target token at its position (or KL(target ‖ masked)
there) + ``sparsity`` × Σ_c upper_leaky(z_c)^p; with ``adversarial_steps`` also that loss under a
PGD adversary on the free part of the masks. Seeded; AdamW, constant LR.

The circuit is the set of components with g > 0. ``score_circuit`` measures a set s (s_c ∈ {0, 1})
on examples, per example and on average, in every regime:
- ``target``: the model itself;
- ``stochastic``: m = s·CI + (1 − s·CI)·U(0, 1), delta U(0, 1), mean over samples (drawn with
  ``masks.stochastic_masks`` on the layers in model order, after seeding with the settings' seed);
- ``adversarial``: the same bounds, the free part and the delta chosen by
  ``losses.signed_gradient_masks`` to maximise KL(target ‖ masked) at each example's position;
- ``ci``: m = s·CI, no delta; ``alone``: m = s (the set fully on, all else off), no delta.
A sample is correct when the target token's logit at the example's position is above every other.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F

from spd_core.analysis.ci import model_ci
from spd_core.analysis.common import check_single_input, kl_div, resolve
from spd_core.analysis.finder import Example
from spd_core.analysis.health import checked_forward
from spd_core.analysis.overlay import Edit, applied
from spd_core.analysis.regimes import RegimeSettings
from spd_core.ci import lower_leaky_hard_sigmoid, upper_leaky_hard_sigmoid
from spd_core.errors import require
from spd_core.keys import ComponentKey
from spd_core.losses import importance_minimality_loss, signed_gradient_masks
from spd_core.masks import stochastic_masks
from spd_core.model import ComponentModel

Progress = Callable[[int, int, float], None]
SharedRegime = Literal["target", "stochastic", "adversarial", "ci", "alone"]
SHARED_REGIMES: tuple[SharedRegime, ...] = ("target", "stochastic", "adversarial", "ci", "alone")


@dataclass(frozen=True)
class SharedCircuitConfig:
    steps: int = 200
    lr: float = 0.1
    sparsity: float = 0.003
    p: float = 0.5
    loss: Literal["ce", "kl"] = "ce"
    mask: Literal["stochastic", "ci"] = "stochastic"
    adversarial_steps: int = 0
    adversarial_step_size: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class ExampleBatch:
    """``x``: token ids (batch, seq), right-padded, or toy features (batch, d_in); ``valid`` is True
    at real tokens, (batch, seq) ((batch,) for toys); ``positions`` and ``targets`` are (batch,)."""

    x: Tensor
    valid: Tensor
    positions: Tensor
    targets: Tensor

    def at_positions(self, out: Tensor) -> Tensor:
        """(batch, vocab): each example's output at its own position (a toy's only row)."""
        if out.ndim == 2:
            return out
        return out[torch.arange(out.shape[0], device=out.device), self.positions]


def batch_examples(
    examples: Sequence[Example], device: torch.device, pad_id: int = 0
) -> ExampleBatch:
    """Stack examples into one batch, token ids right-padded with ``pad_id``; positions resolved."""
    require(examples, "give at least one example {tokens, target_token, position}")
    for ex in examples:
        check_single_input(ex.tokens)
    if examples[0].tokens.is_floating_point():  # toy features: one row each, no positions
        shapes = {tuple(ex.tokens.shape) for ex in examples}
        require(
            len(shapes) == 1, f"toy examples must share one feature shape; got {sorted(shapes)}"
        )
        x = torch.cat([ex.tokens for ex in examples]).to(device)
        valid = torch.ones(len(examples), dtype=torch.bool, device=device)
        positions = [resolve(ex.position, 1) for ex in examples]
    else:
        lengths = [ex.tokens.shape[1] for ex in examples]
        x = torch.full((len(examples), max(lengths)), pad_id, dtype=torch.long, device=device)
        valid = torch.zeros(x.shape, dtype=torch.bool, device=device)
        for i, (ex, n) in enumerate(zip(examples, lengths, strict=True)):
            x[i, :n] = ex.tokens[0]
            valid[i, :n] = True
        positions = [resolve(ex.position, n) for ex, n in zip(examples, lengths, strict=True)]
    targets = torch.tensor([ex.target_token for ex in examples], device=device)
    return ExampleBatch(x, valid, torch.tensor(positions, device=device), targets)


@dataclass(frozen=True)
class RegimeScore:
    """Per example: ``probs`` is p(target) at its position (mean over samples), ``correct`` the
    fraction of samples where the target is the strict argmax (0 or 1 in deterministic regimes)."""

    probs: list[float]
    correct: list[float]

    @property
    def mean_prob(self) -> float:
        return sum(self.probs) / len(self.probs)

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / len(self.correct)


@dataclass(frozen=True)
class SharedCircuit:
    """``components``: the circuit (gate > 0), largest gate first; ``gates[layer]`` (C,);
    ``n_candidates``: components with natural CI > 0 somewhere (the rest were never in);
    ``scores``: the circuit on the optimisation examples in every regime; ``full``: the same with
    every component in the set (what the decomposition itself reaches in each regime);
    ``converged``: the set did not change over the last tenth of the steps."""

    components: list[tuple[ComponentKey, float]]
    gates: dict[str, Tensor]
    l0: dict[str, int]
    n_candidates: int
    scores: dict[SharedRegime, RegimeScore]
    full: dict[SharedRegime, RegimeScore]
    loss_trace: list[float]
    converged: bool
    steps: int
    positions: list[int]
    targets: list[int]


def _prediction_loss(logits: Tensor, ref: Tensor, targets: Tensor, kind: str) -> Tensor:
    if kind == "ce":
        return F.cross_entropy(logits.float(), targets)
    return kl_div(ref, logits).mean()


def _worst_masks(
    model: ComponentModel,
    batch: ExampleBatch,
    ref: Tensor,
    lower: Mapping[str, Tensor],
    steps: int,
    step_size: float,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Masks in [lower, 1] and delta masks that maximise Σ_examples KL(target ‖ masked) at each
    example's own position (signed-gradient ascent)."""

    def objective(masks: dict[str, Tensor], delta: dict[str, Tensor]) -> Tensor:
        out = model(batch.x, masks=masks, delta_masks=delta).output
        return kl_div(ref, batch.at_positions(out)).sum()

    return signed_gradient_masks(lower, objective, steps, step_size)


def _members(
    model: ComponentModel, components: Sequence[ComponentKey], device: torch.device
) -> dict[str, Tensor]:
    member = {name: torch.zeros(info.C, device=device) for name, info in model.layers.items()}
    for key in components:
        require(
            key.layer in member,
            f"unknown layer {key.layer!r}; valid layers: {', '.join(model.layers)}",
        )
        C = model.layers[key.layer].C
        require(0 <= key.c < C, f"component {key} out of range; valid: 0..{C - 1}")
        member[key.layer][key.c] = 1.0
    return member


def _scores(
    model: ComponentModel,
    batch: ExampleBatch,
    ci: Mapping[str, Tensor],
    target_out: Tensor,
    member: Mapping[str, Tensor],
    settings: RegimeSettings,
) -> dict[SharedRegime, RegimeScore]:
    lower = {k: member[k] * ci[k] for k in model.layers}
    ref = batch.at_positions(target_out).detach()

    def score(outs: list[Tensor]) -> RegimeScore:
        logits = torch.stack(
            [batch.at_positions(o).float() for o in outs]
        )  # (sample, batch, vocab)
        idx = batch.targets.expand(len(outs), -1)[..., None]
        probs = logits.softmax(-1).gather(-1, idx)[..., 0]
        rivals = logits.scatter(-1, idx, float("-inf")).amax(-1)
        hits = (logits.gather(-1, idx)[..., 0] > rivals).float()  # strict: a tie is not a hit
        return RegimeScore(probs.mean(0).tolist(), hits.mean(0).tolist())

    def run(masks: Mapping[str, Tensor], delta: Mapping[str, Tensor] | None, what: str) -> Tensor:
        return checked_forward(model, batch.x, masks=masks, delta_masks=delta, what=what).output

    out: dict[SharedRegime, RegimeScore] = {"target": score([target_out])}
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(settings.seed)
        samples = [
            run(*stochastic_masks(lower), "circuit stochastic forward")
            for _ in range(settings.n_samples)
        ]
        out["stochastic"] = score(samples)
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        with torch.enable_grad():
            masks, delta = _worst_masks(
                model, batch, ref, lower, settings.pgd_steps, settings.pgd_step_size
            )
    with torch.no_grad():
        out["adversarial"] = score([run(masks, delta, "circuit adversarial forward")])
        out["ci"] = score([run(lower, None, "circuit CI-masked forward")])
        alone = {k: member[k].expand_as(g) for k, g in lower.items()}
        out["alone"] = score([run(alone, None, "circuit-alone forward")])
    return {r: out[r] for r in SHARED_REGIMES}


def score_circuit(
    model: ComponentModel,
    examples: Sequence[Example],
    components: Sequence[ComponentKey],
    settings: RegimeSettings | None = None,
    edit: Edit | None = None,
) -> dict[SharedRegime, RegimeScore]:
    """The set's target probability and accuracy on ``examples`` in every regime (module doc)."""
    settings = settings or RegimeSettings()
    device = next(model.parameters()).device
    batch = batch_examples(examples, device)
    with applied(model, edit), torch.no_grad():
        ci, _, target_out = model_ci(model, batch.x)
        _check_targets(batch, target_out)
        lower = {k: ci.lower[k].detach() for k in model.layers}
        return _scores(
            model, batch, lower, target_out, _members(model, components, device), settings
        )


def _check_targets(batch: ExampleBatch, target_out: Tensor) -> None:
    vocab = target_out.shape[-1]
    bad = [int(t) for t in batch.targets if not 0 <= int(t) < vocab]
    require(not bad, f"target token ids {bad} out of range; valid: 0..{vocab - 1}")


def optimize_shared_circuit(
    model: ComponentModel,
    examples: Sequence[Example],
    config: SharedCircuitConfig | None = None,
    progress: Progress | None = None,
    edit: Edit | None = None,
    regimes: RegimeSettings | None = None,
) -> SharedCircuit:
    """One circuit of components (shared gates) keeping every example's prediction; module doc."""
    config = config or SharedCircuitConfig()
    regimes = regimes or RegimeSettings()
    require(config.steps >= 1, f"steps must be ≥ 1; got {config.steps}")
    require(config.loss in ("ce", "kl"), f"loss must be 'ce' or 'kl'; got {config.loss!r}")
    require(
        config.mask in ("stochastic", "ci"),
        f"mask must be 'stochastic' or 'ci'; got {config.mask!r}",
    )
    device = next(model.parameters()).device
    batch = batch_examples(examples, device)
    names = list(model.layers)
    sizes = [model.layers[k].C for k in names]
    with applied(model, edit), torch.random.fork_rng():
        torch.manual_seed(config.seed)
        with torch.no_grad():
            ci0, _, target_out = model_ci(model, batch.x)
        _check_targets(batch, target_out)
        ci = {k: ci0.lower[k].detach() for k in names}
        real = batch.valid[..., None]
        keep = torch.cat([((ci[k] * real).flatten(0, -2) > 0).any(0) for k in names]).float()
        z = keep.clone().requires_grad_(True)  # candidates start fully in (g = 1)
        ref = batch.at_positions(target_out).detach()
        opt = torch.optim.AdamW([z], lr=config.lr, weight_decay=0.0)
        trace: list[float] = []
        sets: list[Tensor] = []
        for step in range(config.steps):
            pre = z * keep  # non-candidates stay out (their gradient is 0)
            gates = dict(zip(names, lower_leaky_hard_sigmoid(pre).split(sizes), strict=True))
            lower = {k: gates[k] * ci[k] for k in names}
            if config.mask == "stochastic":
                masks, delta = stochastic_masks(lower)
            else:
                masks, delta = lower, None
            out = checked_forward(
                model,
                batch.x,
                masks=masks,
                delta_masks=delta,
                what="shared circuit forward",
                layer_flags=False,
            ).output
            loss = _prediction_loss(batch.at_positions(out), ref, batch.targets, config.loss)
            if config.adversarial_steps:
                masks, delta = _worst_masks(
                    model, batch, ref, lower, config.adversarial_steps, config.adversarial_step_size
                )
                adv = checked_forward(
                    model,
                    batch.x,
                    masks=masks,
                    delta_masks=delta,
                    what="shared circuit adversarial forward",
                )
                loss = loss + _prediction_loss(
                    batch.at_positions(adv.output), ref, batch.targets, config.loss
                )
            loss = loss + config.sparsity * importance_minimality_loss(
                {"all": upper_leaky_hard_sigmoid(pre)[None]}, config.p
            )
            # autograd.grad, not backward: nothing accumulates in the model's own .grad fields
            (z.grad,) = torch.autograd.grad(loss, [z])
            opt.step()
            trace.append(float(loss.detach()))
            sets.append((z.detach() * keep) > 0)
            if progress is not None:
                progress(step + 1, config.steps, trace[-1])
        with torch.no_grad():
            final = dict(
                zip(names, lower_leaky_hard_sigmoid(z.detach() * keep).split(sizes), strict=True)
            )
            member = {k: (g > 0).float() for k, g in final.items()}
            scores = _scores(model, batch, ci, target_out, member, regimes)
            everything = {k: torch.ones_like(g) for k, g in member.items()}
            full = _scores(model, batch, ci, target_out, everything, regimes)
    components = [
        (ComponentKey(k, c), float(g[c]))
        for k, g in final.items()
        for c in (g > 0).nonzero()[:, 0].tolist()
    ]
    components.sort(key=lambda kv: -kv[1])
    tail = sets[-max(1, len(sets) // 10) :]
    converged = len(sets) >= 10 and all(bool((s == tail[-1]).all()) for s in tail)
    return SharedCircuit(
        components=components,
        gates={k: g.cpu() for k, g in final.items()},
        l0={k: int((g > 0).sum()) for k, g in final.items()},
        n_candidates=int(keep.sum()),
        scores=scores,
        full=full,
        loss_trace=trace,
        converged=converged,
        steps=config.steps,
        positions=batch.positions.tolist(),
        targets=batch.targets.tolist(),
    )
