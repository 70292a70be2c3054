"""DecompositionConfig: every hyper-parameter of one SPD run, frozen and closed to unknown
fields."""

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spd_core.ci import CIFnType
from spd_core.errors import require
from spd_core.losses import OutputLoss, ReconMode
from spd_core.masks import Sampling


class ModulePattern(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    pattern: str = Field(
        description="fnmatch pattern over module paths, e.g. 'model.layers.*.mlp.*_proj'"
    )
    C: int = Field(ge=1, description="number of rank-1 components for each matched module")


class DecompositionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    steps: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    seq_len: int | None = Field(default=None, description="tokens per sequence for language models")
    modules: list[ModulePattern] = Field(min_length=1)
    tied: dict[str, str] = Field(
        default_factory=dict, description="layer -> layer whose components it shares, transposed"
    )
    ci_fn_type: CIFnType = "mlp"
    ci_hidden: int = 16

    lr: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "cosine"
    lr_warmup_frac: float = Field(default=0.0, ge=0, le=1)
    lr_final_frac: float = Field(default=0.0, ge=0, le=1)
    grad_clip: float | None = None

    faithfulness_warmup_steps: int = 0
    faithfulness_warmup_lr: float = 0.01
    faithfulness_warmup_wd: float = 0.1
    faithfulness_coeff: float = 0.0

    importance_coeff: float
    p_start: float = 1.0
    p_end: float | None = None
    p_anneal_start_frac: float = 0.0
    p_anneal_end_frac: float = 1.0

    stochastic_recon_coeff: float = 1.0
    stochastic_layerwise_coeff: float = 1.0
    stochastic_subset_coeff: float = 0.0
    ci_recon_coeff: float = 0.0
    ci_recon_mode: ReconMode = "all"
    ci_recon_layer_sampling: Literal["uniform", "loss"] = Field(
        default="uniform",
        description=(
            "random_layer mode: draw the layer uniformly, or more often where its loss is high"
        ),
    )
    pgd_recon_coeff: float = 0.0
    pgd_steps: int = 1
    pgd_step_size: float = 0.1
    pgd_mode: Literal["all", "layerwise", "subset"] = "all"
    n_mask_samples: int = 1
    sampling: Sampling = "continuous"
    output_loss: OutputLoss = "mse"

    eval_freq: int = 1000
    eval_batches: int = 4
    log_freq: int = 50
    checkpoint_freq: int = 1000
    ci_alive_threshold: float = 0.1
    autocast_bf16: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    workers: int = Field(
        default=1, ge=1, description="CPU processes that split each batch (data parallel)"
    )

    @model_validator(mode="after")
    def _check(self) -> "DecompositionConfig":
        require(
            self.p_anneal_start_frac <= self.p_anneal_end_frac,
            "p_anneal_start_frac must be ≤ p_anneal_end_frac",
        )
        require(
            self.ci_recon_layer_sampling == "uniform" or self.ci_recon_mode == "random_layer",
            f"ci_recon_layer_sampling {self.ci_recon_layer_sampling!r} needs ci_recon_mode "
            f"'random_layer', got {self.ci_recon_mode!r}; with other modes use 'uniform'",
        )
        require(
            self.batch_size % self.workers == 0,
            f"batch_size {self.batch_size} must be a multiple of workers {self.workers}",
        )
        require(
            self.workers == 1 or self.ci_recon_layer_sampling == "uniform",
            "ci_recon_layer_sampling 'loss' keeps per-process loss statistics; with workers > 1 "
            "use 'uniform'",
        )
        return self

    def p_at(self, step: int) -> float:
        """The importance-minimality exponent at ``step`` (linear anneal from p_start to p_end)."""
        if self.p_end is None:
            return self.p_start
        frac = step / max(self.steps, 1)
        span = max(self.p_anneal_end_frac - self.p_anneal_start_frac, 1e-12)
        t = min(max((frac - self.p_anneal_start_frac) / span, 0.0), 1.0)
        return self.p_start + t * (self.p_end - self.p_start)

    def lr_at(self, step: int) -> float:
        warm = int(self.lr_warmup_frac * self.steps)
        if step < warm:
            return self.lr * (step + 1) / warm
        if self.lr_schedule == "constant":
            return self.lr
        t = (step - warm) / max(self.steps - warm, 1)
        final = self.lr * self.lr_final_frac
        return final + (self.lr - final) * 0.5 * (1 + math.cos(math.pi * t))

    @classmethod
    def from_file(cls, path: Path) -> "DecompositionConfig":
        return cls.model_validate(json.loads(Path(path).read_text()))
