"""Helpers of the built-in agent: pick the behaviour a question asks about, read tool results.

Tool results arrive parsed into the contract's result models (``spd_mcp.contract``): a result
that does not fit its model fails the step that asked for it, with pydantic's message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spd_mcp.contract.circuits import CircuitResult, SharedCircuitResult
from spd_mcp.contract.components import CIResult
from spd_mcp.contract.data import ComponentInfo
from spd_mcp.contract.interventions import SteerResultWire
from spd_mcp.contract.model import RunPromptResult
from spd_mcp.contract.validation import RegimeView, Span, ValidationResult
from spd_mcp.launcher.agents import behaviour_evidence
from spd_mcp.launcher.mcp_link import ToolInfo


class StepFailed(Exception):
    """A step of the built-in protocol that could not be done; the message says why."""


async def pick_behaviour(
    call: Any, question: str, prompts: list[dict[str, Any]], tools: Sequence[ToolInfo] = ()
) -> tuple[str | None, str]:
    """The behaviour a question is about, or None, with the grounds (behaviour_choice.py);
    ``call(tool, args)`` reaches the server, ``tools`` (their descriptions) weigh common words."""
    choice = await behaviour_evidence.pick_behaviour(call, question, prompts, tools)
    return choice.mechanism, choice.grounds


def norm_token(token: str) -> str:
    return token.replace("Ġ", " ").replace("▁", " ").strip().lower()


def top_tokens(res: RunPromptResult) -> list[tuple[str, float]]:
    """(token, prob) of the last position's top-k in a run_prompt result."""
    return [(t.token, t.prob) for t in res.predictions[-1].top] if res.predictions else []


def prob_of(top: list[tuple[str, float]], token: str) -> float | None:
    """Probability of `token` in a top-k list (matching display strings loosely), None if absent."""
    want = norm_token(token)
    for tok, p in top:
        if norm_token(tok) == want:
            return p
    return None


def components_from_ci(ci: CIResult, limit: int = 8) -> list[str]:
    """The components of a get_ci result, largest CI first, without repeats."""
    entries = sorted(ci.entries, key=lambda e: -e.ci)
    return list(dict.fromkeys(e.component for e in entries))[:limit]


def component_of_node(node: str) -> str:
    """'<layer>:<pos>:<c>' -> '<layer>:<c>' (layer names hold no ':')."""
    layer, _pos, c = node.rsplit(":", 2)
    return f"{layer}:{c}"


def circuit_components(res: CircuitResult | SharedCircuitResult) -> list[str]:
    """Component keys of an optimize_circuit result: a shared circuit's components, or the
    components of a one-prompt circuit's nodes."""
    if isinstance(res, SharedCircuitResult):
        return [c.component for c in res.components]
    return list(dict.fromkeys(component_of_node(n.node) for n in res.nodes))


def steering_text(res: SteerResultWire) -> tuple[str | None, str | None]:
    """(baseline, steered) first continuation of a steer result, None when there is none."""
    return (
        res.baseline[0].text if res.baseline else None,
        res.steered[0].text if res.steered else None,
    )


def fmt(p: float | None, digits: int = 3) -> str:
    return "n/a" if p is None else f"{p:.{digits}f}"


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis where it was cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def span(s: Span | None) -> str:
    """'0.93 [0.88, 0.97]' from an interval; 'n/a' when there is none."""
    return "n/a" if s is None else f"{s.mean:.2f} [{s.low:.2f}, {s.high:.2f}]"


def _regimes(v: ValidationResult) -> dict[str, RegimeView]:
    return {r.regime: r for r in v.regimes}


def verdict(v: ValidationResult, prop: str) -> str:
    """The verdict on one of necessity, specificity, sufficiency."""
    return {"necessity": v.necessity, "specificity": v.specificity, "sufficiency": v.sufficiency}[
        prop
    ]


def measured(r: RegimeView, prop: str) -> Span | None:
    return {"necessity": r.necessity, "specificity": r.specificity, "sufficiency": r.sufficiency}[
        prop
    ]


PROPERTIES = ("necessity", "specificity", "sufficiency")


def validation_table(v: ValidationResult) -> str:
    """A validate_claim result as a markdown table plus its verdicts and notes."""
    rows = [
        f"| {name} | {span(r.necessity)} | {span(r.sufficiency)} | {span(r.specificity)} |"
        for name, r in _regimes(v).items()
    ]
    verdicts = (
        f"Verdicts on {v.n_examples} held-out examples and {v.n_controls} controls: necessity "
        f"**{v.necessity}**, specificity **{v.specificity}**, sufficiency **{v.sufficiency}** "
        f"(bars: {', '.join(f'{k} {b:g}' for k, b in v.bars.items())}; validation "
        f"{v.validation_id})."
    )
    notes = " ".join(v.notes)
    return (
        "| regime | necessity | sufficiency (chance-corrected) | specificity |\n"
        "| --- | --- | --- | --- |\n"
        + "\n".join(rows)
        + "\n\n"
        + verdicts
        + (f" {notes}" if notes else "")
    )


