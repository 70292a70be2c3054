"""Validation of a claimed circuit on examples it was not found on: necessity, specificity,
sufficiency.

A claim is a set of components (every position) and/or nodes (one position) and a behaviour given
as examples: token ids, the correct next token, optionally a foil (the wrong answer the behaviour
rules out) and the position. Every example is measured with ``ablation.ablate`` in each regime
(deterministic, stochastic, adversarial; see that module for the masks). An example is *correct*
when the target is the most probable token (strictly: a tie answers nothing), or, with a foil, when
p(target) > p(foil).

- necessity (remove the set): per example the relative drop (p_before − p_after) / p_before;
  ``broken`` is the share of examples no longer correct.
- sufficiency (keep only the set): per example 1 when the kept set still answers correctly. A set
  that always gives the same answer is correct only on the examples whose answer that is, so the
  score is chance-corrected: (accuracy − baseline) / (1 − baseline), with ``baseline`` the share of
  the most common correct answer. When every example has the same answer, the other behaviours'
  examples stand in: the score is accuracy − leak, ``leak`` being the share of other examples on
  which the kept set gives one of the behaviour's answers although the model does not.
- specificity (remove the set, on other behaviours' examples or controls): 1 − the mean relative
  drop of their own target's probability, each drop clamped to [0, 1].

Means come with percentile bootstrap intervals over examples (seeded). A property *holds* when the
interval's lower end clears its bar, *fails* when the upper end is below it, and is *inconclusive*
otherwise. Every property must hold in the deterministic and the stochastic regime. For sufficiency
that means the set alone (everything else off) and the set in [CI, 1] with everything else random in
[0, 1]: the second alone is too weak, since components left half on on average still do their work.
The adversarial regime (the rest chosen within the same ranges to break the claim) is reported as
the claim's robustness, not required.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from spd_core.analysis.ablation import (
    AblationMode,
    AblationRegime,
    TargetPass,
    TargetPasses,
    ablate,
)
from spd_core.errors import require
from spd_core.keys import ComponentKey, NodeKey
from spd_core.model import ComponentModel

Status = Literal["holds", "fails", "inconclusive"]
REGIMES: tuple[AblationRegime, ...] = ("deterministic", "stochastic", "adversarial")


@dataclass(frozen=True)
class Probe:
    """One example of a behaviour: the model should predict ``target`` after ``token_ids`` at
    ``position``.

    A toy model's example gives ``features`` (its input vector) instead of token ids; ``target`` is
    then the output index that should be largest."""

    token_ids: list[int]
    target: int
    mechanism: str = ""
    foil: int | None = None
    position: int = -1
    features: list[float] | None = None

    def as_input(self, device: torch.device) -> torch.Tensor:
        if self.features is not None:
            return torch.tensor([self.features], device=device)
        return torch.tensor([self.token_ids], device=device)


@dataclass(frozen=True)
class Outcome:
    """One example under one intervention: the target's probability and correctness before and
    after."""

    p_before: float
    p_after: float
    correct_before: bool
    correct_after: bool
    answer_after: int  # most probable token after; -1 when tied (no answer)

    @property
    def relative_drop(self) -> float:
        return (self.p_before - self.p_after) / max(self.p_before, 1e-12)


@dataclass(frozen=True)
class MeasureSettings:
    n_samples: int = 8  # stochastic regime
    pgd_steps: int = 10  # adversarial regime
    seed: int = 0


def measure(
    model: ComponentModel,
    probe: Probe,
    mode: AblationMode,
    regime: AblationRegime,
    components: Sequence[ComponentKey] = (),
    nodes: Sequence[NodeKey] = (),
    settings: MeasureSettings | None = None,
    pre: TargetPass | None = None,
) -> Outcome:
    """``probe`` with ``components`` / ``nodes`` removed or kept alone, in one regime (``pre``: the
    probe's target pass, when the caller measures it more than once)."""
    s = settings or MeasureSettings()
    x = probe.as_input(next(model.parameters()).device)
    also = () if probe.foil is None else (probe.foil,)
    r = ablate(
        model,
        x,
        components,
        nodes,
        mode=mode,
        regime=regime,
        position=probe.position,
        token=probe.target,
        also=also,
        k=2,
        n_samples=s.n_samples,
        pgd_steps=s.pgd_steps,
        seed=s.seed,
        pre=pre,
    )
    assert r.token_prob_before is not None and r.token_prob_after is not None
    if probe.foil is None:
        correct_before = _strict_top(r.before_top, probe.target)
        correct_after = _strict_top(r.after_top, probe.target)
    else:
        correct_before = r.token_prob_before > r.also_before[probe.foil]
        correct_after = r.token_prob_after > r.also_after[probe.foil]
    answer = r.after_top[0][0] if _strict_top(r.after_top, r.after_top[0][0]) else -1
    return Outcome(r.token_prob_before, r.token_prob_after, correct_before, correct_after, answer)


def _strict_top(top: Sequence[tuple[int, float]], token: int) -> bool:
    """``token`` is the most probable, strictly (a uniform output answers nothing)."""
    return top[0][0] == token and (len(top) < 2 or top[0][1] > top[1][1])


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def status(self, bar: float) -> Status:
        if self.low >= bar:
            return "holds"
        if self.high < bar:
            return "fails"
        return "inconclusive"


def bootstrap(
    values: Sequence[float],
    stat: Callable[[torch.Tensor], torch.Tensor] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of ``stat`` (default: the mean) over ``values``, seeded."""
    assert values, "bootstrap needs at least one value"
    assert 0.0 < confidence < 1.0, f"confidence must be in (0, 1); got {confidence}"
    fn = stat or (lambda t: t.mean(-1))
    v = torch.tensor(list(values), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(v), (n_resamples, len(v)), generator=gen)
    stats = fn(v[idx])
    a = (1 - confidence) / 2
    lo, hi = torch.quantile(stats, torch.tensor([a, 1 - a], dtype=torch.float64)).tolist()
    return Interval(mean=float(fn(v[None])[0]), low=float(lo), high=float(hi), n=len(v))


def chance_corrected(baseline: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The statistic (accuracy − baseline) / (1 − baseline) over the last dim."""
    require(baseline < 1.0, "chance correction needs examples with at least two different answers")
    return lambda t: (t.mean(-1) - baseline) / (1 - baseline)


def _two_sample(
    correct: Sequence[float], leaked: Sequence[float], cfg: "ValidationConfig"
) -> Interval:
    """Bootstrap interval of mean(correct) − mean(leaked), resampling each sample on its own."""
    gen = torch.Generator().manual_seed(cfg.measure.seed)
    a = torch.tensor(list(correct), dtype=torch.float64)
    b = torch.tensor(list(leaked), dtype=torch.float64)
    ia = torch.randint(len(a), (cfg.n_bootstrap, len(a)), generator=gen)
    ib = torch.randint(len(b), (cfg.n_bootstrap, len(b)), generator=gen)
    stats = a[ia].mean(-1) - b[ib].mean(-1)
    q = (1 - cfg.confidence) / 2
    lo, hi = torch.quantile(stats, torch.tensor([q, 1 - q], dtype=torch.float64)).tolist()
    return Interval(float(a.mean() - b.mean()), float(lo), float(hi), len(a))


@dataclass(frozen=True)
class RegimeNumbers:
    """One regime's numbers; ``*_per_example`` follow the order of the examples."""

    regime: AblationRegime
    necessity: Interval
    broken: float  # share of examples no longer correct with the set removed
    sufficiency: (
        Interval | None
    )  # chance-corrected accuracy (or accuracy − leak) with only the set kept
    accuracy_kept: Interval
    leak: (
        float | None
    )  # share of other examples where the kept set gives the behaviour's answer, the model not
    prob_kept: float  # mean of min(p_kept / p_before, 1)
    distinct_answers_kept: int
    specificity: Interval | None  # None without other examples
    specificity_by: dict[str, float]  # its mean per behaviour (mechanism) of the other examples
    removed: list[Outcome]
    kept: list[Outcome]
    others_removed: list[Outcome]
    others_kept: list[Outcome]


@dataclass(frozen=True)
class Validation:
    used: list[int]  # indices of the examples measured (the model answers them correctly)
    n_examples: int
    n_dropped: int  # examples the model itself gets wrong: not used
    baseline: float  # share of the most common correct answer
    distinct_answers: int
    n_others: int
    regimes: dict[AblationRegime, RegimeNumbers]
    necessity: Status
    sufficiency: Status
    specificity: Status
    sufficient_alone: Status | None
    sufficient_adversarial: Status | None
    bars: dict[str, float]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ValidationConfig:
    regimes: tuple[AblationRegime, ...] = REGIMES
    measure: MeasureSettings = MeasureSettings()
    n_bootstrap: int = 1000
    confidence: float = 0.95
    min_examples: int = 8
    necessity_bar: float = 0.5
    specificity_bar: float = 0.8
    sufficiency_bar: float = 0.5


Progress = Callable[[int, int], None]


def _combine(statuses: Sequence[Status]) -> Status:
    if any(s == "fails" for s in statuses):
        return "fails"
    return "holds" if statuses and all(s == "holds" for s in statuses) else "inconclusive"


def validate(
    model: ComponentModel,
    examples: Sequence[Probe],
    others: Sequence[Probe] = (),
    components: Sequence[ComponentKey] = (),
    nodes: Sequence[NodeKey] = (),
    config: ValidationConfig | None = None,
    progress: Progress | None = None,
    passes: TargetPasses | None = None,
) -> Validation:
    """Necessity, sufficiency and specificity of the set on ``examples`` (held out from where the
    claim was found) and ``others`` (other behaviours or controls), per regime, with intervals; see
    module doc. ``passes``: the caller's cache of the examples' target passes (each is computed
    once either way)."""
    cfg = config or ValidationConfig()
    require(
        components or nodes,
        "give at least one component ('layer:c') or node ('layer:pos:c') to validate",
    )
    require(examples, "give at least one example of the behaviour")
    bad = [r for r in cfg.regimes if r not in REGIMES]
    require(
        not bad and cfg.regimes,
        f"regimes must be a non-empty subset of {', '.join(REGIMES)}; got {list(cfg.regimes)}",
    )
    total = len(cfg.regimes) * 2 * (len(examples) + len(others))
    done = 0
    cache = passes if passes is not None else TargetPasses()
    device = next(model.parameters()).device

    def run(probe: Probe, mode: AblationMode, regime: AblationRegime) -> Outcome:
        nonlocal done
        pre = cache.get(model, probe.as_input(device))
        out = measure(model, probe, mode, regime, components, nodes, cfg.measure, pre)
        done += 1
        if progress is not None:
            progress(done, total)
        return out

    with torch.no_grad():
        base = [run(p, "remove", cfg.regimes[0]) for p in examples]
    keep = [i for i, o in enumerate(base) if o.correct_before]
    mine = [examples[i] for i in keep]
    notes: list[str] = []
    if len(mine) < len(examples):
        notes.append(
            f"{len(examples) - len(mine)} of {len(examples)} examples dropped: the model itself "
            "answers them wrongly"
        )
    answers = [p.target for p in mine]
    counts = {a: answers.count(a) for a in set(answers)}
    baseline = max(counts.values()) / len(answers) if answers else 1.0
    numbers: dict[AblationRegime, RegimeNumbers] = {}
    for regime in cfg.regimes:
        removed = (
            [base[i] for i in keep]
            if regime == cfg.regimes[0]
            else [run(p, "remove", regime) for p in mine]
        )
        kept = [run(p, "keep_only", regime) for p in mine]
        free = (
            regime != "adversarial"
        )  # the others' worst case is not the claim's: measured in the two others
        others_removed = [run(p, "remove", regime) for p in others] if free else []
        others_kept = [run(p, "keep_only", regime) for p in others] if free else []
        leaked = (
            [
                float(o.answer_after in counts and o.answer_after != p.target and o.correct_before)
                for p, o in zip(others, others_kept, strict=True)
            ]
            if free
            else []
        )
        numbers[regime] = _regime_numbers(
            regime,
            removed,
            kept,
            others_removed,
            others_kept,
            leaked,
            baseline,
            cfg,
            [p.mechanism for p in others] if others_removed else [],
        )
    return _judge(
        numbers, keep, len(examples) - len(mine), baseline, len(counts), len(others), cfg, notes
    )


def _regime_numbers(
    regime: AblationRegime,
    removed: list[Outcome],
    kept: list[Outcome],
    others: list[Outcome],
    others_kept: list[Outcome],
    leaked: list[float],
    baseline: float,
    cfg: ValidationConfig,
    other_tags: Sequence[str] = (),
) -> RegimeNumbers:
    def interval(
        values: Sequence[float], stat: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> Interval:
        if not values:
            return Interval(float("nan"), float("nan"), float("nan"), 0)
        return bootstrap(values, stat, cfg.n_bootstrap, cfg.confidence, cfg.measure.seed)

    correct_kept = [float(o.correct_after) for o in kept]
    if kept and baseline < 1.0:
        suff: Interval | None = interval(correct_kept, chance_corrected(baseline))
    elif kept and leaked:
        suff = _two_sample(correct_kept, leaked, cfg)
    else:
        suff = None
    spared = [1.0 - min(max(o.relative_drop, 0.0), 1.0) for o in others]
    spec = interval(spared) if others else None
    return RegimeNumbers(
        regime=regime,
        necessity=interval([o.relative_drop for o in removed]),
        broken=sum(not o.correct_after for o in removed) / max(len(removed), 1),
        sufficiency=suff,
        accuracy_kept=interval(correct_kept),
        leak=sum(leaked) / len(leaked) if leaked else None,
        prob_kept=sum(min(o.p_after / max(o.p_before, 1e-12), 1.0) for o in kept)
        / max(len(kept), 1),
        distinct_answers_kept=len({o.answer_after for o in kept} - {-1}),
        specificity=spec,
        specificity_by=by_tag(spared, other_tags),
        removed=removed,
        kept=kept,
        others_removed=others,
        others_kept=others_kept,
    )


def by_tag(values: Sequence[float], tags: Sequence[str]) -> dict[str, float]:
    """The mean of ``values`` per tag (``values`` and ``tags`` in one order), tags sorted; empty
    when there are no values."""
    groups: dict[str, list[float]] = {}
    for v, t in zip(values, tags, strict=True):
        groups.setdefault(t, []).append(v)
    return {t: sum(g) / len(g) for t, g in sorted(groups.items())}


def _judge(
    numbers: dict[AblationRegime, RegimeNumbers],
    used: list[int],
    dropped: int,
    baseline: float,
    distinct: int,
    n_others: int,
    cfg: ValidationConfig,
    notes: list[str],
) -> Validation:
    n = len(used)
    bars = {
        "necessity": cfg.necessity_bar,
        "specificity": cfg.specificity_bar,
        "sufficiency": cfg.sufficiency_bar,
    }
    few = n < cfg.min_examples
    if few:
        notes.append(
            f"only {n} usable examples (at least {cfg.min_examples} are needed for a verdict): "
            "inconclusive"
        )
    pair: tuple[AblationRegime, AblationRegime] = ("deterministic", "stochastic")
    both: list[AblationRegime] = [r for r in pair if r in numbers]
    if len(both) < 2:
        notes.append(
            "necessity and specificity need the deterministic and stochastic regimes: inconclusive"
        )
    necessity = (
        _combine([numbers[r].necessity.status(cfg.necessity_bar) for r in both])
        if len(both) == 2
        else "inconclusive"
    )
    specs = [numbers[r].specificity for r in both]
    if n_others == 0:
        notes.append("no other behaviours or controls were given: specificity not measured")
    specificity = (
        _combine([s.status(cfg.specificity_bar) for s in specs if s is not None])
        if len(both) == 2 and n_others
        else "inconclusive"
    )

    def suff(regime: AblationRegime) -> Status | None:
        if regime not in numbers:
            return None
        s = numbers[regime].sufficiency
        return "inconclusive" if s is None else s.status(cfg.sufficiency_bar)

    if distinct < 2:
        notes.append(
            "every example has the same correct answer: sufficiency is accuracy minus leak on the "
            "other examples"
            if n_others
            else "every example has the same correct answer and no other examples "
            "were given: a constant answer cannot be told from a sufficient set, so sufficiency is "
            "inconclusive"
        )
    sufficiency = (
        _combine([suff(r) or "inconclusive" for r in both]) if len(both) == 2 else "inconclusive"
    )
    if few:
        necessity = specificity = sufficiency = "inconclusive"
    return Validation(
        used=used,
        n_examples=n,
        n_dropped=dropped,
        baseline=baseline,
        distinct_answers=distinct,
        n_others=n_others,
        regimes=numbers,
        necessity=necessity,
        sufficiency=sufficiency,
        specificity=specificity,
        sufficient_alone=suff("deterministic"),
        sufficient_adversarial=suff("adversarial"),
        bars=bars,
        notes=notes,
    )


def held_out(
    probes: Sequence[Probe],
    mechanism: str,
    exclude: Sequence[list[int]] = (),
    n_examples: int = 40,
    n_others: int = 40,
    seed: int = 0,
) -> tuple[list[Probe], list[Probe]]:
    """A seeded sample of ``mechanism``'s probes whose token ids are not in ``exclude`` (the prompts
    a claim was found on or selected on), and a sample of the other mechanisms' probes (as even
    across them as it can), also without the excluded prompts."""
    tags = sorted({p.mechanism for p in probes})
    require(
        mechanism in tags,
        f"no probe has mechanism {mechanism!r}; valid: {', '.join(tags) or 'none (no probes)'}",
    )
    skip = {tuple(e) for e in exclude}
    gen = torch.Generator().manual_seed(seed)

    def sample(pool: list[Probe], n: int) -> list[Probe]:
        order = torch.randperm(len(pool), generator=gen).tolist()
        return [pool[i] for i in order[:n]]

    mine = sample(
        [p for p in probes if p.mechanism == mechanism and tuple(p.token_ids) not in skip],
        n_examples,
    )
    rest = [t for t in tags if t != mechanism]
    others: list[Probe] = []
    for i, tag in enumerate(rest):
        share = n_others // len(rest) + (1 if i < n_others % len(rest) else 0)
        others += sample(
            [p for p in probes if p.mechanism == tag and tuple(p.token_ids) not in skip], share
        )
    return mine, others


def with_model_answers(model: ComponentModel, probes: Sequence[Probe]) -> list[Probe]:
    """Probes whose ``target`` is -1 ("whatever the model says") get the model's own top-1 there."""
    out = []
    device = next(model.parameters()).device
    for p in probes:
        if p.target >= 0:
            out.append(p)
            continue
        with torch.no_grad():
            logits = model(p.as_input(device)).output
        row = logits[0, p.position] if logits.ndim == 3 else logits[0]
        out.append(
            Probe(p.token_ids, int(row.argmax()), p.mechanism, p.foil, p.position, p.features)
        )
    return out


Claim = Literal["necessary", "sufficient", "specific"]
PROPERTY: dict[str, str] = {
    "necessary": "necessity",
    "sufficient": "sufficiency",
    "specific": "specificity",
}


@dataclass(frozen=True)
class ClaimJudgement:
    status: Literal["supported", "refuted", "inconclusive", "unvalidated"]
    confidence: Literal["high", "medium", "low"]
    reasons: list[str]


def judge_claims(
    claims: Sequence[Claim], verdicts: Sequence[Mapping[str, object]]
) -> ClaimJudgement:
    """What an explanation may say, from the validations it rests on (each a mapping with the
    verdicts 'necessity', 'sufficiency', 'specificity', 'robust_to_adversary' and 'n_examples').

    Refuted when any validation finds a claimed property failing; supported when every claimed
    property holds in some validation and fails in none; else inconclusive. Confidence: high when
    supported on ≥ 30 examples in every validation (and, for sufficiency, robust to the adversary),
    medium when supported otherwise, low otherwise. No validation: unvalidated, low.
    """
    require(claims, f"claim at least one property; valid: {', '.join(PROPERTY)}")
    bad = [c for c in claims if c not in PROPERTY]
    require(not bad, f"unknown claim(s) {bad}; valid: {', '.join(PROPERTY)}")
    if not verdicts:
        return ClaimJudgement(
            "unvalidated", "low", ["no validation: call validate_claim and cite its validation_id"]
        )
    reasons: list[str] = []
    failed = held = False
    held_all = True
    for claim in dict.fromkeys(claims):
        prop = PROPERTY[claim]
        states = [str(v.get(prop)) for v in verdicts]
        if "fails" in states:
            failed = True
            reasons.append(f"{prop} fails")
        elif "holds" in states:
            held = True
            reasons.append(f"{prop} holds")
        else:
            held_all = False
            reasons.append(f"{prop} is inconclusive")
    if failed:
        return ClaimJudgement("refuted", "low", reasons)
    if not (held and held_all):
        return ClaimJudgement("inconclusive", "low", reasons)
    big = all(int(str(v.get("n_examples", 0))) >= 30 for v in verdicts)
    robust = "sufficient" not in claims or any(
        v.get("robust_to_adversary") == "holds" for v in verdicts
    )
    return ClaimJudgement("supported", "high" if big and robust else "medium", reasons)
