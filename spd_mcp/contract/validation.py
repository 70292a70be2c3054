"""validate_claim: a claimed set of components measured on held-out examples of its behaviour
(a job)."""

from typing import Literal

from pydantic import Field, model_validator

from spd_mcp.contract.interventions import ABLATION_REGIMES, AblationRegime
from spd_mcp.contract.spec import ToolContract
from spd_mcp.contract.wire import Input, JobView, LongInput, Wire


class ClaimExample(Input):
    text: str = Field(max_length=20000)
    target_token: str = Field(max_length=200)
    foil: str | None = Field(None, max_length=200)


class ControlPrompt(Input):
    text: str = Field(max_length=20000)
    target_token: str | None = Field(None, max_length=200)


class ValidateInput(LongInput):
    components: list[str] = Field(min_length=1, max_length=1000)
    mechanism: str | None = Field(
        None,
        max_length=200,
        description="a probe mechanism: examples from its probes, controls from others'",
    )
    examples: list[ClaimExample] = Field(
        default_factory=list, max_length=200, description="instead of mechanism"
    )
    controls: list[ControlPrompt] = Field(
        default_factory=list, max_length=200, description="other behaviours, for specificity"
    )
    exclude: list[str] = Field(
        default_factory=list,
        max_length=200,
        description="prompts the claim was found on: never used",
    )
    n_examples: int = Field(40, ge=1, le=200)
    n_controls: int = Field(40, ge=0, le=200)
    regimes: list[AblationRegime] = Field(
        default_factory=lambda: list(ABLATION_REGIMES), min_length=1, max_length=3
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _one_behaviour(self) -> "ValidateInput":
        if (self.mechanism is None) == (not self.examples):
            raise ValueError(
                "give exactly one of 'mechanism' (a probe mechanism of the run) or 'examples'"
            )
        return self


class Span(Wire):
    mean: float
    low: float = Field(description="lower end of the 95% bootstrap interval")
    high: float
    n: int


class RegimeView(Wire):
    regime: AblationRegime
    necessity: Span | None = Field(
        description="mean relative drop of p(target) with the set removed (1: destroyed)"
    )
    broken: float = Field(
        description="share of examples no longer answered correctly with the set removed"
    )
    sufficiency: Span | None = Field(
        description="chance-corrected accuracy with only the set kept (1: every "
        "answer right, 0: no better than always giving the commonest answer)"
    )
    accuracy_kept: Span | None
    leak: float | None = Field(
        description="share of control prompts where the kept set gives one of the "
        "behaviour's answers and the model does not"
    )
    distinct_answers_kept: int
    specificity: Span | None = Field(
        description="1 - mean clamped relative drop on the controls (1: unharmed)"
    )
    specificity_by_behaviour: dict[str, float] = Field(
        default_factory=dict,
        description="the same mean per behaviour of the controls (the probe mechanism; "
        "'control' for your own controls): which behaviours the removal harms",
    )


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
    sufficient_alone: Status | None = Field(
        description="the deterministic regime: the set with everything else off"
    )
    robust_to_adversary: Status | None = Field(
        description="sufficiency when the rest is chosen to break it"
    )
    bars: dict[str, float] = Field(
        description="a property holds when its interval's lower end is at least this"
    )
    n_examples: int
    n_dropped: int = Field(description="examples the model itself answers wrongly (not used)")
    n_controls: int
    baseline: float = Field(description="share of the commonest correct answer among the examples")
    regimes: list[RegimeView]
    examples: list[ExampleRow]
    notes: list[str]


TOOLS = (
    ToolContract(
        name="validate_claim",
        group="validation",
        job_results=(ValidationResult,),
        title="Validate a claimed circuit on held-out examples",
        description=(
            "A job (10-30 s): the set's necessity, sufficiency and specificity on held-out "
            "examples of a behaviour, per regime, with 95% intervals and verdicts; cite its "
            "validation_id in save_explanation. Example: "
            "validate_claim(components=['1.mlp.up:3'], mechanism='induction')."
        ),
        input_model=ValidateInput,
        result_model=JobView,
        read_only=False,
    ),
)
