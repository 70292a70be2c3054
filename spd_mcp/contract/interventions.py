"""Intervention tools: ablate (necessity / sufficiency) and steer (scale components and
generate)."""

from typing import Literal

from pydantic import Field

from spd_mcp.contract.components import COMPONENT_DESC, EDIT_DESC
from spd_mcp.contract.spec import ToolContract
from spd_mcp.contract.wire import Input, TokenProb, Wire

AblationRegime = Literal["deterministic", "stochastic", "adversarial"]

ABLATION_REGIMES: tuple[AblationRegime, ...] = ("deterministic", "stochastic", "adversarial")


class AblateInput(Input):
    text: str = Field(
        max_length=20000, description="the prompt", examples=["Paris is the capital of"]
    )
    components: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description=COMPONENT_DESC + "; ablated at every position",
    )
    nodes: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="node keys '<layer>:<pos>:<c>'; ablated only at their position",
    )
    mode: Literal["remove", "keep_only"] = Field(
        "remove",
        description="'remove': ablate the set (is it necessary?); 'keep_only': keep only the set "
        "(is it sufficient?)",
    )
    regime: AblationRegime | Literal["all"] | list[AblationRegime] = Field(
        "deterministic",
        description="'deterministic' (remove: everything else on; keep_only: the set alone, "
        "everything else off), "
        "'stochastic' (remove: others in [CI, 1]; keep_only: the set in [CI, 1], everything else "
        "anywhere in [0, 1]; "
        "mean of n_samples), 'adversarial' (the same ranges, chosen to be the worst case for the "
        "claim), a list, or 'all'",
    )
    position: int = Field(
        -1,
        ge=-100000,
        le=100000,
        description="position whose next-token distribution is compared (default: the last)",
    )
    token: str | None = Field(
        None,
        max_length=200,
        description="a token (exactly one) whose probability change is reported",
    )
    top_k: int = Field(5, ge=1, le=50, description="how many most likely tokens before and after")
    n_samples: int = Field(8, ge=1, le=64, description="samples for the stochastic regime")
    adversarial_steps: int = Field(
        20, ge=1, le=200, description="signed-gradient steps for the adversarial regime"
    )
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="random seed (stochastic and adversarial regimes)"
    )
    edit_id: str | None = Field(None, max_length=64, description=EDIT_DESC)


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
    text: str = Field(
        max_length=20000, description="the prompt to continue", examples=["The cat sat on the"]
    )
    scales: dict[str, float] = Field(
        description="component key -> factor on its mask (0 ablates, 1 leaves it, 2 doubles it), "
        "e.g. {'0.mlp.up:3': 0.0}"
    )
    max_new_tokens: int = Field(20, ge=0, le=200, description="tokens to generate")
    n_samples: int = Field(
        1, ge=1, le=16, description="continuations per side (used when temperature > 0)"
    )
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0: greedy; > 0: sampled")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="random seed for sampling")
    only_where_ci_above: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="scale a component only at positions where its CI exceeds this; default "
        "everywhere",
    )
    top_k: int = Field(
        10, ge=1, le=50, description="how many tokens in the top lists and logit changes"
    )
    edit_id: str | None = Field(None, max_length=64, description=EDIT_DESC)


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
            "Is this set necessary (mode='remove') or sufficient (mode='keep_only')? Ablates "
            "components (all positions) and nodes (one position) and compares the next-token "
            "distribution at 'position' before and after, per regime. About a second per regime. "
            "Language models only. Example: ablate(text='Paris is the capital of', "
            "components=['1.mlp.down:7'], token=' France', regime='all')."
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
            "What does the model say if I scale these components? Continuations from 'text' with "
            "and without the scaled masks (0 ablates, 2 doubles), and the largest logit changes. "
            "Language models only. Example: steer(text='The cat sat on the', "
            "scales={'0.mlp.up:3': 0.0}, max_new_tokens=10)."
        ),
        input_model=SteerInput,
        result_model=SteerResultWire,
        read_only=True,
        idempotent=True,
    ),
)
