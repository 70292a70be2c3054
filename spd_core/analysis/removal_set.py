"""One set of components whose removal breaks a behaviour and spares the others (necessary and
specific), optimised over many examples of both.

A set found on a handful of prompts and then pruned tends to carry components the other behaviours
also use: removing it is necessary for the behaviour and harms the rest. Here the set is chosen by
gradient descent over every component at once, on a pool of the behaviour's examples and a pool of
other behaviours' examples, in the two regimes validation judges removal in:

- deterministic: every other component and the weight delta fully on;
- stochastic: every other component uniform in [CI, 1], the delta uniform in [0, 1].

Parameters: one logit z_c per component; its removal r_c = σ(z_c / τ), starting at σ(0.5 / τ) (all
removed) with the temperature τ annealed from 1 to ``MIN_TEMPERATURE`` over the first
``ANNEAL_SHARE`` of the steps, so r ends at 0 or 1 and the set optimised is the set returned
(z_c > 0). With kept(e) = min(p_removed(e) / p_target(e), 1) at each example's position:

    loss = Σ_regimes [ max(K_b − slack, 0) + w · (1 − mean kept over the others) ] + λ · Σ_c r_c

where K_b is the root mean square over the behaviour's answers (e.g. 'he' and 'she') of the mean
kept share of each: breaking one answer and not the other scores worse than breaking both halfway,
so the set cannot pass by deleting one answer. ``slack``: the share the behaviour may keep before
removing more stops paying (necessity beyond it costs specificity for nothing). Each step uses a
seeded minibatch of each pool. The result is measured on held-out prompts by ``validation``, never
judged by its own training numbers.

Defaults, from the demo's pronoun behaviour (100 probes and 150 of the others to optimise on, 40
and 45 held out, three seeds each): w 0.5 and slack 0.3 made a set necessary and specific on
held-out prompts for two seeds of three (the third: specificity 0.80 [0.71, ...]); w 1 and slack
0.45 did for all three (specificity lows 0.82-0.92, stochastic necessity lows 0.56-0.76).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from spd_core.analysis.ci import model_ci
from spd_core.analysis.finder import Example
from spd_core.analysis.shared_circuit import ExampleBatch, batch_examples
from spd_core.errors import require
from spd_core.keys import ComponentKey
from spd_core.model import ComponentModel

MIN_TEMPERATURE = 0.05
ANNEAL_SHARE = 0.8
Progress = Callable[[int, int, float], None]


@dataclass(frozen=True)
class RemovalConfig:
    steps: int = 300
    lr: float = 0.1
    specificity_weight: float = 1.0
    sparsity: float = 0.001
    slack: float = 0.45
    batch: int = 24  # behaviour examples per step; 1.5x as many of the others
    seed: int = 0


@dataclass(frozen=True)
class RemovalSet:
    """``components``: the set (z > 0), largest logit first. ``kept_behaviour`` / ``kept_others``:
    the mean kept share of p(target) with the set removed, deterministic regime, over the whole
    pools it was optimised on (training numbers, not a validation)."""

    components: list[ComponentKey]
    kept_behaviour: float
    kept_others: float
    trace: list[float]
    steps: int


@dataclass(frozen=True)
class _Pool:
    batch: ExampleBatch
    lower: dict[str, Tensor]  # CI, (n, seq, C) per layer
    p_target: Tensor  # (n,)

    def take(self, idx: Tensor) -> "_Pool":
        b = self.batch
        return _Pool(
            ExampleBatch(b.x[idx], b.valid[idx], b.positions[idx], b.targets[idx]),
            {k: v[idx] for k, v in self.lower.items()},
            self.p_target[idx],
        )


def _pool(model: ComponentModel, examples: Sequence[Example], device: torch.device) -> _Pool:
    batch = batch_examples(examples, device)
    with torch.no_grad():
        ci, _, out = model_ci(model, batch.x)
    return _Pool(batch, ci.lower, _p_target(batch, out))


def _p_target(batch: ExampleBatch, out: Tensor) -> Tensor:
    return batch.at_positions(out).float().softmax(-1).gather(-1, batch.targets[:, None])[:, 0]


def kept_share(
    model: ComponentModel, pool: _Pool, removal: dict[str, Tensor], stochastic: bool
) -> Tensor:
    """min(p_removed / p_target, 1) per example, with each component c scaled by 1 − removal[c]
    in the given regime."""
    if stochastic:
        lower = {k: g * (1 - removal[k]) for k, g in pool.lower.items()}
        masks = {k: (1 - removal[k]) * (g + (1 - g) * torch.rand_like(g)) for k, g in lower.items()}
        delta = {k: torch.rand_like(g[..., 0]) for k, g in lower.items()}
    else:
        masks = {k: (1 - removal[k]).expand_as(g) for k, g in pool.lower.items()}
        delta = {k: torch.ones_like(g[..., 0]) for k, g in pool.lower.items()}
    out = model(pool.batch.x, masks=masks, delta_masks=delta).output
    return (_p_target(pool.batch, out) / pool.p_target.clamp(min=1e-12)).clamp(max=1.0)


def per_answer_rms(kept: Tensor, targets: Tensor) -> Tensor:
    """The root mean square over distinct targets of each target's mean kept share."""
    means = torch.stack([kept[targets == t].mean() for t in targets.unique()])
    return means.pow(2).mean().sqrt()


