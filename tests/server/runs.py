"""Tiny runs built in code for server tests: a 2-layer Llama with a word-level tokenizer, and a
TMS-like toy."""

import torch
from torch import nn

from spd_core.model import ComponentModel
from spd_mcp.server.state import ProbePrompt, ServedRun

WORDS = [
    "[UNK]",
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "ran",
    "to",
    "park",
    "is",
    "big",
    "small",
    "red",
    "blue",
    "and",
    "then",
    "it",
    "was",
    "happy",
    "sad",
    "Paris",
    "France",
    "capital",
    "of",
    "city",
    "when",
    "Mary",
    "John",
    "went",
    "store",
    "gave",
    "drink",
    "milk",
    "bird",
    "tree",
    "sky",
    "green",
]


def word_tokenizer():
    """A word-level tokenizer wrapped as a transformers fast tokenizer (imported lazily: toy runs
    skip it)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def lm_run(seed: int = 0) -> ServedRun:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    lm = LlamaForCausalLM(cfg).float()
    model = ComponentModel(
        lm,
        [("model.layers.*.self_attn.*_proj", 8), ("model.layers.*.mlp.*_proj", 8)],
        output_attr="logits",
        target_kwargs={"use_cache": False},
    )
    probes = [
        ProbePrompt("the cat sat on the", "mat", "copying"),
        ProbePrompt("when Mary and John went to the store John gave a drink to", "Mary", "ioi"),
        ProbePrompt("Paris is the capital of", "France", "recall"),
        ProbePrompt("the dog ran to the", "park", "copying"),
    ]
    return ServedRun(
        model=model,
        tokenizer=word_tokenizer(),
        name="tiny-llama",
        probes=probes,
        context_length=64,
        metrics={
            "faithfulness": 1e-6,
            "recon_kl": {"stochastic": 0.01, "ci": 0.02},
            "alive": {"0.mlp.up": 5},
        },
        description="2-layer Llama, random weights (tests)",
    )


class TinyTMS(nn.Module):
    def __init__(self, n_features: int = 5, n_hidden: int = 2) -> None:
        super().__init__()
        self.linear1 = nn.Linear(n_features, n_hidden, bias=False)
        self.linear2 = nn.Linear(n_hidden, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear2(self.linear1(x)))


def toy_run(seed: int = 0) -> ServedRun:
    torch.manual_seed(seed)
    model = ComponentModel(TinyTMS(), [("linear1", 5), ("linear2", 5)])
    return ServedRun(
        model=model,
        tokenizer=None,
        name="tiny-tms",
        input_dim=5,
        description="TMS-like toy (tests)",
    )
