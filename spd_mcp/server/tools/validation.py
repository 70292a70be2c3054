"""validate_claim: a claimed set of components measured on held-out examples of its behaviour (a job)."""

from typing import Any, Literal

from mcp.server.mcpserver import Context
from pydantic import Field, model_validator

from spd_core.analysis.ablation import AblationRegime
from spd_core.analysis.validation import (
    REGIMES,
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
from spd_mcp.server.inputs import component_keys, require_lm, target_token, text_input
from spd_mcp.server.schemas import Input, JobView, LongInput, Wire
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import ToolSpec
from spd_mcp.server.tools.jobs import run_as_job


class ClaimExample(Input):
    text: str = Field(max_length=20000, description="a prompt showing the behaviour")
    target_token: str = Field(max_length=200, description="the correct next token (exactly one token)")
    foil: str | None = Field(None, max_length=200, description="the wrong answer the behaviour rules out, if any")


class ControlPrompt(Input):
    text: str = Field(max_length=20000, description="a prompt that does not need the behaviour")
    target_token: str | None = Field(None, max_length=200, description="its correct next token; default: the model's own top-1")


class ValidateInput(LongInput):
    components: list[str] = Field(min_length=1, max_length=1000, description="the claimed set, '<layer>:<c>' keys")
    mechanism: str | None = Field(None, max_length=200, description="a probe mechanism of the run (list_probe_prompts): "
                                  "held-out examples are drawn from its probes, controls from the other mechanisms'")
    examples: list[ClaimExample] = Field(default_factory=list, max_length=200,
                                         description="your own examples of the behaviour, instead of 'mechanism'")
    controls: list[ControlPrompt] = Field(default_factory=list, max_length=200,
                                          description="prompts of other behaviours (for specificity); default with "
                                          "'mechanism': the other mechanisms' probes")
    exclude: list[str] = Field(default_factory=list, max_length=200,
                               description="the prompts the claim was found on: never used for validation")
    n_examples: int = Field(40, ge=1, le=200, description="held-out examples drawn from the mechanism's probes")
    n_controls: int = Field(40, ge=0, le=200, description="control examples drawn from the other mechanisms")
    regimes: list[AblationRegime] = Field(default_factory=lambda: list(REGIMES), min_length=1, max_length=3,
                                          description="regimes to measure in (necessity, sufficiency and "
                                          "specificity are judged in deterministic and stochastic)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the example sample, masks and bootstrap")

    @model_validator(mode="after")
    def _one_behaviour(self) -> "ValidateInput":
        if (self.mechanism is None) == (not self.examples):
            raise ValueError("give exactly one of 'mechanism' (a probe mechanism of the run) or 'examples'")
        return self


class Span(Wire):
    mean: float
    low: float = Field(description="lower end of the 95% bootstrap interval")
    high: float
    n: int


class RegimeView(Wire):
    regime: AblationRegime
    necessity: Span | None = Field(description="mean relative drop of p(target) with the set removed (1: destroyed)")
    broken: float = Field(description="share of examples no longer answered correctly with the set removed")
    sufficiency: Span | None = Field(description="chance-corrected accuracy with only the set kept (1: every "
                                     "answer right, 0: no better than always giving the commonest answer)")
    accuracy_kept: Span | None
    leak: float | None = Field(description="share of control prompts where the kept set gives one of the "
                               "behaviour's answers and the model does not")
    distinct_answers_kept: int
    specificity: Span | None = Field(description="1 - mean clamped relative drop on the controls (1: unharmed)")


class ExampleRow(Wire):
    text: str
    target: str
    p_before: float
    p_removed: float = Field(description="deterministic regime")
    p_kept: float = Field(description="deterministic regime (the set alone)")
    answer_kept: str = Field(description="the kept set's top-1 answer ('' when tied)")


Status = Literal["holds", "fails", "inconclusive"]


class ValidationResult(Wire):
    summary: str
    validation_id: int = Field(description="cite it in save_explanation(validation_ids=[...])")
    components: list[str]
    behaviour: str
    necessity: Status
    sufficiency: Status
    specificity: Status
    sufficient_alone: Status | None = Field(description="the deterministic regime: the set with everything else off")
    robust_to_adversary: Status | None = Field(description="sufficiency when the rest is chosen to break it")
    bars: dict[str, float] = Field(description="a property holds when its interval's lower end is at least this")
    n_examples: int
    n_dropped: int = Field(description="examples the model itself answers wrongly (not used)")
    n_controls: int
    baseline: float = Field(description="share of the commonest correct answer among the examples")
    regimes: list[RegimeView]
    examples: list[ExampleRow]
    notes: list[str]


def text_probe(state: AppState, text: str, target: str | None, foil: str | None, tag: str) -> Probe:
    ids = text_input(state, text).token_ids
    tid = -1 if target is None else target_token(state, target)
    return Probe(ids, tid, tag, None if foil is None else target_token(state, foil))


def run_probes(state: AppState) -> list[Probe]:
    return [text_probe(state, p.text, p.target_token, p.foil, p.mechanism) for p in state.run.probes]


def _span(i: Interval | None) -> Span | None:
    """None for an interval over no example (every example was dropped)."""
    return None if i is None or i.n == 0 else Span(mean=i.mean, low=i.low, high=i.high, n=i.n)


def _regime_view(n: RegimeNumbers) -> RegimeView:
    return RegimeView(
        regime=n.regime, necessity=_span(n.necessity), broken=n.broken,
        sufficiency=_span(n.sufficiency), accuracy_kept=_span(n.accuracy_kept),
        leak=n.leak, distinct_answers_kept=n.distinct_answers_kept, specificity=_span(n.specificity),
    )


def _summary(v: Validation, comps: list[str], behaviour: str) -> str:
    def num(regime: str, what: str) -> str:
        n = v.regimes.get(regime)  # type: ignore[call-overload]
        i = None if n is None else getattr(n, what)
        return "n/a" if i is None or i.n == 0 else f"{i.mean:.2f} [{i.low:.2f}, {i.high:.2f}]"

    return (
        f"{len(comps)} components on {v.n_examples} held-out examples of {behaviour} ({v.n_others} controls): "
        f"necessity {v.necessity} (deterministic {num('deterministic', 'necessity')}, stochastic "
        f"{num('stochastic', 'necessity')}), sufficiency {v.sufficiency} (alone {num('deterministic', 'sufficiency')}, "
        f"stochastic {num('stochastic', 'sufficiency')}, adversarial {num('adversarial', 'sufficiency')}), "
        f"specificity {v.specificity} (deterministic {num('deterministic', 'specificity')}). "
        + " ".join(v.notes)
    ).strip()


async def stored_validation(
    state: AppState, v: Validation, examples: list[Probe], comps: list[ComponentKey], behaviour: str,
    params: dict[str, Any],
) -> ValidationResult:
    """The wire result of a validation of ``comps`` on ``examples``, stored; with its validation_id."""
    keys = [str(k) for k in comps]
    det = v.regimes.get("deterministic")
    rows = [] if det is None else [
        ExampleRow(text=state.tok.raw.decode(p.token_ids), target=state.tok.display(p.target), p_before=r.p_before,
                   p_removed=r.p_after, p_kept=k.p_after,
                   answer_kept="" if k.answer_after < 0 else state.tok.display(k.answer_after))
        for p, r, k in zip([examples[i] for i in v.used], det.removed, det.kept, strict=True)
    ]
    result = ValidationResult(
        summary=_summary(v, keys, behaviour), validation_id=0, components=keys, behaviour=behaviour,
        necessity=v.necessity, sufficiency=v.sufficiency, specificity=v.specificity,
        sufficient_alone=v.sufficient_alone, robust_to_adversary=v.sufficient_adversarial, bars=v.bars,
        n_examples=v.n_examples, n_dropped=v.n_dropped, n_controls=v.n_others, baseline=v.baseline,
        regimes=[_regime_view(n) for n in v.regimes.values()], examples=rows, notes=v.notes,
    )
    vid = await state.store.add_validation(params, {})
    final = result.model_copy(update={"validation_id": vid, "summary": f"Validation {vid}: {result.summary}"})
    await state.store.set_validation(vid, final.model_dump(mode="json"))  # the stored copy carries its own id
    return final


async def validate_claim(state: AppState, inp: ValidateInput, ctx: Context) -> JobView:
    require_lm(state, "validate_claim")
    comps = component_keys(state, inp.components)
    exclude = [text_input(state, t).token_ids for t in inp.exclude]
    if inp.mechanism is not None:
        examples, others = held_out(run_probes(state), inp.mechanism, exclude, inp.n_examples, inp.n_controls, inp.seed)
        behaviour = f"mechanism {inp.mechanism!r}"
    else:
        skip = {tuple(e) for e in exclude}
        examples = [p for e in inp.examples if tuple((p := text_probe(state, e.text, e.target_token, e.foil, "claim")).token_ids)
                    not in skip]
        others = []
        behaviour = f"your {len(examples)} examples"
    if inp.controls:
        others = [text_probe(state, c.text, c.target_token, None, "control") for c in inp.controls]
    if not examples:
        raise ValueError("no example is left once the excluded prompts are removed: give held-out examples")
    config = ValidationConfig(regimes=tuple(dict.fromkeys(inp.regimes)), measure=MeasureSettings(seed=inp.seed))

    def work(progress) -> Validation:
        controls = with_model_answers(state.run.model, others)
        return validate(state.run.model, examples, controls, comps, config=config,
                        progress=lambda i, n: progress(i, n, f"measurement {i}/{n}"))

    async def finish(v: Validation) -> ValidationResult:
        return await stored_validation(state, v, examples, comps, behaviour, inp.model_dump(mode="json"))

    return await run_as_job(state, ctx, "validate_claim", work, finish, inp.wait_s, inp.model_dump(mode="json"))


TOOLS = [
    ToolSpec(
        name="validate_claim",
        title="Validate a claimed circuit on held-out examples",
        description=(
            "Does this claim hold beyond the prompts it was found on? Measures the set's necessity, "
            "sufficiency and specificity on held-out examples of a behaviour (a probe 'mechanism' or "
            "your own 'examples'), per regime, with 95% intervals and a verdict per property; returns "
            "a validation_id to cite in save_explanation. A job: 10-30 s. Example: validate_claim("
            "components=['1.mlp.up:3'], mechanism='induction', exclude=['code bim tal ... code bim'])."
        ),
        input_model=ValidateInput, result_model=JobView, handler=validate_claim, read_only=False,
    ),
]