def optimize_removal(
    model: ComponentModel,
    examples: Sequence[Example],
    others: Sequence[Example],
    config: RemovalConfig | None = None,
    progress: Progress | None = None,
) -> RemovalSet:
    """The set whose removal breaks ``examples`` and spares ``others``; see the module doc."""
    cfg = config or RemovalConfig()
    require(len(examples) >= 2, "give at least 2 examples of the behaviour")
    require(len(others) >= 2, "give at least 2 examples of other behaviours (controls)")
    require(cfg.steps >= 1, f"steps must be ≥ 1, got {cfg.steps}")
    device = next(model.parameters()).device
    mine, rest = _pool(model, examples, device), _pool(model, others, device)
    z = {
        k: torch.full((info.C,), 0.5, device=device, requires_grad=True)
        for k, info in model.layers.items()
    }
    opt = torch.optim.Adam(list(z.values()), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    trace: list[float] = []
    n_mine, n_rest = min(cfg.batch, len(examples)), min(round(cfg.batch * 1.5), len(others))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        for step in range(cfg.steps):
            tau = max(MIN_TEMPERATURE, 1.0 - step / (ANNEAL_SHARE * cfg.steps))
            removal = {k: torch.sigmoid(v / tau) for k, v in z.items()}
            a = mine.take(torch.randperm(len(examples), generator=gen)[:n_mine].to(device))
            b = rest.take(torch.randperm(len(others), generator=gen)[:n_rest].to(device))
            loss = cfg.sparsity * sum(r.sum() for r in removal.values())
            for stochastic in (False, True):
                k_b = per_answer_rms(kept_share(model, a, removal, stochastic), a.batch.targets)
                k_o = kept_share(model, b, removal, stochastic).mean()
                loss = loss + (k_b - cfg.slack).clamp(min=0) + cfg.specificity_weight * (1 - k_o)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # pyright: ignore[reportAttributeAccessIssue]
            opt.step()
            trace.append(float(loss.detach()))  # pyright: ignore[reportAttributeAccessIssue]
            if progress is not None:
                progress(step + 1, cfg.steps, trace[-1])
    logits = {k: v.detach() for k, v in z.items()}
    chosen = sorted(
        (
            (float(v[c]), ComponentKey(k, c))
            for k, v in logits.items()
            for c in (v > 0).nonzero().flatten().tolist()
        ),
        key=lambda t: -t[0],
    )
    hard = {k: (v > 0).float() for k, v in logits.items()}
    with torch.no_grad():
        kb = float(kept_share(model, mine, hard, False).mean())
        ko = float(kept_share(model, rest, hard, False).mean())
    return RemovalSet([key for _, key in chosen], kb, ko, trace, cfg.steps)
