"""validate_claim: a claimed set of components measured on held-out examples of its behaviour (a
job)."""

from typing import Any

from mcp.server.mcpserver import Context

from spd_core.analysis.validation import (
    Interval,
    MeasureSettings,
    Probe,
    RegimeNumbers,
    Validation,
    ValidationConfig,
    held_out,
    validate,
    with_model_answers,
)
from spd_core.keys import ComponentKey
from spd_mcp.contract import validation as contract
from spd_mcp.contract.validation import (
    ExampleRow,
    RegimeView,
    Span,
    ValidateInput,
    ValidationResult,
)
from spd_mcp.contract.wire import JobView
from spd_mcp.server.inputs import component_keys, require_lm, target_token, text_input
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import bind
from spd_mcp.server.tools.jobs import run_as_job


def text_probe(state: AppState, text: str, target: str | None, foil: str | None, tag: str) -> Probe:
    ids = text_input(state, text).token_ids
    tid = -1 if target is None else target_token(state, target)
    return Probe(ids, tid, tag, None if foil is None else target_token(state, foil))


def run_probes(state: AppState) -> list[Probe]:
    return [
        text_probe(state, p.text, p.target_token, p.foil, p.mechanism) for p in state.run.probes
    ]


def _span(i: Interval | None) -> Span | None:
    """None for an interval over no example (every example was dropped)."""
    return None if i is None or i.n == 0 else Span(mean=i.mean, low=i.low, high=i.high, n=i.n)


def _regime_view(n: RegimeNumbers) -> RegimeView:
    return RegimeView(
        regime=n.regime, necessity=_span(n.necessity), broken=n.broken,
        sufficiency=_span(n.sufficiency), accuracy_kept=_span(n.accuracy_kept),
        leak=n.leak, distinct_answers_kept=n.distinct_answers_kept,
        specificity=_span(n.specificity), specificity_by_behaviour=n.specificity_by,
    )


def _summary(v: Validation, comps: list[str], behaviour: str) -> str:
    def num(regime: str, what: str) -> str:
        n = v.regimes.get(regime)  # type: ignore[call-overload]
        i = None if n is None else getattr(n, what)
        return "n/a" if i is None or i.n == 0 else f"{i.mean:.2f} [{i.low:.2f}, {i.high:.2f}]"

    return (
        f"{len(comps)} components on {v.n_examples} held-out examples of {behaviour} "
        f"({v.n_others} controls): "
        f"necessity {v.necessity} (deterministic {num('deterministic', 'necessity')}, stochastic "
        f"{num('stochastic', 'necessity')}), sufficiency {v.sufficiency} "
        f"(alone {num('deterministic', 'sufficiency')}, "
        f"stochastic {num('stochastic', 'sufficiency')}, "
        f"adversarial {num('adversarial', 'sufficiency')}), "
        f"specificity {v.specificity} (deterministic {num('deterministic', 'specificity')}). "
        + " ".join(v.notes)
    ).strip()


async def stored_validation(
    state: AppState, v: Validation, examples: list[Probe], comps: list[ComponentKey],
    behaviour: str, params: dict[str, Any],
) -> ValidationResult:
    """The wire result of a validation of ``comps`` on ``examples``, stored; with its
    validation_id."""
    keys = [str(k) for k in comps]
    det = v.regimes.get("deterministic")
    rows = [] if det is None else [
        ExampleRow(text=state.tok.raw.decode(p.token_ids), target=state.tok.display(p.target),
                   p_before=r.p_before, p_removed=r.p_after, p_kept=k.p_after,
                   answer_kept="" if k.answer_after < 0 else state.tok.display(k.answer_after))
        for p, r, k in zip([examples[i] for i in v.used], det.removed, det.kept, strict=True)
    ]
    result = ValidationResult(
        summary=_summary(v, keys, behaviour), validation_id=0, components=keys, behaviour=behaviour,
        necessity=v.necessity, sufficiency=v.sufficiency, specificity=v.specificity,
        sufficient_alone=v.sufficient_alone, robust_to_adversary=v.sufficient_adversarial,
        bars=v.bars,
        n_examples=v.n_examples, n_dropped=v.n_dropped, n_controls=v.n_others, baseline=v.baseline,
        regimes=[_regime_view(n) for n in v.regimes.values()], examples=rows, notes=v.notes,
    )
    vid = await state.store.add_validation(params, {})
    final = result.model_copy(
        update={"validation_id": vid, "summary": f"Validation {vid}: {result.summary}"}
    )
    # the stored copy carries its own id
    await state.store.set_validation(vid, final.model_dump(mode="json"))
    return final


def _claim_examples(state: AppState, inp: ValidateInput, exclude: list[list[int]]) -> list[Probe]:
    """The agent's own examples as probes, less those whose tokens are in ``exclude``."""
    skip = {tuple(e) for e in exclude}
    return [
        p for e in inp.examples
        if tuple((p := text_probe(state, e.text, e.target_token, e.foil, "claim")).token_ids)
        not in skip
    ]


async def validate_claim(state: AppState, inp: ValidateInput, ctx: Context) -> JobView:
    require_lm(state, "validate_claim")
    comps = component_keys(state, inp.components)
    exclude = [text_input(state, t).token_ids for t in inp.exclude]
    if inp.mechanism is not None:
        examples, others = held_out(run_probes(state), inp.mechanism, exclude, inp.n_examples,
                                    inp.n_controls, inp.seed)
        behaviour = f"mechanism {inp.mechanism!r}"
    else:
        examples = _claim_examples(state, inp, exclude)
        others = []
        behaviour = f"your {len(examples)} examples"
    if inp.controls:
        others = [text_probe(state, c.text, c.target_token, None, "control") for c in inp.controls]
    if not examples:
        raise ValueError(
            "no example is left once the excluded prompts are removed: give held-out examples"
        )
    config = ValidationConfig(regimes=tuple(dict.fromkeys(inp.regimes)),
                              measure=MeasureSettings(seed=inp.seed))

    def work(progress) -> Validation:
        controls = with_model_answers(state.run.model, others)
        return validate(state.run.model, examples, controls, comps, config=config,
                        progress=lambda i, n: progress(i, n, f"measurement {i}/{n}"),
                        passes=state.target_passes)

    async def finish(v: Validation) -> ValidationResult:
        return await stored_validation(state, v, examples, comps, behaviour,
                                       inp.model_dump(mode="json"))

    return await run_as_job(state, ctx, "validate_claim", work, finish, inp.wait_s,
                            inp.model_dump(mode="json"))


TOOLS = bind(
    contract.TOOLS, validate_claim=validate_claim,
)
