"""Editing tools: edit_component (named overlays, a job for finetune) and export_edit (a plain
model directory)."""

from typing import Literal

from pydantic import Field

from spd_mcp.contract.components import COMPONENT_DESC
from spd_mcp.contract.ids import ID_RULE
from spd_mcp.contract.spec import ToolContract
from spd_mcp.contract.wire import Input, JobView, LongInput, Wire

EXPORTS = "exports"  # the workspace folder export_edit writes into


class ObjectiveInput(Input):
    token: str = Field(
        max_length=200, description="the token to suppress or promote; exactly one token"
    )
    direction: Literal["suppress", "promote"] = Field(description="lower or raise its probability")
    prompts: list[str] = Field(
        min_length=1, max_length=64, description="prompts on which to change it"
    )
    position: int = Field(
        -1,
        ge=-100000,
        le=100000,
        description="position of the prediction in each prompt (default: the last)",
    )


class EditInput(LongInput):
    components: list[str] = Field(min_length=1, max_length=200, description=COMPONENT_DESC)
    method: Literal["scale", "remove", "finetune"] = Field(
        description="'scale': multiply the write vectors by 'factor'; 'remove': subtract the "
        "components' weights; "
        "'finetune': train their vectors on 'objective'"
    )
    factor: float = Field(
        0.5, ge=-100.0, le=100.0, description="method 'scale': the factor on each write vector"
    )
    objective: ObjectiveInput | None = Field(
        None, description="method 'finetune': which token to suppress or promote on which prompts"
    )
    preserve_prompts: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="prompts whose outputs should not change (finetune: KL penalty; all methods: "
        "KL reported)",
    )
    train: Literal["U", "V", "both"] = Field(
        "both", description="finetune: train write vectors (U), read vectors (V) or both"
    )
    steps: int = Field(100, ge=0, le=5000, description="finetune steps")
    lr: float = Field(0.01, gt=0.0, le=10.0, description="finetune learning rate (AdamW)")
    kl_bound: float = Field(
        0.05,
        ge=0.0,
        le=100.0,
        description="finetune keeps the best step whose preserve KL (nats) is within this",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="random seed")


class EditResult(Wire):
    summary: str
    edit_id: str = Field(description="pass as edit_id to run_prompt, get_ci, ablate, steer")
    method: str
    components: list[str]
    token: str | None = Field(description="the objective token (finetune)")
    token_prob_before: float | None = Field(
        description="mean probability of the objective token before the edit"
    )
    token_prob_after: float | None
    kl_preserve: float | None = Field(
        description="mean per-position KL(original ‖ edited) on preserve_prompts, nats"
    )
    kl_heldout: float | None = Field(
        description="the same on the run's probe prompts not used above"
    )
    weight_change: dict[str, float] = Field(
        description="per layer, Frobenius norm of the weight change"
    )
    relative_change: dict[str, float] = Field(
        description="per layer, the norm of the change over the layer's weight norm"
    )
    best_step: int | None = Field(description="finetune: the step kept")


class ExportInput(Input):
    edit_id: str = Field(
        max_length=64,
        description="the edit to export (an edit_id from edit_component)",
        examples=["e1"],
    )
    name: str | None = Field(
        None,
        max_length=64,
        description=f"directory name under <workspace>/{EXPORTS}/ (default: the edit_id); "
        f"{ID_RULE}",
    )
    overwrite: bool = Field(False, description="replace an existing export of the same name")


class ExportResult(Wire):
    summary: str
    edit_id: str
    path: str = Field(description="absolute path of the model directory")
    workspace_path: str = Field(
        description=f"the same path inside the workspace, e.g. '{EXPORTS}/e1'"
    )
    files: list[str] = Field(description="files written (config, weights, tokenizer)")
    layers: list[str] = Field(description="layers whose weights differ from the original model")
    includes_tokenizer: bool
    size_bytes: int


TOOLS = (
    ToolContract(
        name="edit_component",
        group="interventions",
        job_results=(EditResult,),
        title="Edit components (a named overlay)",
        description=(
            "Can I change this behaviour by editing these components, and at what cost? Makes a "
            "named edit (the base model never changes): 'scale' the write vectors, 'remove' the "
            "components, or 'finetune' only their vectors on an objective while keeping "
            "preserve_prompts (KL). Use it through edit_id in run_prompt, get_ci, ablate, steer. "
            "finetune is a job. Example: edit_component(components=['1.mlp.down:7'], "
            "method='remove', preserve_prompts=['The dog ran to the'])."
        ),
        input_model=EditInput,
        result_model=JobView,
        read_only=False,
    ),
    ToolContract(
        name="export_edit",
        group="interventions",
        title="Export an edit as a model directory",
        description=(
            "Write the model with an edit in its weights as a plain transformers directory in "
            "exports/<name> (loads with AutoModelForCausalLM.from_pretrained; outputs equal "
            "run_prompt with that edit_id). Needs --workspace. About a second. Example: "
            "export_edit(edit_id='e1', name='no_copying')."
        ),
        input_model=ExportInput,
        result_model=ExportResult,
        read_only=False,
        idempotent=True,
    ),
)
