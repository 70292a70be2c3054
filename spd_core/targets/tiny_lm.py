"""The demo language model: a 2-block Llama trained on the synthetic language, and its mechanism
scores.

``train_demo_lm`` is seeded and deterministic on CPU: the same config gives the same weights. It
trains on ``language.training_corpus`` with the probe prompts excluded, then scores the held-out
probes with ``mechanism_scores`` (argmax accuracy, mean target probability, target-beats-foil rate).
"""

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from spd_core.errors import InvalidInput, require
from spd_core.targets.demo_lm_config import DemoLMConfig
from spd_core.targets.language import (
    MAX_WORDS,
    Probe,
    overlapping_probes,
    probe_prompts,
    read_probes,
    training_corpus,
    write_probes,
)
from spd_core.targets.tokenizer import build_tokenizer, word_id

PROBES_FILE = "prompts.jsonl"


@dataclass(frozen=True)
class MechanismScore:
    """How well a model predicts one mechanism's probe targets at the prompts' last position."""

    n: int
    accuracy: float  # argmax next token == target
    mean_p_target: float
    foil_win_rate: float | None  # fraction with p(target) > p(foil); None when no probe has a foil


@dataclass(frozen=True)
class DemoLMReport:
    config: DemoLMConfig
    n_params: int
    vocab_size: int
    train_seconds: float
    final_loss: float  # mean training loss over the last 100 steps
    scores: dict[str, MechanismScore]


def build_demo_lm(
    config: DemoLMConfig, vocab_size: int, pad_id: int, bos_id: int
) -> LlamaForCausalLM:
    """An untrained Llama with the config's shape, initialised from ``config.seed``."""
    assert config.d_model % config.n_heads == 0, (
        f"d_model ({config.d_model}) must be a multiple of n_heads ({config.n_heads})"
    )
    torch.manual_seed(config.seed)
    llama = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=config.d_model,
        intermediate_size=config.d_mlp,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        num_key_value_heads=config.n_heads,
        max_position_embeddings=MAX_WORDS + 1,
        tie_word_embeddings=False,
        initializer_range=config.init_std,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=None,
    )
    return LlamaForCausalLM._from_config(llama, attn_implementation="eager")


