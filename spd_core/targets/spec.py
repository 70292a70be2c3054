"""Target specs (a tagged union) and how each kind of target is built, saved, loaded and fed
data."""

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from spd_core.targets.demo_lm_config import DemoLMConfig
from spd_core.targets.resid_mlp import ResidMLP, ResidMLPFeatures, ResidMLPSpec, train_resid_mlp
from spd_core.targets.tms import SparseFeatures, TMSModel, TMSSpec, train_tms


class HFSpec(BaseModel):
    """A local transformers causal-LM directory (Llama-style or GPT-2); data are random token
    sequences unless a text file is given."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["hf"] = "hf"
    source: str = Field(
        description="directory the model was loaded from (informational once saved in a run)"
    )
    data_text: str | None = Field(
        default=None, description="optional text file, one sample per line"
    )


class DemoLMSpec(BaseModel):
    """The demo language model: a transformers Llama trained on the synthetic language
    (``spd_core.targets.language``); decomposed on that language's corpus."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["demo_lm"] = "demo_lm"
    lm: DemoLMConfig = Field(default_factory=lambda: DemoLMConfig.model_validate({}))
    corpus_seed: int = 1
    n_corpus_texts: int = 20_000


AnySpec = TMSSpec | ResidMLPSpec | HFSpec | DemoLMSpec
TargetSpec = Annotated[AnySpec, Field(discriminator="kind")]


class _SpecHolder(BaseModel):
    spec: TargetSpec


def parse_target_spec(data: dict[str, Any]) -> AnySpec:
    return _SpecHolder.model_validate({"spec": data}).spec


def is_language_model(spec: BaseModel) -> bool:
    return getattr(spec, "kind", None) in ("hf", "demo_lm")


def model_kwargs(spec: BaseModel) -> dict[str, Any]:
    """ComponentModel keyword arguments that depend on the kind of target."""
    if is_language_model(spec):
        return {"output_attr": "logits", "target_kwargs": {"use_cache": False}}
    return {}


def build_target(spec: AnySpec) -> tuple[nn.Module, dict[str, Any]]:
    """Train (toys) or load (HF) the target; returns it with facts worth recording (e.g. seed
    used)."""
    if isinstance(spec, TMSSpec):
        model, seed = train_tms(spec)
        return model, {"target_seed_used": seed}
    if isinstance(spec, ResidMLPSpec):
        return train_resid_mlp(spec), {}
    if isinstance(spec, DemoLMSpec):
        from spd_core.targets.tiny_lm import train_demo_lm

        model, _, report = train_demo_lm(spec.lm)
        return model, {
            "target_report": {m: vars(s) for m, s in report.scores.items()},
            "target_train_seconds": report.train_seconds,
        }
    return load_hf_model(Path(spec.source)), {}


def untrained_target(spec: AnySpec) -> nn.Module:
    """The target's architecture without training (for checking module patterns before any work)."""
    if isinstance(spec, TMSSpec):
        return TMSModel(spec)
    if isinstance(spec, ResidMLPSpec):
        return ResidMLP(spec)
    if isinstance(spec, DemoLMSpec):
        from spd_core.targets.tiny_lm import build_demo_lm
        from spd_core.targets.tokenizer import build_tokenizer

        tok = build_tokenizer()
        return build_demo_lm(spec.lm, tok.vocab_size, int(tok.pad_token_id), int(tok.bos_token_id))  # type: ignore[arg-type]
    return load_hf_model(Path(spec.source))


def load_hf_model(path: Path) -> nn.Module:
    """Load a local causal LM; never touches the network. A missing or malformed directory is an
    error."""
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
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors")
    )
    (out / "spec.json").write_text(json.dumps(spec.model_dump(), indent=2))


def load_target(spec: AnySpec, directory: Path) -> nn.Module:
    """The saved target. The demo LM loads as ``NativeLlama`` (same weights, names and logits as
    transformers' Llama, without importing transformers); other language models through
    transformers."""
    if isinstance(spec, DemoLMSpec):
        from spd_core.targets.llama_native import load_native_llama

        native = load_native_llama(directory)
        if native is not None:
            return native
    if isinstance(spec, HFSpec | DemoLMSpec):
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


class CorpusTokens:
    """Random rows of a pre-tokenised corpus, (n_texts, seq_len) right-padded token ids."""

    def __init__(self, ids: Tensor) -> None:
        self.ids = ids

    def batch(self, batch_size: int, generator: torch.Generator) -> Tensor:
        rows = torch.randint(0, self.ids.shape[0], (batch_size,), generator=generator)
        return self.ids[rows]


def corpus_texts(spec: AnySpec, n: int | None = None) -> list[str]:
    """The texts a language-model run was decomposed on (the demo language's corpus, or a text
    file)."""
    if isinstance(spec, DemoLMSpec):
        from spd_core.targets.language import probe_prompts, training_corpus

        held_out = [p.text for p in probe_prompts(spec.lm.seed, spec.lm.n_probes_per_mechanism)]
        return training_corpus(spec.corpus_seed, n or spec.n_corpus_texts, exclude=held_out)
    if isinstance(spec, HFSpec) and spec.data_text:
        lines = [ln for ln in Path(spec.data_text).read_text().splitlines() if ln.strip()]
        return lines[:n] if n else lines
    raise ValueError(
        f"a {getattr(spec, 'kind', spec)} target has no text corpus; pass texts explicitly"
    )


def data_source(spec: AnySpec, model: nn.Module, seq_len: int | None) -> Any:
    if isinstance(spec, TMSSpec):
        return SparseFeatures(spec.n_features, spec.feature_prob)
    if isinstance(spec, ResidMLPSpec):
        return ResidMLPFeatures(spec.n_features, spec.feature_prob)
    if isinstance(spec, DemoLMSpec):
        from spd_core.targets.tokenizer import build_tokenizer

        tok = build_tokenizer()
        enc = tok(
            corpus_texts(spec),
            padding="max_length",
            max_length=seq_len or 48,
            truncation=True,
            return_tensors="pt",
        )
        return CorpusTokens(enc["input_ids"])
    vocab = int(model.config.vocab_size)  # type: ignore[union-attr]
    return RandomTokens(vocab, seq_len or 16)
