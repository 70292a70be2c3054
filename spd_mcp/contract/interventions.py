"""Intervention tools: ablate (necessity / sufficiency) and steer (scale components and
generate)."""

from typing import Literal

from pydantic import Field

from spd_mcp.contract.spec import ToolContract
from spd_mcp.contract.wire import Input, TokenProb, Wire

AblationRegime = Literal["deterministic", "stochastic", "adversarial"]

ABLATION_REGIMES: tuple[AblationRegime, ...] = ("deterministic", "stochastic", "adversarial")


class AblateInput(Input):
    text: str = Field(max_length=20000)
    components: list[str] = Field(
        default_factory=list, max_length=1000, description="ablated at every position"
    )
    nodes: list[str] = Field(
        default_factory=list, max_length=1000, description="ablated at their position only"
    )
    mode: Literal["remove", "keep_only"] = "remove"
    regime: AblationRegime | Literal["all"] | list[AblationRegime] = Field(
        "deterministic",
        description=(
            "stochastic:"
            " "
            "masks"
            " in"
            " "
            "[CI,"
            " "
            "1],"
            " "
            "mean"
            " of"
            " "
            "n_samples;"
            " "
            "adversarial:"
            " "
            "the"
            " "
            "worst"
            " "
            "case"
            " in"
            " "
            "those"
            " "
            "ranges"
        ),
    )
    position: int = Field(-1, ge=-100000, le=100000)
    token: str | None = Field(
        None, max_length=200, description="report the change in its probability"
    )
    top_k: int = Field(5, ge=1, le=50)
    n_samples: int = Field(8, ge=1, le=64)
    adversarial_steps: int = Field(20, ge=1, le=200)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    edit_id: str | None = Field(None, max_length=64)


class RegimeOutcome(Wire):
    regime: AblationRegime
    after: list[TokenProb] = Field(description="top_k tokens after ablation")
    kl: float = Field(description="KL(before ‖ after) at the position, nats")
    token_prob_after: float | None
    token_prob_change: float | None = Field(description="after - before for 'token'")


class AblateResult(Wire):
    summary: str
    mode: Literal["remove", "keep_only"]
    position: int
    tokens: list[str]
    before: list[TokenProb] = Field(
        description="top_k tokens of the unablated model at the position"
    )
    token: str | None
    token_id: int | None
    token_prob_before: float | None
    regimes: list[RegimeOutcome]


class SteerInput(Input):
    text: str = Field(max_length=20000)
    scales: dict[str, float] = Field(description="component key -> factor on its mask")
    max_new_tokens: int = Field(20, ge=0, le=200)
    n_samples: int = Field(1, ge=1, le=16)
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0: greedy")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    only_where_ci_above: float | None = Field(None, ge=0.0, le=1.0)
    top_k: int = Field(10, ge=1, le=50)
    edit_id: str | None = Field(None, max_length=64)


class Continuation(Wire):
    text: str
    token_ids: list[int]


class LogitChange(Wire):
    token: str
    token_id: int
    logit_change: float = Field(
        description="steered - baseline logit at the prompt's last position"
    )
    baseline_prob: float
    steered_prob: float


class SteerResultWire(Wire):
    summary: str
    baseline: list[Continuation]
    steered: list[Continuation]
    baseline_top: list[TokenProb]
    steered_top: list[TokenProb]
    logit_changes: list[LogitChange] = Field(
        description="tokens with the largest |logit change|, largest first"
    )


TOOLS = (
    ToolContract(
        name="ablate",
        group="interventions",
        title="Ablate components (necessity / sufficiency)",
        description=(
            "Is this set necessary (mode='remove') or sufficient (mode='keep_only')? The "
            "next-token distribution at position before and after, per regime. Example: "
            "ablate(text='Paris is the capital of', components=['1.mlp.down:7'], token=' France',"
            " regime='all')."
        ),
        input_model=AblateInput,
        result_model=AblateResult,
        read_only=True,
        idempotent=True,
    ),
    ToolContract(
        name="steer",
        group="interventions",
        title="Steer generation by scaling components",
        description=(
            "Continuations with and without scaled component masks (0 ablates, 2 doubles), and "
            "the largest logit changes. Example: steer(text='The cat sat on the', "
            "scales={'0.mlp.up:3': 0.0})."
        ),
        input_model=SteerInput,
        result_model=SteerResultWire,
        read_only=True,
        idempotent=True,
    ),
)
