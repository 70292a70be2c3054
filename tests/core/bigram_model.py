"""A hand-built bigram LM whose components are known by construction, with a word tokenizer.

Tokens: WORDS (ids 0..5). Embedding = identity (not decomposed); ``lin1`` = identity and ``lin2`` =
the bigram table, both decomposed with C = vocab, V = I and U = Wᵀ, so component c of either layer
is exactly "token c" (delta 0). The CI functions are set so component c fires with CI 1 on token c
(c in FIRING) and never otherwise. Mechanisms: "ab" (a -> b) and "cd" (c -> d), carried by
lin1:1, lin2:1 and lin1:3, lin2:3.
"""

import torch
from torch import nn

from spd_core.model import ComponentModel

WORDS = ["x", "a", "b", "c", "d", "e"]
FIRING = [1, 2, 3, 4, 5]
BIGRAMS = {1: 2, 3: 4}  # a -> b, c -> d
STRENGTH = 6.0


class BigramLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        v = len(WORDS)
        self.embed = nn.Embedding(v, v)
        self.lin1 = nn.Linear(v, v, bias=False)
        self.lin2 = nn.Linear(v, v, bias=False)
        with torch.no_grad():
            self.embed.weight.copy_(torch.eye(v))
            self.lin1.weight.copy_(torch.eye(v))
            self.lin2.weight.zero_()
            for src, dst in BIGRAMS.items():
                self.lin2.weight[dst, src] = STRENGTH

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.lin1(self.embed(x)))


def bigram_model() -> ComponentModel:
    model = ComponentModel(BigramLM(), [("lin1", len(WORDS)), ("lin2", len(WORDS))], ci_hidden=2)
    with torch.no_grad():
        for layer in ("lin1", "lin2"):
            comp = model.comp(layer)
            comp.V.copy_(torch.eye(len(WORDS)))
            comp.U.copy_(comp.target_weight.T)
            ci = model.ci_fns[layer]
            for p in ci.parameters():
                p.zero_()
            for c in FIRING:  # CI = 0.1·gelu(10·a): 1.0 at a = 1, 0 at a = 0
                ci.W_in[c, 0, 0] = 10.0
                ci.W_out[c, 0, 0] = 0.1
    return model


def word_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="x"))
    tok.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="x")
