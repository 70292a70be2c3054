"""The demo tokenizer: one token per word, <bos> first, and an offline save/load round trip."""

from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from spd_core.targets.language import training_corpus, vocabulary
from spd_core.targets.tokenizer import SPECIAL_TOKENS, build_tokenizer, word_id


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


def test_every_word_is_exactly_one_known_token(tokenizer: PreTrainedTokenizerFast) -> None:
    words = vocabulary()
    ids = [tokenizer.encode(w, add_special_tokens=False) for w in words]
    assert all(len(i) == 1 for i in ids)
    flat = [i[0] for i in ids]
    assert len(set(flat)) == len(words)
    assert tokenizer.unk_token_id not in flat
    assert tokenizer.convert_ids_to_tokens(flat) == list(words)
    assert len(tokenizer) == len(words) + len(SPECIAL_TOKENS)


def test_text_encodes_word_by_word_after_bos(tokenizer: PreTrainedTokenizerFast) -> None:
    text = training_corpus(0, 1)[0]
    ids = tokenizer(text)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids[1:] == [word_id(tokenizer, w) for w in text.split()]
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


def test_special_tokens(tokenizer: PreTrainedTokenizerFast) -> None:
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == list(SPECIAL_TOKENS)
    assert tokenizer.pad_token_id == 0 and tokenizer.bos_token_id == 2
    assert tokenizer.encode("xylophone", add_special_tokens=False) == [tokenizer.unk_token_id]
    with pytest.raises(ValueError, match="not a word of the demo language"):
        word_id(tokenizer, "xylophone")
    with pytest.raises(ValueError, match="not a word"):
        word_id(tokenizer, "the king")


def test_save_and_load_offline_round_trip(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, PreTrainedTokenizerFast)
    texts = training_corpus(5, 20)
    assert loaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.pad_token, loaded.bos_token, loaded.unk_token) == ("<pad>", "<bos>", "<unk>")
