"""The built-in protocol's pruning step: a necessary but unspecific circuit, made specific on
prompts set aside for choosing, then validated on prompts neither step has seen.

When the strongest validated candidate is necessary and not specific (it includes machinery the
other behaviours need), its components are dropped in order of how much more often the other
behaviours use them at the prediction than this one does (CI > 0.1 there), a growing share at a time
(``SHARES``). Each pruned set is measured with ``validate_claim`` on a selection split: ``N_SELECT``
prompts of the behaviour and ``N_SELECT_CONTROLS`` of the others, which no candidate was found on.
The first share at which necessity and specificity both hold there is kept, and then validated like
every candidate on held-out prompts that exclude the found-on and the selection prompts, so the
numbers it is judged by were not used to choose it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spd_mcp.contract.model import ProbeRow
from spd_mcp.contract.validation import ValidationResult
from spd_mcp.launcher.agents import builtin_read as rd

if TYPE_CHECKING:
    from spd_mcp.launcher.agents.builtin import Protocol

SHARES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
N_SELECT = 32
N_SELECT_CONTROLS = 36


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


def the(name: str) -> str:
    return name if name.startswith("the ") else f"the {name}"


def drop_order(components: list[str], here: dict[str, float], there: dict[str, float]) -> list[str]:
    """Most used elsewhere and least here first (ties keep the circuit's own order)."""
    return sorted(components, key=lambda c: here.get(c, 0.0) - there.get(c, 0.0))


async def prune(proto: Protocol) -> str:
    from spd_mcp.launcher.agents.builtin import (
        CONTROLS,
        HELD_OUT,
        SPECIFIC_OTHERS,
        Candidate,
        validated,
    )

    best = proto.best()
    v = validated(best)
    if v.necessity != "holds" or v.specificity == "holds":
        return (
            f"Not needed: {the(best.name)} is "
            f"{'already specific' if v.specificity == 'holds' else 'not necessary'} on held-out "
            "prompts."
        )
    mech = proto.f.mechanism or ""
    select, controls = selection_split(proto.probes, mech, proto.f.prompts)
    here = await proto.frequencies(proto.f.prompts, scope="position")
    there = await proto.frequencies(
        proto.other_prompts(SPECIFIC_OTHERS), scope="position"
    )  # measured once
    order = drop_order(best.components, here, there)
    rows, chosen = [], None
    for share in SHARES:
        dropped = set(order[: max(1, round(share * len(order)))])
        kept = [c for c in best.components if c not in dropped]
        sv = await proto.ask(
            ValidationResult,
            "validate_claim",
            {
                "components": kept,
                "examples": proto.examples(select),
                "controls": [{"text": p.text, "target_token": p.target_token} for p in controls],
                "regimes": ["deterministic", "stochastic"],
                "wait_s": 30,
            },
        )
        rows.append(f"| {share:.0%} | {len(kept)} | {sv.necessity} | {sv.specificity} |")
        if sv.necessity == "holds" and sv.specificity == "holds":
            chosen = (share, kept)
            break
        if sv.necessity == "fails":  # dropping more only removes more of what the behaviour needs
            break
    table = (
        "| dropped | components | necessity | specificity |\n| --- | --- | --- | --- |\n"
        + "\n".join(rows)
    )
    head = (
        f"{the(best.name).capitalize()} is necessary but not specific. Its components, most used "
        "by the other behaviours at the prediction first, dropped a share at a time and measured "
        f"on a selection split ({len(select)} prompts of the behaviour, {len(controls)} of the "
        f"others, none of them found-on or held-out):\n\n{table}"
    )
    if chosen is None:
        return head + "\n\nNo share made it both necessary and specific there; nothing is added."
    share, kept = chosen
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
        f"{the(best.name)} without its {share:.0%} most used by the other behaviours",
        kept,
        validation=final,
    )
    proto.f.candidates.append(cand)
    proto.f.best = max(proto.f.candidates, key=lambda c: rd.validation_score(validated(c)))
    return (
        head
        + f"\n\nKept at {share:.0%} dropped ({len(kept)} components), then validated on held-out "
        "prompts that exclude the found-on and the selection "
        f"prompts:\n\n{rd.validation_table(final)}\n\nThe strongest is now "
        f"{the(proto.f.best.name)}."
    )
