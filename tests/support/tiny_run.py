"""A tiny language-model run directory, saved with spd_core.run.save_run, for tests that start the
real server.

A 1-layer Llama (random weights, seeded) over a word-level tokenizer, MLP layers decomposed into 4
components each (untrained: the tools' plumbing is under test, not the decomposition), and probe
prompts of two mechanisms, one of them the gendered pronoun. `python -m spd_mcp.server --run DIR`
loads it.
"""

from pathlib import Path

import pytest

WORDS = [
    "[UNK]",
    "the",
    "a",
    "he",
    "she",
    "said",
    "that",
    "was",
    "man",
    "woman",
    "king",
    "queen",
    "boy",
    "girl",
    "cat",
    "sat",
    "on",
    "mat",
    "dog",
    "ran",
    "to",
    "park",
    "and",
    "then",
    "his",
    "her",
]
PROBES = (
    [
        {"text": "the king said that", "target_token": "he", "mechanism": "gendered_pronoun"},
        {"text": "the queen said that", "target_token": "she", "mechanism": "gendered_pronoun"},
        {"text": "the cat sat on the", "target_token": "mat", "mechanism": "copying"},
        {"text": "the dog ran to the", "target_token": "park", "mechanism": "copying"},
    ]
    + [  # more of each, so that a protocol can find circuits on some and validate on the others
        {
            "text": f"{a} {s} {v} that",
            "target_token": "he" if s in ("king", "man", "boy") else "she",
            "mechanism": "gendered_pronoun",
        }
        for a in ("the", "a")
        for s in ("man", "woman", "boy", "girl", "king", "queen")
        for v in ("said", "was")
        if (a, v) != ("the", "said") or s not in ("king", "queen")
    ]
    + [
        {
            "text": f"{a} {s} {v} {p} the",
            "target_token": "mat" if v == "sat" else "park",
            "mechanism": "copying",
        }
        for a in ("the", "a")
        for s in ("cat", "dog", "man", "boy")
        for v, p in (("sat", "on"), ("ran", "to"))
        if (a, s, v) not in (("the", "cat", "sat"), ("the", "dog", "ran"))
    ]
)


def word_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def save_tiny_lm_run(out: Path, seed: int = 0) -> Path:
    """Write the run directory `out` (holding run.json) and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from spd_core.config import DecompositionConfig, ModulePattern
    from spd_core.run import build_component_model, save_run
    from spd_core.targets.spec import HFSpec

    torch.manual_seed(seed)
    lm = (
        LlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(WORDS),
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=2,
                max_position_embeddings=32,
            )
        )
        .float()
        .eval()
    )
    spec = HFSpec(source="tiny-llama (built in tests/support/tiny_run.py)")
    cfg = DecompositionConfig(
        steps=1,
        batch_size=1,
        seq_len=8,
        importance_coeff=1e-3,
        modules=[ModulePattern(pattern="model.layers.*.mlp.*_proj", C=4)],
    )
    model = build_component_model(spec, lm, cfg)
    return save_run(
        out, model, spec, cfg, {"faithfulness": 0.0}, tokenizer=word_tokenizer(), probes=PROBES
    )


@pytest.fixture(scope="session")
def tiny_lm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run directory, saved once per test session."""
    return save_tiny_lm_run(tmp_path_factory.mktemp("tiny-lm-run") / "run")
