"""The built-in protocol's pruning step: a necessary but unspecific circuit, made specific on
prompts set aside for choosing, then validated on prompts neither step has seen.

The base is the validated candidate that is necessary but not specific and nearest to specific.
Everything is measured with ``validate_claim`` on a selection split: ``N_SELECT`` prompts of the
behaviour and ``N_SELECT_CONTROLS`` of the others, which no candidate was found on.

1. A base of more than ``LOO_MAX`` components is first cut down by usage: its components most used
   by the other behaviours at the prediction (CI > 0.1 there) compared with this one are dropped a
   growing share at a time (``SHARES``), down to the smallest set still necessary.
2. Each remaining component is left out of the removed set once: how much that gives back to the
   other behaviours (specificity) minus how much it gives back to this one (necessity) orders them.
3. They are dropped in that order, a growing number at a time, until necessity fails. The step
   (other than the base itself) at which necessity and specificity both hold with the largest
   margin (lowest interval ends above their bars) is kept and validated on held-out prompts that
   exclude the found-on and the selection prompts, so the numbers it is judged by were not used to
   choose it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from spd_mcp.contract.model import ProbeRow
from spd_mcp.contract.validation import ValidationResult
from spd_mcp.launcher.agents import builtin_read as rd

if TYPE_CHECKING:
    from spd_mcp.launcher.agents.builtin import Candidate, Protocol

SHARES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
N_SELECT = 32
N_SELECT_CONTROLS = 36
LOO_MAX = 60  # a larger set is first cut down by usage: leaving each out once costs a validation


def selection_split(
    probes: list[ProbeRow], mechanism: str, found_on: list[ProbeRow]
) -> tuple[list[ProbeRow], list[ProbeRow]]:
    """The behaviour's last ``N_SELECT`` probes not found on, and the other behaviours' last probes
    (``N_SELECT_CONTROLS`` in all, as even across them as it goes)."""
    used = {p.text for p in found_on}
    mine = [p for p in probes if p.mechanism == mechanism and p.text not in used][-N_SELECT:]
    tags = sorted({p.mechanism for p in probes} - {mechanism})
    controls: list[ProbeRow] = []
    for i, tag in enumerate(tags):
        n = N_SELECT_CONTROLS // len(tags) + (1 if i < N_SELECT_CONTROLS % len(tags) else 0)
        controls += [p for p in probes if p.mechanism == tag][-n:] if n else []
    return mine, controls


def drop_order(components: list[str], here: dict[str, float], there: dict[str, float]) -> list[str]:
    """Most used elsewhere and least here first (ties keep the circuit's own order)."""
    return sorted(components, key=lambda c: here.get(c, 0.0) - there.get(c, 0.0))


def pruning_base(candidates: list[Candidate]) -> Candidate | None:
    """The candidate to make specific: necessary and not specific on held-out prompts, the one whose
    specificity is nearest to holding (fewer components on a tie); None when there is none."""
    fit = [
        (c, spec if (spec := rd.lowest(v, "specificity")) is not None else -1.0)
        for c in candidates
        if (v := c.validation) is not None and v.necessity == "holds" and v.specificity != "holds"
    ]
    best = max(fit, key=lambda cs: (cs[1], -len(cs[0].components)), default=None)
    return None if best is None else best[0]


def margin(v: ValidationResult) -> float | None:
    """How far necessity and specificity both clear their bars (the smaller of the two distances
    from the lowest interval end to the bar); None unless both hold."""
    if v.necessity != "holds" or v.specificity != "holds":
        return None
    nec, spec = rd.lowest(v, "necessity"), rd.lowest(v, "specificity")
    if nec is None or spec is None:
        return None
    return min(nec - v.bars["necessity"], spec - v.bars["specificity"])


def loo_order(
    comps: list[str], full: ValidationResult, without: dict[str, ValidationResult]
) -> list[str]:
    """Components whose return (leaving them out of the removed set) restores the other behaviours
    more than it restores this one, most first; only those with a positive balance."""

    def det(v: ValidationResult, prop: str) -> float:
        return rd.regime_mean(v, "deterministic", prop) or 0.0

    score = {
        c: (det(without[c], "specificity") - det(full, "specificity"))
        - (det(full, "necessity") - det(without[c], "necessity"))
        for c in comps
    }
    return [c for c in sorted(comps, key=lambda c: -score[c]) if score[c] > 0]


def best_step(steps: list[tuple[list[str], ValidationResult]], base: list[str]) -> int | None:
    """The index of the step, among (kept components, validation on the selection split), where
    necessity and specificity both hold with the largest margin; None when none does. The base
    itself is never chosen: it was already validated on held-out prompts, and validating it again
    on others would only pick the luckier of two samples."""
    scored = [
        (m, i) for i, (kept, v) in enumerate(steps) if kept != base and (m := margin(v)) is not None
    ]
    return max(scored, key=lambda t: (t[0], -t[1]))[1] if scored else None


def sweep_sizes(n: int) -> list[int]:
    """How many of the ordered components to drop at each step: 0, then 1, 2, 3, 4, 6, 8, 11, ...
    (growing by about a third) up to ``n``."""
    sizes, k = [0], 1
    while k <= n:
        sizes.append(k)
        k = max(k + 1, round(k * 4 / 3))
    return sizes


async def prune(proto: Protocol) -> str:
    from spd_mcp.launcher.agents.builtin import CONTROLS, HELD_OUT, Candidate, validated

    base = pruning_base(proto.f.candidates)
    if base is None:
        best = proto.best()
        v = validated(best)
        why = "already specific" if v.specificity == "holds" else "not necessary"
        return f"Not needed: {rd.the(best.name)} is {why} on held-out prompts."
    mech = proto.f.mechanism or ""
    select, controls = selection_split(proto.probes, mech, proto.f.prompts)

    async def on_selection(kept: list[str], regimes: list[str]) -> ValidationResult:
        args = {
            "components": kept,
            "examples": proto.examples(select),
            "controls": [{"text": p.text, "target_token": p.target_token} for p in controls],
            "regimes": regimes,
            "wait_s": 30,
        }
        return await proto.ask(ValidationResult, "validate_claim", args)

    parts = [
        f"{rd.the(base.name).capitalize()} is necessary but not specific on held-out prompts. "
        f"It is made specific on a selection split ({len(select)} prompts of the behaviour, "
        f"{len(controls)} of the others, none of them found-on or held-out)."
    ]
    comps = base.components
    if len(comps) > LOO_MAX:
        comps, table = await by_usage(proto, base, on_selection)
        parts.append(
            f"It has more than {LOO_MAX} components, so first its components most used by the "
            "other behaviours at the prediction are dropped a share at a time, down to the "
            f"smallest set still necessary there:\n\n{table}"
        )
        if not comps:
            return "\n\n".join([*parts, "Necessity failed at the first share; nothing is added."])
    full = await on_selection(comps, ["deterministic"])
    without = {
        c: await on_selection([k for k in comps if k != c], ["deterministic"]) for c in comps
    }
    order = loo_order(comps, full, without)
    rows, steps = [], []
    for k in sweep_sizes(len(order)):
        dropped = set(order[:k])
        kept = [c for c in comps if c not in dropped]
        sv = await on_selection(kept, ["deterministic", "stochastic"])
        m = margin(sv)
        steps.append((kept, sv))
        rows.append(
            f"| {k} | {len(kept)} | {sv.necessity} | {sv.specificity} | "
            f"{'n/a' if m is None else f'{m:.2f}'} |"
        )
        if sv.necessity == "fails":  # dropping more only removes more of what the behaviour needs
            break
    best = best_step(steps, base.components)
    parts.append(
        f"Each of its {len(comps)} components was left out of the removed set once (deterministic "
        f"regime); {len(order)} gave back more to the other behaviours than to this one. "
        "Dropped in that order, the largest balance first (margin: how far necessity and "
        "specificity both clear their bars at the lower ends of their intervals):\n\n"
        "| dropped | components | necessity | specificity | margin |\n"
        "| --- | --- | --- | --- | --- |\n" + "\n".join(rows)
    )
    if best is None:
        parts.append(
            "No step that drops anything made it both necessary and specific there; nothing is "
            "added."
        )
        return "\n\n".join(parts)
    kept = steps[best][0]
    best_k = len(comps) - len(kept)
    exclude = [p.text for p in (*proto.f.prompts, *select, *controls)]
    final = await proto.ask(
        ValidationResult,
        "validate_claim",
        {
            "components": kept,
            "mechanism": mech,
            "exclude": exclude,
            "n_examples": HELD_OUT,
            "n_controls": CONTROLS,
            "wait_s": 30,
        },
    )
    cand = Candidate(
        f"{rd.the(base.name)} made specific ({len(kept)} of its {len(base.components)} components)",
        kept,
        validation=final,
    )
    proto.f.candidates.append(cand)
    proto.f.best = max(proto.f.candidates, key=lambda c: rd.validation_score(validated(c)))
    parts.append(
        f"Kept the step with the largest margin ({best_k} dropped, {len(kept)} components), then "
        "validated on held-out prompts that exclude the found-on and the selection prompts:\n\n"
        f"{rd.validation_table(final)}\n\nThe strongest is now {rd.the(proto.f.best.name)}."
    )
    return "\n\n".join(parts)


async def by_usage(
    proto: Protocol,
    base: Candidate,
    on_selection: Callable[[list[str], list[str]], Awaitable[ValidationResult]],
) -> tuple[list[str], str]:
    """The base without its components most used by the other behaviours (a growing share at a
    time, ``SHARES``): the smallest set whose necessity still holds on the selection split, or the
    first at which specificity holds too; empty when the first share is not necessary."""
    from spd_mcp.launcher.agents.builtin import SPECIFIC_OTHERS

    here = await proto.frequencies(proto.f.prompts, scope="position")
    there = await proto.frequencies(proto.other_prompts(SPECIFIC_OTHERS), scope="position")
    order = drop_order(base.components, here, there)
    rows, chosen = [], []
    for share in SHARES:
        dropped = set(order[: max(1, round(share * len(order)))])
        kept = [c for c in base.components if c not in dropped]
        sv = await on_selection(kept, ["deterministic", "stochastic"])
        rows.append(f"| {share:.0%} | {len(kept)} | {sv.necessity} | {sv.specificity} |")
        if sv.necessity != "holds":
            break
        chosen = kept
        if sv.specificity == "holds" or len(kept) <= LOO_MAX // 2:
            break
    table = "| dropped | components | necessity | specificity |\n| --- | --- | --- | --- |\n"
    return chosen, table + "\n".join(rows)
