"""Tiny seeded language models for the analysis tests: a 2-block Llama and a GPT-2 (Conv1D),
decomposed."""

import torch
import transformers

from spd_core.model import ComponentModel


def tiny_llama(
    seed: int = 0, vocab: int = 48, d: int = 32, C: int = 8, embed: bool = False
) -> ComponentModel:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=d,
        intermediate_size=2 * d,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    lm = transformers.LlamaForCausalLM(cfg).eval()
    patterns = [("model.layers.*.self_attn.*_proj", C), ("model.layers.*.mlp.*_proj", C)]
    if embed:
        patterns.insert(0, ("model.embed_tokens", C))
    return ComponentModel(lm, patterns, output_attr="logits", target_kwargs={"use_cache": False})


def tiny_gpt2(
    seed: int = 0, vocab: int = 40, d: int = 16, C: int = 6, tied: bool = False
) -> ComponentModel:
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=vocab,
        n_embd=d,
        n_layer=1,
        n_head=2,
        n_positions=32,
        tie_word_embeddings=tied,
        bos_token_id=0,
        eos_token_id=0,
    )
    lm = transformers.GPT2LMHeadModel(cfg).eval()
    return ComponentModel(
        lm,
        [("transformer.h.*.attn.c_*", C), ("transformer.h.*.mlp.c_*", C), ("transformer.wte", C)],
        output_attr="logits",
        target_kwargs={"use_cache": False},
    )
