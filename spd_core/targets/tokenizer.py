"""The demo language's tokenizer, built in code: one token per word, ``<bos>`` prepended.

A ``tokenizers`` WordLevel model over ``language.vocabulary()`` with a split-on-whitespace
pre-tokenizer, wrapped as ``transformers.PreTrainedTokenizerFast`` so that ``save_pretrained`` /
``AutoTokenizer.from_pretrained`` work offline. Ids: the four special tokens first, then the words
in ``vocabulary()`` order.
"""

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from spd_core.targets.language import vocabulary

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh tokenizer for the demo language; encoding adds ``<bos>`` unless told not to."""
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *vocabulary()))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=UNK, pad_token=PAD, bos_token=BOS, eos_token=EOS
    )


def word_id(tokenizer: PreTrainedTokenizerFast, word: str) -> int:
    """The single token id of ``word``; raises if the word is not one known token."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ValueError(f"{word!r} is not a word of the demo language (it encodes to {ids})")
    return ids[0]