def regime_mean(v: ValidationResult, regime: str, prop: str) -> float | None:
    """The mean of ``prop`` in one regime; None when that regime or its number is missing."""
    r = _regimes(v).get(regime)
    s = None if r is None else measured(r, prop)
    return None if s is None else s.mean


def lowest(v: ValidationResult, prop: str) -> float | None:
    """The lowest interval end of ``prop`` over the deterministic and stochastic regimes (the two a
    verdict needs); None when either is missing."""
    regimes = _regimes(v)
    views = [regimes[r] for r in ("deterministic", "stochastic") if r in regimes]
    lows = [s.low for r in views if (s := measured(r, prop)) is not None]
    return min(lows) if len(lows) == 2 else None


def validation_score(v: ValidationResult) -> tuple[bool, int, float, float]:
    """Orders candidates: necessity holds, then how many properties hold, then the lowest end of the
    specificity interval (the nearer to holding, the better), then deterministic necessity."""
    held = sum(verdict(v, p) == "holds" for p in PROPERTIES)
    spec = lowest(v, "specificity")
    nec = regime_mean(v, "deterministic", "necessity")
    return (
        v.necessity == "holds",
        held,
        spec if spec is not None else -1.0,
        nec if nec is not None else 0.0,
    )


def claimable(v: ValidationResult) -> list[str]:
    """What an explanation may claim of a validated set. Specificity and sufficiency say something
    only of a set that matters: without necessity nothing is claimed (a set of idle components is
    specific)."""
    if v.necessity != "holds":
        return []
    return ["necessary"] + [
        c
        for c, p in (("specific", "specificity"), ("sufficient", "sufficiency"))
        if verdict(v, p) == "holds"
    ]


def property_evidence(v: ValidationResult, prop: str) -> str:
    """One property's verdict with its numbers per regime; a specificity that does not hold also
    names how much of each other behaviour survives the removal (deterministic), worst first."""
    nums = ", ".join(
        f"{name} {span(s)}" for name, r in _regimes(v).items() if (s := measured(r, prop))
    )
    nums = nums or "not measured"
    line = f"{prop} {verdict(v, prop)} on {v.n_examples} held-out examples ({nums})"
    det = _regimes(v).get("deterministic")
    by = {} if det is None else det.specificity_by_behaviour
    if prop == "specificity" and verdict(v, prop) != "holds" and len(by) > 1:
        worst = sorted(by.items(), key=lambda t: t[1])
        line += "; deterministic, by behaviour: " + ", ".join(f"{t} {m:.2f}" for t, m in worst)
    return line


def promoted_tokens(info: ComponentInfo) -> list[str]:
    return [t.token for t in info.promotes]


_WORDS = {
    "necessary": "removing them breaks it on held-out prompts",
    "specific": "removing them spares the other behaviours",
    "sufficient": "they alone still give each held-out prompt its own answer",
}


def the(name: str) -> str:
    """A candidate's name with one leading "the" (names may or may not start with one)."""
    return name if name.startswith("the ") else f"the {name}"


def answer_text(
    mechanism: str, source: str, comps: list[str], v: ValidationResult, held: list[str]
) -> str:
    """The explanation in words: what held, with the numbers, and what did not."""
    shown = ", ".join(comps[:12]) + (f" and {len(comps) - 12} more" if len(comps) > 12 else "")
    if held:
        said = "; ".join(_WORDS[h] for h in held)
        head = (
            f"For '{mechanism}', the {len(comps)} components of {the(source)} ({shown}) matter: "
            f"{said}."
        )
    else:
        head = (
            f"For '{mechanism}', no property of the {len(comps)} components of {the(source)} "
            f"({shown}) held on held-out prompts."
        )
    return (
        f"{head} {property_evidence(v, 'necessity')}; {property_evidence(v, 'specificity')}; "
        f"{property_evidence(v, 'sufficiency')}."
    )


def limitations(v: ValidationResult, held: list[str]) -> list[str]:
    out = [f"{p} was not shown ({verdict(v, p)})" for p in PROPERTIES if verdict(v, p) != "holds"]
    out.append("the roles of single components were not tested one by one")
    out += v.notes
    return out[:20]


def summary_text(
    mechanism: str | None,
    why: str,
    source: str | None,
    comps: list[str],
    v: ValidationResult | None,
    tokens: dict[str, str],
    held: list[str] | None,
) -> str:
    """The investigation's answer in a few sentences: behaviour, components, numbers, what was not
    shown."""
    if mechanism is None:
        return f"Inconclusive: the run has no behaviour that matches the question ({why})."
    if source is None or v is None:
        return (
            f"The question is about '{mechanism}' ({why}), but no candidate circuit was validated."
        )
    readout = "; ".join(f"{c} promotes {t}" for c, t in list(tokens.items())[:4])
    text = f"Behaviour: '{mechanism}' ({why}). " + answer_text(
        mechanism, source, comps, v, held or []
    )
    if readout:
        text += f" Readouts: {readout}."
    missing = [p for p in PROPERTIES if verdict(v, p) != "holds"]
    if missing:
        text += f" Not shown: {', '.join(missing)}."
    return text