def encode_batch(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
    """(input_ids, attention_mask), both (batch, seq), right-padded with ``<pad>``."""
    enc = tokenizer(list(texts), padding=True, return_tensors="pt")
    assert enc["input_ids"].shape[1] <= MAX_WORDS + 1, "a text is longer than the model's context"
    assert not (enc["input_ids"] == tokenizer.unk_token_id).any(), (
        "a text has a word outside the vocabulary"
    )
    return enc["input_ids"], enc["attention_mask"]


def _lr_factor(step: int, config: DemoLMConfig) -> float:
    """Linear warmup, then cosine decay to 10% of ``lr``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    t = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * t)).item())


def train_demo_lm(
    config: DemoLMConfig, progress: bool = True
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, DemoLMReport]:
    """Train the demo LM on CPU; returns (model in eval mode, tokenizer, report on held-out
    probes)."""
    tokenizer = build_tokenizer()
    probes = probe_prompts(config.seed, config.n_probes_per_mechanism)
    corpus = training_corpus(config.seed, config.n_train_texts, exclude=[p.text for p in probes])
    assert not overlapping_probes(probes, corpus), "probe prompts leaked into the training corpus"
    ids, mask = encode_batch(tokenizer, corpus)
    labels = ids.masked_fill(mask == 0, -100)

    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        pad_id, bos_id = tokenizer.pad_token_id, tokenizer.bos_token_id
        assert isinstance(pad_id, int) and isinstance(bos_id, int), (
            "the demo tokenizer defines [PAD] and [BOS]"
        )
        model = build_demo_lm(config, len(tokenizer), pad_id, bos_id)
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, config))
        gen = torch.Generator().manual_seed(config.seed)
        losses: list[float] = []
        start = time.perf_counter()
        model.train()
        bar = tqdm(range(config.steps), desc="train demo LM", file=sys.stderr, disable=not progress)
        for _ in bar:
            rows = torch.randint(0, len(corpus), (config.batch_size,), generator=gen)
            width = int(mask[rows].sum(1).max())
            out = model(input_ids=ids[rows, :width], labels=labels[rows, :width])
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(out.loss.item())
            if len(losses) % 50 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / 50:.3f}")
        seconds = time.perf_counter() - start
        model.eval()
        scores = mechanism_scores(model, tokenizer, probes)
    finally:
        torch.set_num_threads(threads)
    tail = losses[-100:]
    report = DemoLMReport(
        config=config,
        n_params=sum(p.numel() for p in model.parameters()),
        vocab_size=len(tokenizer),
        train_seconds=seconds,
        final_loss=sum(tail) / len(tail),
        scores=scores,
    )
    return model, tokenizer, report


@torch.no_grad()
def next_token_probs(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, texts: Sequence[str]
) -> Tensor:
    """(batch, vocab) next-token probabilities after each text's last word."""
    ids, mask = encode_batch(tokenizer, texts)
    logits = model(input_ids=ids, attention_mask=mask).logits  # (batch, seq, vocab)
    last = mask.sum(1) - 1
    return logits[torch.arange(len(texts)), last].float().softmax(-1)


def mechanism_scores(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    probes: Sequence[Probe],
    batch_size: int = 256,
) -> dict[str, MechanismScore]:
    """Per mechanism: accuracy, mean p(target) and (where foils exist) p(target) > p(foil) rate."""
    assert probes, "no probes to score"
    probs = torch.cat(
        [next_token_probs(model, tokenizer, [p.text for p in probes[i : i + batch_size]])
         for i in range(0, len(probes), batch_size)]
    )  # fmt: skip
    rows = torch.arange(len(probes))
    target = torch.tensor([word_id(tokenizer, p.target) for p in probes])
    p_target = probs[rows, target]
    correct = probs.argmax(-1) == target
    out: dict[str, MechanismScore] = {}
    for mechanism in dict.fromkeys(p.mechanism for p in probes):
        idx = [i for i, p in enumerate(probes) if p.mechanism == mechanism]
        with_foil = [i for i in idx if probes[i].foil is not None]
        foil_win = None
        if with_foil:
            foil = torch.tensor([word_id(tokenizer, probes[i].foil or "") for i in with_foil])
            foil_win = (p_target[with_foil] > probs[with_foil, foil]).float().mean().item()
        out[mechanism] = MechanismScore(
            n=len(idx),
            accuracy=correct[idx].float().mean().item(),
            mean_p_target=p_target[idx].mean().item(),
            foil_win_rate=foil_win,
        )
    return out


def mechanism_accuracy(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, probes: Sequence[Probe]
) -> dict[str, float]:
    """Per mechanism: fraction of probes whose argmax next token is the target."""
    return {m: s.accuracy for m, s in mechanism_scores(model, tokenizer, probes).items()}


def save_demo_lm(
    out_dir: Path,
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    probes: Sequence[Probe],
) -> None:
    """Write model, tokenizer and ``prompts.jsonl`` (the probes) to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    write_probes(out_dir / PROBES_FILE, probes)


def load_demo_lm(out_dir: Path) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast, list[Probe]]:
    """Inverse of ``save_demo_lm``; the model comes back in eval mode."""
    require((out_dir / "config.json").exists(), f"{out_dir} holds no saved model (no config.json)")
    model = AutoModelForCausalLM.from_pretrained(out_dir, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    if not (isinstance(model, LlamaForCausalLM) and isinstance(tokenizer, PreTrainedTokenizerFast)):
        raise InvalidInput(
            f"{out_dir} should hold a Llama and a fast tokenizer; got {type(model).__name__}, "
            f"{type(tokenizer).__name__}"
        )
    return model, tokenizer, read_probes(out_dir / PROBES_FILE)
