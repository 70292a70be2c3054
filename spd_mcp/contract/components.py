"""Component tools: get_ci (which components matter here), probe_component (where one fires),
find_components (a job); the argument pieces other tools share (text or features, an example)."""

from typing import Literal

from pydantic import Field, model_validator

from spd_mcp.contract.spec import ToolContract
from spd_mcp.contract.wire import Input, JobView, LongInput, Wire

TEXT_DESC = "language models: the text to analyse (no special tokens are added)"


FEATURES_DESC = "toy models only: the input feature vector (length input_dim from get_model_info)"


COMPONENT_DESC = "component keys '<layer>:<c>', e.g. ['0.mlp.up:3', '1.attn.o:0']"
EDIT_DESC = "run under this edit (an edit_id from edit_component); omit for the base model"


class TextOrFeatures(Input):
    text: str | None = Field(
        None, max_length=20000, description=TEXT_DESC, examples=["The cat sat on the"]
    )
    features: list[float] | None = Field(None, max_length=4096, description=FEATURES_DESC)

    @model_validator(mode="after")
    def _one_input(self) -> "TextOrFeatures":
        if (self.text is None) == (self.features is None):
            raise ValueError(
                "give exactly one of 'text' (language models) or 'features' (toy models)"
            )
        return self


class GetCIInput(TextOrFeatures):
    layers: list[str] | None = Field(
        None,
        max_length=200,
        description="only these layers (names from get_model_info); default all",
    )
    position: int | None = Field(
        None,
        ge=-100000,
        le=100000,
        description="only this token position (0-based; negative counts from the end); default "
        "every position",
    )
    threshold: float = Field(
        0.1, ge=0.0, le=1.0, description="report components with CI above this (CI is in [0, 1])"
    )
    top_k: int = Field(
        10,
        ge=1,
        le=1000,
        description="at most this many components per (position, layer), largest CI first",
    )
    edit_id: str | None = Field(None, max_length=64, description=EDIT_DESC)
    offset: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="skip this many entries of the (position, layer, CI) ordered list",
    )
    limit: int = Field(60, ge=1, le=500, description="return at most this many entries")


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
    component: str = Field(
        max_length=200, description="component key '<layer>:<c>', e.g. '0.mlp.up:3'"
    )
    edit_id: str | None = Field(None, max_length=64, description=EDIT_DESC)
    offset: int = Field(0, ge=0, le=100_000, description="skip this many positions")
    limit: int = Field(200, ge=1, le=1000, description="return at most this many positions")


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
    text: str = Field(
        max_length=20000, description="the prompt", examples=["Paris is the capital of"]
    )
    target_token: str = Field(
        max_length=200, description="the token the model should predict; must be exactly one token"
    )
    position: int = Field(
        -1, ge=-100000, le=100000, description="position whose prediction it is (default: the last)"
    )


class FindComponentsInput(LongInput):
    examples: list[ExampleInput] = Field(
        min_length=1,
        max_length=64,
        description="several prompts showing the same kind of prediction",
    )
    min_frequency: float = Field(
        0.7,
        gt=0.0,
        le=1.0,
        description="report components needed in at least this fraction of examples",
    )
    method: Literal["circuit", "ci"] = Field(
        "circuit",
        description="'circuit': needed = in the optimised circuit of the prediction (slower, "
        "sharper); "
        "'ci': needed = natural CI above ci_threshold",
    )
    scope: Literal["position", "any"] = Field(
        "position", description="count components at the prediction position, or at any position"
    )
    ci_threshold: float = Field(
        0.0, ge=0.0, lt=1.0, description="a component counts when its CI is above this"
    )
    steps: int = Field(
        100, ge=1, le=2000, description="circuit optimisation steps per example (method 'circuit')"
    )
    sparsity: float = Field(
        0.1, ge=0.0, le=100.0, description="circuit sparsity coefficient (method 'circuit')"
    )
    edit_id: str | None = Field(None, max_length=64, description=EDIT_DESC)
    limit: int = Field(100, ge=1, le=1000, description="return at most this many components")


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
            "Which components matter on this input? Per position and layer, the components with "
            "causal importance (CI, 0-1) above 'threshold', and L0 per layer. Well under a "
            "second. Example: get_ci(text='The cat sat on the', position=-1, top_k=5)."
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
            "Where does this component fire on my text? Its CI and inner activation on every "
            "token. Well under a second. Example: probe_component(text='The cat sat on the mat', "
            "component='0.mlp.up:3')."
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
            "Which components are consistently needed for this kind of prediction? Finds the "
            "components needed for each example (method 'circuit': optimised; 'ci': CI above "
            "ci_threshold) and returns those needed in at least min_frequency of them. A job. "
            "Language models only. Example: find_components(examples=[{'text': 'Paris is the "
            "capital of', 'target_token': ' France'}], min_frequency=0.5, method='ci')."
        ),
        input_model=FindComponentsInput,
        result_model=JobView,
        read_only=True,
        idempotent=True,
    ),
)
