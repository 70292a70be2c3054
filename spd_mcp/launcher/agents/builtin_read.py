"""Helpers of the built-in agent: pick the behaviour a question asks about, read tool results.

Tool results are read defensively: a structured result is a dict whose exact fields may differ
between server versions, so every reader returns None (and the caller says so) rather than raising
when a field it looks for is absent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from spd_mcp.launcher.agents import behaviour_evidence
from spd_mcp.launcher.mcp_link import ToolInfo


class StepFailed(Exception):
    """A step of the built-in protocol that could not be done; the message says why."""


async def pick_behaviour(call: Any, question: str, prompts: list[dict[str, Any]],
                         tools: Sequence[ToolInfo] = ()) -> tuple[str | None, str]:
    """The behaviour a question is about, or None, with the grounds (behaviour_choice.py);
    ``call(tool, args)`` reaches the server, ``tools`` (their descriptions) weigh common words."""
    choice = await behaviour_evidence.pick_behaviour(call, question, prompts, tools)
    return choice.mechanism, choice.grounds


def norm_token(token: str) -> str:
    return token.replace("Ġ", " ").replace("▁", " ").strip().lower()


def top_tokens(run_prompt_result: dict[str, Any]) -> list[tuple[str, float]]:
    """(token, prob) of the last position's top-k in a run_prompt result."""
    preds = run_prompt_result.get("predictions") or []
    if not preds:
        return []
    return [(str(t.get("token", "")), float(t.get("prob", 0.0))) for t in preds[-1].get("top") or []]


def prob_of(top: list[tuple[str, float]], token: str) -> float | None:
    """Probability of `token` in a top-k list (matching display strings loosely), None if absent."""
    want = norm_token(token)
    for tok, p in top:
        if norm_token(tok) == want:
            return p
    return None


def components_from_ci(ci_result: dict[str, Any], limit: int = 8) -> list[str]:
    """The components of a get_ci result, largest CI first, without repeats."""
    entries = sorted(ci_result.get("entries") or [], key=lambda e: -float(e.get("ci", 0.0)))
    out: list[str] = []
    for e in entries:
        comp = e.get("component") or _component_of_node(str(e.get("node", "")))
        if comp and comp not in out:
            out.append(comp)
    return out[:limit]


def _component_of_node(node: str) -> str | None:
    """'<layer>:<pos>:<c>' -> '<layer>:<c>'."""
    parts = node.split(":")
    if len(parts) != 3 or not parts[1].lstrip("-").isdigit():
        return None
    return f"{parts[0]}:{parts[2]}"


def circuit_components(result: dict[str, Any]) -> list[str]:
    """Component keys of an optimize_circuit result (from `components`, or the nodes' keys)."""
    comps = result.get("components")
    if isinstance(comps, list) and comps:
        return list(dict.fromkeys(str(c.get("component") if isinstance(c, dict) else c) for c in comps))
    out: list[str] = []
    for n in result.get("nodes") or []:
        if not isinstance(n, dict) or n.get("layer") in ("embed", "output"):
            continue
        comp = n.get("component") or _component_of_node(str(n.get("key") or n.get("node") or ""))
        if comp and comp not in out:
            out.append(comp)
    return out


def graph_id_of(result: dict[str, Any]) -> int | None:
    gid = result.get("graph_id")
    return int(gid) if isinstance(gid, int | float) and not isinstance(gid, bool) else None


