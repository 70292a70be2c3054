"""Harvest-backed tools: get_component_info, get_activation_examples, search_dataset,
get_dataset_attributions."""

from typing import Literal

from pydantic import Field

from spd_mcp.contract.spec import ToolContract
from spd_mcp.contract.wire import Input, Wire

COMPONENT = Field(max_length=200)


class ComponentInfoInput(Input):
    component: str = COMPONENT
    top_k: int = Field(10, ge=1, le=50)
    order: Literal["pmi", "precision", "recall", "count"] = Field(
        "pmi", description="ranks input and output tokens"
    )
    min_count: int = Field(2, ge=1, le=10000, description="ignore tokens seen with fewer firings")


class TokenStatRow(Wire):
    token: str
    token_id: int
    count: int = Field(description="firings on (input) or before (output) this token")
    recall: float = Field(description="share of the component's firings with this token, 0-1")
    precision: float = Field(
        description="share of this token's occurrences on which the component fires, 0-1"
    )
    pmi: float = Field(description="pointwise mutual information in nats")


class TokenLogit(Wire):
    token: str
    token_id: int
    logit: float = Field(description="direct logit change per unit of inner activation")


class CoFiringRow(Wire):
    component: str
    count: int = Field(description="tokens on which both fire")
    jaccard: float = Field(description="count / tokens on which either fires, 0-1")


class ComponentInfo(Wire):
    summary: str
    component: str
    layer: str
    c: int
    read_norm: float = Field(description="norm of the read vector V[:, c]")
    write_norm: float = Field(description="norm of the write vector U[c]")
    has_harvest: bool
    n_firing: int | None = Field(description="harvested tokens with CI above the harvest threshold")
    density: float | None = Field(description="firing density: n_firing / harvested tokens, 0-1")
    mean_ci: float | None
    max_ci: float | None
    harvest_threshold: float | None
    input_tokens: list[TokenStatRow] = Field(description="tokens at which it fires")
    output_tokens: list[TokenStatRow] = Field(description="tokens that follow where it fires")
    promotes: list[TokenLogit] = Field(
        description="tokens its write vector raises through the unembedding"
    )
    suppresses: list[TokenLogit] = Field(
        description="tokens its write vector lowers through the unembedding"
    )
    readout_method: str = Field(
        description="how promotes/suppresses were computed, or why they are empty"
    )
    cofiring: list[CoFiringRow]
    label: str | None


class ExamplesInput(Input):
    component: str = COMPONENT
    limit: int = Field(5, ge=1, le=50)
    offset: int = Field(0, ge=0, le=100000)


class ActivationExample(Wire):
    text_id: int = Field(description="id of the harvested text")
    position: int = Field(description="token position of the peak CI in the text")
    max_ci: float
    window_start: int = Field(description="token position in the text of tokens[0]")
    tokens: list[str]
    token_ids: list[int]
    ci: list[float] = Field(description="the component's CI on each token of the window, 0-1")


class ExamplesResult(Wire):
    summary: str
    component: str
    total: int
    offset: int
    limit: int
    examples: list[ActivationExample]


class SearchInput(Input):
    query: str = Field(min_length=1, max_length=500)
    limit: int = Field(10, ge=1, le=100)
    offset: int = Field(0, ge=0, le=1000000)


class SearchMatch(Wire):
    text_id: int
    char_offset: int = Field(description="character offset of the match in the text")
    snippet: str = Field(description="the match with up to 60 characters of context each side")
    snippet_offset: int = Field(description="character offset of the match in the snippet")


class SearchResult(Wire):
    summary: str
    total: int
    offset: int
    limit: int
    matches: list[SearchMatch]


class DatasetAttrInput(Input):
    component: str = COMPONENT
    top_k: int = Field(10, ge=1, le=100)
    sign: Literal["abs", "positive", "negative"] = "abs"


class AttrRow(Wire):
    component: str
    value: float = Field(
        description="raw signed sum over the corpus of gradient x activation one-hop edges"
    )
    normalised: float = Field(
        description="value / total |value| flowing into the edge's target component"
    )
    abs_value: float = Field(description="sum of |edge| over the corpus")
    count: int = Field(description="number of (text, position pair) edges summed")


class DatasetAttrResult(Wire):
    summary: str
    component: str
    sources: list[AttrRow] = Field(description="components that feed this one")
    targets: list[AttrRow] = Field(description="components this one feeds")


TOOLS = (
    ToolContract(
        name="get_component_info",
        group="components",
        title="What is this component?",
        description=(
            "What is this component? Norms, tokens its write vector promotes and suppresses; from"
            " the harvest: density, mean CI, top input and output tokens, co-firing. Example: "
            "get_component_info(component='0.mlp.up:3')."
        ),
        input_model=ComponentInfoInput,
        result_model=ComponentInfo,
        read_only=True,
        idempotent=True,
    ),
    ToolContract(
        name="get_activation_examples",
        group="components",
        title="Where does it fire in the data?",
        description=(
            "Harvested contexts where this component fires, largest CI first, with its CI on "
            "every token. Example: get_activation_examples(component='0.mlp.up:3', limit=5)."
        ),
        input_model=ExamplesInput,
        result_model=ExamplesResult,
        read_only=True,
        idempotent=True,
    ),
    ToolContract(
        name="search_dataset",
        group="model and data",
        title="Search the run's texts",
        description=(
            "Case-insensitive substring search over the run's harvested texts. Example: "
            "search_dataset(query='capital of')."
        ),
        input_model=SearchInput,
        result_model=SearchResult,
        read_only=True,
        idempotent=True,
    ),
    ToolContract(
        name="get_dataset_attributions",
        group="circuits and attributions",
        title="What feeds this component across the data?",
        description=(
            "What feeds this component and what it feeds, summed over the harvested texts "
            "(gradient x activation). Example: get_dataset_attributions(component='1.mlp.down:2',"
            " sign='positive')."
        ),
        input_model=DatasetAttrInput,
        result_model=DatasetAttrResult,
        read_only=True,
        idempotent=True,
    ),
)
