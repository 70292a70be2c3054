"""The demo LM's architecture and training settings (a light module: no transformers import)."""

from pydantic import BaseModel, ConfigDict, Field


class DemoLMConfig(BaseModel):
    """Architecture and training of the demo LM (defaults: the shipped model)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    d_model: int = Field(64, ge=8, description="residual width (hidden_size)")
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(4, ge=1)
    d_mlp: int = Field(256, ge=1, description="gated MLP width (intermediate_size)")
    init_std: float = Field(0.02, gt=0, description="std of the normal weight init")
    steps: int = Field(12_000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.01, ge=0)
    n_train_texts: int = Field(20_000, ge=1)
    n_probes_per_mechanism: int = Field(200, ge=1)
    threads: int = Field(1, ge=1, description="torch threads while training")