def find_numbers(obj: Any, path: str = "") -> dict[str, float]:
    """Every numeric leaf of a nested result by its dotted path (lists indexed)."""
    out: dict[str, float] = {}
    if isinstance(obj, bool):
        return out
    if isinstance(obj, int | float):
        out[path] = float(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(find_numbers(v, f"{path}.{k}" if path else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:50]):
            out.update(find_numbers(v, f"{path}[{i}]"))
    return out


def _pick(numbers: dict[str, float], *patterns: str) -> float | None:
    for pat in patterns:
        rx = re.compile(pat)
        for path, value in numbers.items():
            if rx.search(path.lower()):
                return value
    return None


def probability_change(result: dict[str, Any]) -> tuple[float | None, float | None, float | None]:
    """(p_before, p_after, KL) of the named token in an ablate result, each None when not found."""
    nums = find_numbers(result)
    before = _pick(nums, r"(token|target)_?prob_?before", r"prob_?before", r"p_?before", r"before\.prob$",
                   r"before_prob")
    after = _pick(nums, r"(token|target)_?prob_?after", r"prob_?after", r"p_?after", r"after\.prob$",
                  r"after_prob")
    kl = _pick(nums, r"(^|\.)kl$", r"kl_?before_?after", r"kl")
    return before, after, kl


def steering_text(result: dict[str, Any]) -> tuple[str | None, str | None]:
    """(baseline, steered) first continuation of a steer result, None when not found."""
    def first_text(v: Any) -> str | None:
        if isinstance(v, str):
            return v
        if isinstance(v, list) and v:
            return first_text(v[0])
        if isinstance(v, dict):
            for key in ("text", "continuation", "completion"):
                if isinstance(v.get(key), str):
                    return v[key]
        return None

    base = next((first_text(result[k]) for k in ("baseline", "baseline_continuations", "baseline_text")
                 if k in result), None)
    steered = next((first_text(result[k]) for k in ("steered", "steered_continuations", "steered_text")
                    if k in result), None)
    return base, steered


def fmt(p: float | None, digits: int = 3) -> str:
    return "n/a" if p is None else f"{p:.{digits}f}"


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with an ellipsis where it was cut."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def span(d: Any) -> str:
    """'0.93 [0.88, 0.97]' from a {mean, low, high} interval; 'n/a' when absent."""
    if not isinstance(d, dict) or d.get("mean") is None:
        return "n/a"
    return f"{float(d['mean']):.2f} [{float(d['low']):.2f}, {float(d['high']):.2f}]"


def _regimes(v: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(r.get("regime")): r for r in v.get("regimes") or [] if isinstance(r, dict)}


def validation_table(v: dict[str, Any]) -> str:
    """A validate_claim result as a markdown table plus its verdicts and notes."""
    rows = [f"| {name} | {span(r.get('necessity'))} | {span(r.get('sufficiency'))} | {span(r.get('specificity'))} |"
            for name, r in _regimes(v).items()]
    verdict = (f"Verdicts on {v.get('n_examples')} held-out examples and {v.get('n_controls')} controls: necessity "
               f"**{v.get('necessity')}**, specificity **{v.get('specificity')}**, sufficiency **{v.get('sufficiency')}** "
               f"(bars: {', '.join(f'{k} {b:g}' for k, b in (v.get('bars') or {}).items())}; validation "
               f"{v.get('validation_id')}).")
    notes = " ".join(v.get("notes") or [])
    return ("| regime | necessity | sufficiency (chance-corrected) | specificity |\n| --- | --- | --- | --- |\n"
            + "\n".join(rows) + "\n\n" + verdict + (f" {notes}" if notes else ""))


def validation_score(v: dict[str, Any]) -> tuple[bool, int, float]:
    """Orders candidates: necessity holds, then how many properties hold, then deterministic necessity."""
    held = sum(v.get(k) == "holds" for k in ("necessity", "specificity", "sufficiency"))
    det = _regimes(v).get("deterministic", {}).get("necessity") or {}
    return v.get("necessity") == "holds", held, float(det.get("mean") or 0.0)


def claimable(v: dict[str, Any]) -> list[str]:
    """What an explanation may claim of a validated set. Specificity and sufficiency say something only
    of a set that matters: without necessity nothing is claimed (a set of idle components is specific)."""
    if v.get("necessity") != "holds":
        return []
    return ["necessary"] + [c for c, p in (("specific", "specificity"), ("sufficient", "sufficiency"))
                            if v.get(p) == "holds"]


def property_evidence(v: dict[str, Any], prop: str) -> str:
    """One property's verdict with its numbers per regime."""
    nums = ", ".join(f"{name} {span(r.get(prop))}" for name, r in _regimes(v).items() if r.get(prop))
    return f"{prop} {v.get(prop)} on {v.get('n_examples')} held-out examples ({nums or 'not measured'})"


def promoted_tokens(info: dict[str, Any]) -> list[str]:
    return [str(t.get("token")) for t in info.get("promotes") or [] if isinstance(t, dict)]


_WORDS = {"necessary": "removing them breaks it on held-out prompts", "specific": "removing them spares the other "
          "behaviours", "sufficient": "they alone still give each held-out prompt its own answer"}


def answer_text(mechanism: str, source: str, comps: list[str], v: dict[str, Any], held: list[str]) -> str:
    """The explanation in words: what held, with the numbers, and what did not."""
    shown = ", ".join(comps[:12]) + (f" and {len(comps) - 12} more" if len(comps) > 12 else "")
    if held:
        said = "; ".join(_WORDS[h] for h in held)
        head = f"For '{mechanism}', the {len(comps)} components of the {source} ({shown}) matter: {said}."
    else:
        head = (f"For '{mechanism}', no property of the {len(comps)} components of the {source} ({shown}) held on "
                "held-out prompts.")
    return f"{head} {property_evidence(v, 'necessity')}; {property_evidence(v, 'specificity')}; " \
           f"{property_evidence(v, 'sufficiency')}."


def limitations(v: dict[str, Any], held: list[str]) -> list[str]:
    out = [f"{p} was not shown ({v.get(k)})" for p, k in (("necessity", "necessity"), ("specificity", "specificity"),
                                                           ("sufficiency", "sufficiency")) if v.get(k) != "holds"]
    out.append("the roles of single components were not tested one by one")
    out += [str(n) for n in v.get("notes") or []]
    return out[:20]


def summary_text(mechanism: str | None, why: str, source: str | None, comps: list[str], v: dict[str, Any],
                 tokens: dict[str, str], held: list[str] | None) -> str:
    """The investigation's answer in a few sentences: behaviour, components, numbers, what was not shown."""
    if mechanism is None:
        return f"Inconclusive: the run has no behaviour that matches the question ({why})."
    if source is None or not v:
        return f"The question is about '{mechanism}' ({why}), but no candidate circuit was validated."
    readout = "; ".join(f"{c} promotes {t}" for c, t in list(tokens.items())[:4])
    text = f"Behaviour: '{mechanism}' ({why}). " + answer_text(mechanism, source, comps, v, held or [])
    if readout:
        text += f" Readouts: {readout}."
    missing = [p for p in ("necessity", "specificity", "sufficiency") if v.get(p) != "holds"]
    if missing:
        text += f" Not shown: {', '.join(missing)}."
    return text
