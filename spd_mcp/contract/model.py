"""Model and data tools: get_model_info, run_prompt, list_probe_prompts."""

from typing import Any

from pydantic import Field

from spd_mcp.contract.components import TextOrFeatures
from spd_mcp.contract.spec import ToolContract
from spd_mcp.contract.wire import Input, TokenProb, Wire


class ModelInfoInput(Input):
    pass


class LayerRow(Wire):
    layer: str = Field(description="canonical layer name used in component keys")
    kind: str = Field(description="linear, conv1d or embedding")
    d_in: int
    d_out: int
    C: int = Field(description="number of components; valid c is 0..C-1")
    alive: int | None = Field(
        description="components whose CI exceeds a threshold on some input (see alive_source)"
    )
    delta_rel_norm: float = Field(
        description="‖W − (VU)ᵀ‖ / ‖W‖: how far the components are from summing to the weight "
        "(≤ 0.01: negligible)"
    )
    delta_mean_sq: float = Field(description="mean squared entry of the weight delta W − (VU)ᵀ")


class ModelInfo(Wire):
    summary: str
    run: str
    description: str
    architecture: str = Field(description="class name of the target model")
    is_language_model: bool = Field(
        description="True: tools take text; False: toy model taking a feature vector"
    )
    dtype: str
    device: str
    vocab_size: int | None
    context_length: int | None = Field(description="maximum tokens per text")
    input_dim: int | None = Field(description="toy models: length of the input feature vector")
    n_params_target: int
    n_components_total: int
    layers: list[LayerRow] = Field(description="decomposed layers in network order")
    alive_source: str = Field(
        description="where the alive counts come from: the harvest, run metrics, or none"
    )
    weight_delta: str = Field(
        description="whether the components sum to the weights; if not, a warning: ablations and "
        "edits are inexact"
    )
    metrics: dict[str, Any] = Field(
        description="decomposition quality from the run (faithfulness, reconstruction per regime, "
        "L0)"
    )
    has_harvest: bool = Field(
        description="activation examples and token statistics exist for this run"
    )
    has_probe_suite: bool
    n_probe_prompts: int


class RunPromptInput(TextOrFeatures):
    top_k: int = Field(10, ge=1, le=100)
    all_positions: bool = False
    edit_id: str | None = Field(None, max_length=64)


class PositionPrediction(Wire):
    position: int
    token: str = Field(description="the token at this position")
    top: list[TokenProb] = Field(description="most likely next tokens after this position")


class OutputValue(Wire):
    index: int
    value: float


class RunPromptResult(Wire):
    summary: str
    prompt_id: int | None = Field(description="id of the stored prompt (language models)")
    tokens: list[str] = Field(description="display strings of the input tokens")
    token_ids: list[int]
    predictions: list[PositionPrediction]
    next_token_probs: list[float | None] = Field(
        description="entry i: probability of the actual token i+1 given tokens 0..i; None at the "
        "last position"
    )
    outputs: list[float] | None = Field(description="toy models: the full output vector")
    top_outputs: list[OutputValue] | None = Field(
        description="toy models: the top_k largest outputs"
    )


class ProbeInput(Input):
    mechanism: str | None = Field(None, max_length=200)
    offset: int = Field(0, ge=0, le=1_000_000)
    limit: int = Field(50, ge=1, le=200)


class ProbeRow(Wire):
    index: int
    text: str
    target_token: str = Field(description="the expected next token (exactly one token)")
    mechanism: str
    position: int | None
    foil: str | None = Field(
        description="the wrong answer this mechanism rules out, if the run gives one"
    )


class BehaviourRow(Wire):
    description: str = Field(description="what the mechanism is, in plain words")
    names: list[str] = Field(description="names people use for it")


class ProbeList(Wire):
    summary: str
    total: int
    offset: int
    limit: int
    mechanisms: dict[str, int] = Field(description="every mechanism tag with its number of prompts")
    prompts: list[ProbeRow]
    behaviours: dict[str, BehaviourRow] = Field(
        description="mechanism tag -> what it is and names for it, where the run describes it"
    )


TOOLS = (
    ToolContract(
        name="get_model_info",
        group="model and data",
        title="Model and decomposition overview",
        description=(
            "Call first. The model, its decomposed layers (names used in keys, C, alive counts, "
            "weight delta), decomposition quality and the run's data. Example: get_model_info()."
        ),
        input_model=ModelInfoInput,
        result_model=ModelInfo,
        read_only=True,
        idempotent=True,
    ),
    ToolContract(
        name="run_prompt",
        group="model and data",
        title="Run the model on a prompt",
        description=(
            "What does the model predict? Tokens and the top_k next tokens at the last position "
            "(or every one). Example: run_prompt(text='The cat sat on the', top_k=5)."
        ),
        input_model=RunPromptInput,
        result_model=RunPromptResult,
        read_only=True,
        idempotent=True,
    ),
    ToolContract(
        name="list_probe_prompts",
        group="model and data",
        title="List the run's probe prompts",
        description=(
            "The run's probe prompts (text, target token, foil) by mechanism tag, paged, with "
            "each mechanism's count and description. Example: "
            "list_probe_prompts(mechanism='induction')."
        ),
        input_model=ProbeInput,
        result_model=ProbeList,
        read_only=True,
        idempotent=True,
    ),
)
