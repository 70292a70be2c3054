"""Component tools: get_ci (which components matter here), probe_component (where one fires),
find_components (a job); the argument pieces other tools share (text or features, an example)."""

from typing import Literal

from pydantic import Field, model_validator

from spd_mcp.contract.spec import ToolContract
from spd_mcp.contract.wire import Input, JobView, LongInput, Wire


class TextOrFeatures(Input):
    text: str | None = Field(None, max_length=20000)
    features: list[float] | None = Field(None, max_length=4096)

    @model_validator(mode="after")
    def _one_input(self) -> "TextOrFeatures":
        if (self.text is None) == (self.features is None):
            raise ValueError(
                "give exactly one of 'text' (language models) or 'features' (toy models)"
            )
        return self


class GetCIInput(TextOrFeatures):
    layers: list[str] | None = Field(None, max_length=200)
    position: int | None = Field(None, ge=-100000, le=100000, description="default: every position")
    threshold: float = Field(0.1, ge=0.0, le=1.0)
    top_k: int = Field(10, ge=1, le=1000, description="per position and layer")
    edit_id: str | None = Field(None, max_length=64)
    offset: int = Field(0, ge=0, le=1_000_000)
    limit: int = Field(60, ge=1, le=500)


class CIEntry(Wire):
    node: str = Field(description="'<layer>:<pos>:<c>'")
    component: str = Field(description="'<layer>:<c>'")
    position: int
    token: str = Field(description="the input token at this position")
    ci: float = Field(description="causal importance in [0, 1]")
    inner_act: float = Field(
        description="the component's inner activation (input · read vector V[:, c])"
    )


class CIResult(Wire):
    summary: str
    tokens: list[str]
    token_ids: list[int]
    positions: list[int] = Field(description="the positions reported")
    l0: dict[str, float] = Field(
        description="per layer, the number of components with CI > threshold, averaged over the "
        "reported positions"
    )
    total: int = Field(description="entries above threshold (after top_k per position and layer)")
    offset: int
    limit: int
    entries: list[CIEntry] = Field(
        description="ordered by position, then network layer order, then CI (largest first)"
    )


class ProbeComponentInput(TextOrFeatures):
    component: str = Field(max_length=200)
    edit_id: str | None = Field(None, max_length=64)
    offset: int = Field(0, ge=0, le=100_000)
    limit: int = Field(200, ge=1, le=1000)


class TokenFiring(Wire):
    position: int
    token: str
    ci: float = Field(description="causal importance in [0, 1]")
    inner_act: float


class ProbeComponentResult(Wire):
    summary: str
    component: str
    max_ci: float
    argmax_ci: int = Field(description="position of the largest CI")
    max_abs_act: float
    argmax_abs_act: int
    total: int = Field(description="number of positions")
    offset: int
    limit: int
    positions: list[TokenFiring]


class ExampleInput(Input):
    text: str = Field(max_length=20000)
    target_token: str = Field(max_length=200)
    position: int = Field(-1, ge=-100000, le=100000)


class FindComponentsInput(LongInput):
    examples: list[ExampleInput] = Field(min_length=1, max_length=64)
    min_frequency: float = Field(0.7, gt=0.0, le=1.0)
    method: Literal["circuit", "ci"] = "circuit"
    scope: Literal["position", "any"] = Field(
        "position", description="count components at the prediction only, or anywhere"
    )
    ci_threshold: float = Field(0.0, ge=0.0, lt=1.0)
    steps: int = Field(100, ge=1, le=2000)
    sparsity: float = Field(0.1, ge=0.0, le=100.0)
    edit_id: str | None = Field(None, max_length=64)
    limit: int = Field(100, ge=1, le=1000)


class FoundRow(Wire):
    component: str
    frequency: float = Field(description="fraction of examples needing it, in [0, 1]")
    count: int


class FindComponentsResult(Wire):
    summary: str
    n_examples: int
    total: int
    offset: int
    limit: int
    components: list[FoundRow] = Field(description="most frequent first")
    per_example_sizes: list[int] = Field(description="number of needed components in each example")


TOOLS = (
    ToolContract(
        name="get_ci",
        group="components",
        title="Causal importance of components on an input",
        description=(
            "Which components matter on this input: per position and layer, those with causal "
            "importance (CI) above threshold, and L0 per layer. Example: get_ci(text='The cat sat"
            " on the', position=-1)."
        ),
        input_model=GetCIInput,
        result_model=CIResult,
        read_only=True,
        idempotent=True,
    ),
    ToolContract(
        name="probe_component",
        group="components",
        title="Where one component fires on a text",
        description=(
            "One component's CI and inner activation on every token. Example: "
            "probe_component(text='The cat sat on the mat', component='0.mlp.up:3')."
        ),
        input_model=ProbeComponentInput,
        result_model=ProbeComponentResult,
        read_only=True,
        idempotent=True,
    ),
    ToolContract(
        name="find_components",
        group="components",
        job_results=(FindComponentsResult,),
        title="Components consistently needed for a kind of prediction",
        description=(
            "A job: the components needed in at least min_frequency of the examples (method "
            "'circuit': in the optimised circuit; 'ci': CI above ci_threshold). Example: "
            "find_components(examples=[{'text': 'Paris is the capital of', 'target_token': ' "
            "France'}], method='ci')."
        ),
        input_model=FindComponentsInput,
        result_model=JobView,
        read_only=True,
        idempotent=True,
    ),
)
