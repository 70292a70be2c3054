"""Editing tools: edit_component (named overlays, a job for finetune) and export_edit (a plain
model directory)."""

from typing import Literal

from pydantic import Field

from spd_mcp.contract.spec import ToolContract
from spd_mcp.contract.wire import Input, JobView, LongInput, Wire

EXPORTS = "exports"  # the workspace folder export_edit writes into


class ObjectiveInput(Input):
    token: str = Field(max_length=200)
    direction: Literal["suppress", "promote"]
    prompts: list[str] = Field(min_length=1, max_length=64)
    position: int = Field(-1, ge=-100000, le=100000)


class EditInput(LongInput):
    components: list[str] = Field(min_length=1, max_length=200)
    method: Literal["scale", "remove", "finetune"] = Field(
        description="scale: write vectors times factor; finetune: train them on objective"
    )
    factor: float = Field(0.5, ge=-100.0, le=100.0)
    objective: ObjectiveInput | None = None
    preserve_prompts: list[str] = Field(
        default_factory=list, max_length=64, description="KL on them reported (finetune: penalised)"
    )
    train: Literal["U", "V", "both"] = Field(
        "both", description="U: write vectors, V: read vectors"
    )
    steps: int = Field(100, ge=0, le=5000)
    lr: float = Field(0.01, gt=0.0, le=10.0)
    kl_bound: float = Field(
        0.05,
        ge=0.0,
        le=100.0,
        description="finetune keeps the best step with preserve KL below this",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)


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
    edit_id: str = Field(max_length=64)
    name: str | None = Field(None, max_length=64, description="default: the edit_id")
    overwrite: bool = False


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
            "A named edit (the base model never changes): scale, remove or finetune (a job) these"
            " components, with its KL cost on preserve_prompts; use its edit_id in run_prompt, "
            "get_ci, ablate, steer. Example: edit_component(components=['1.mlp.down:7'], "
            "method='remove')."
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
            "Write the model with an edit in its weights as a transformers directory, "
            "exports/<name>. Example: export_edit(edit_id='e1')."
        ),
        input_model=ExportInput,
        result_model=ExportResult,
        read_only=False,
        idempotent=True,
    ),
)
