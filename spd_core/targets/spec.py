"""Target specs (a tagged union) and how each kind of target is built, saved, loaded and fed data."""

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from spd_core.targets.resid_mlp import ResidMLP, ResidMLPFeatures, ResidMLPSpec, train_resid_mlp
from spd_core.targets.tms import SparseFeatures, TMSModel, TMSSpec, train_tms


class HFSpec(BaseModel):
    """A local transformers causal-LM directory (Llama-style or GPT-2); data are random token sequences
    unless a text file is given."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["hf"] = "hf"
    source: str = Field(description="directory the model was loaded from (informational once saved in a run)")
    data_text: str | None = Field(default=None, description="optional text file, one sample per line")


TargetSpec = Annotated[TMSSpec | ResidMLPSpec | HFSpec, Field(discriminator="kind")]


class _SpecHolder(BaseModel):
    spec: TargetSpec


def parse_target_spec(data: dict[str, Any]) -> TMSSpec | ResidMLPSpec | HFSpec:
    return _SpecHolder.model_validate({"spec": data}).spec


def is_language_model(spec: BaseModel) -> bool:
    return getattr(spec, "kind", None) == "hf"


def model_kwargs(spec: BaseModel) -> dict[str, Any]:
    """ComponentModel keyword arguments that depend on the kind of target."""
    if is_language_model(spec):
        return {"output_attr": "logits", "target_kwargs": {"use_cache": False}}
    return {}


def build_target(spec: TMSSpec | ResidMLPSpec | HFSpec) -> tuple[nn.Module, dict[str, Any]]:
    """Train (toys) or load (HF) the target; returns it with facts worth recording (e.g. seed used)."""
    if isinstance(spec, TMSSpec):
        model, seed = train_tms(spec)
        return model, {"target_seed_used": seed}
    if isinstance(spec, ResidMLPSpec):
        return train_resid_mlp(spec), {}
    return load_hf_model(Path(spec.source)), {}


def untrained_target(spec: TMSSpec | ResidMLPSpec | HFSpec) -> nn.Module:
    """The target's architecture without training (for checking module patterns before any work)."""
    if isinstance(spec, TMSSpec):
        return TMSModel(spec)
    if isinstance(spec, ResidMLPSpec):
        return ResidMLP(spec)
    return load_hf_model(Path(spec.source))


def load_hf_model(path: Path) -> nn.Module:
    """Load a local causal LM; never touches the network. A missing or malformed directory is an error."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a transformers model directory (no config.json)")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ValueError(f"could not load a causal LM from {path}: {err}") from err
    return model.float().eval()


def save_target(spec: BaseModel, model: nn.Module, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if is_language_model(spec):
        model.save_pretrained(out)  # type: ignore[operator]
        return
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "spec.json").write_text(json.dumps(spec.model_dump(), indent=2))


def load_target(spec: TMSSpec | ResidMLPSpec | HFSpec, directory: Path) -> nn.Module:
    if isinstance(spec, HFSpec):
        return load_hf_model(directory)
    model: nn.Module = TMSModel(spec) if isinstance(spec, TMSSpec) else ResidMLP(spec)
    model.load_state_dict(load_file(str(directory / "model.safetensors")))
    return model.requires_grad_(False).eval()


class RandomTokens:
    """Uniformly random token sequences (for decomposing an LM without a corpus)."""

    def __init__(self, vocab_size: int, seq_len: int) -> None:
        self.vocab_size, self.seq_len = vocab_size, seq_len

    def batch(self, batch_size: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, self.vocab_size, (batch_size, self.seq_len), generator=generator)


def data_source(spec: TMSSpec | ResidMLPSpec | HFSpec, model: nn.Module, seq_len: int | None) -> Any:
    if isinstance(spec, TMSSpec):
        return SparseFeatures(spec.n_features, spec.feature_prob)
    if isinstance(spec, ResidMLPSpec):
        return ResidMLPFeatures(spec.n_features, spec.feature_prob)
    vocab = int(model.config.vocab_size)  # type: ignore[union-attr]
    return RandomTokens(vocab, seq_len or 16)
