"""One view over the run's tokenizer (HF or ``tokenizers``): encode without special tokens, display,
single tokens.

Text with words the vocabulary lacks (they would silently become the unknown token) is an error that
names the words, shows how the text splits and says what the vocabulary is.
"""

from typing import Any

MAX_LISTED_VOCAB = 400  # a vocabulary up to this size is listed whole in the error


class TokenizerView:
    def __init__(self, tokenizer: Any) -> None:
        self.raw = tokenizer
        self._hf = hasattr(
            tokenizer, "convert_ids_to_tokens"
        )  # transformers tokenizer vs tokenizers.Tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.raw) if self._hf else self.raw.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        if self._hf:
            return list(self.raw.encode(text, add_special_tokens=False))
        return list(self.raw.encode(text, add_special_tokens=False).ids)

    @property
    def unk_id(self) -> int | None:
        """The id every out-of-vocabulary word maps to (None: the tokenizer can split any text)."""
        if self._hf:
            return self.raw.unk_token_id
        unk = getattr(self.raw.model, "unk_token", None)
        return self.raw.token_to_id(unk) if unk else None

    def _unk_name(self) -> str:
        return str(self.raw.unk_token if self._hf else self.raw.model.unk_token)

    def _offsets(self, text: str) -> list[tuple[int, int]] | None:
        if not self._hf:
            return list(self.raw.encode(text, add_special_tokens=False).offsets)
        if getattr(self.raw, "is_fast", False):
            enc = self.raw(text, add_special_tokens=False, return_offsets_mapping=True)
            return [tuple(o) for o in enc["offset_mapping"]]
        return None

    def check_known(self, text: str, ids: list[int]) -> None:
        """Raise ValueError naming the words of ``text`` that are not in the vocabulary, if any."""
        unk = self.unk_id
        if unk is None or unk not in ids:
            return
        offsets = self._offsets(text)
        if offsets is None or len(offsets) != len(ids):
            words = [f"token {i}" for i, t in enumerate(ids) if t == unk]
            split = self.pieces(ids)
        else:  # the unknown token's own string (a vocabulary word in some tokenizers) is known
            name = self._unk_name()
            unknown = [
                t == unk and text[a:b] != name for (a, b), t in zip(offsets, ids, strict=True)
            ]
            if not any(unknown):
                return
            spans = [text[a:b] for a, b in offsets]
            words = [repr(w) for w, u in zip(spans, unknown, strict=True) if u]
            split = [
                f"{w!r}: unknown" if u else self.display(t)
                for w, u, t in zip(spans, unknown, ids, strict=True)
            ]
        hints = []
        for w in dict.fromkeys(words):
            lower = w.lower()
            if (
                lower != w
                and len(self.encode(lower[1:-1])) == 1
                and self.encode(lower[1:-1])[0] != unk
            ):
                hints.append(f"{lower} is")
        hint = f" ({', '.join(hints)} in it)" if hints else ""
        raise ValueError(
            f"text has {len(words)} word(s) outside the tokenizer's vocabulary: "
            f"{', '.join(dict.fromkeys(words))}{hint}; they would all read as the unknown token "
            f"{self._unk_name()!r}. The text splits as {split}. {self.vocabulary()}"
        )

    def vocabulary(self) -> str:
        """What the vocabulary is, in a sentence (listed whole when small)."""
        vocab = self.raw.get_vocab() if self._hf else self.raw.get_vocab(with_added_tokens=False)
        words = [
            w
            for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])
            if not (w.startswith("<") and w.endswith(">"))
        ]
        words = [w for w in words if not (w.startswith("[") and w.endswith("]"))]
        if len(words) <= MAX_LISTED_VOCAB:
            return (
                f"Valid words ({len(words)}, whitespace-separated, case-sensitive): "
                f"{' '.join(words)}"
            )
        return f"The vocabulary has {len(vocab)} tokens, e.g. {' '.join(words[:40])}"

    def display(self, token_id: int) -> str:
        return self.raw.decode([token_id])

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.display(i) for i in ids]

    def tokenize(self, text: str, max_tokens: int | None) -> list[int]:
        """Token ids of ``text``; an error names the limit when there are none or too many."""
        ids = self.encode(text)
        if not ids:
            raise ValueError(
                f"text {text!r} tokenizes to 0 tokens; give at least one token of text"
            )
        self.check_known(text, ids)
        if max_tokens is not None and len(ids) > max_tokens:
            raise ValueError(
                f"text tokenizes to {len(ids)} tokens; the model's context holds at most "
                f"{max_tokens}"
            )
        return ids

    def single_token(self, token: str) -> int:
        """The id of a string that must be exactly one token; else the error lists the
        tokenizations."""
        ids = self.encode(token)
        if len(ids) == 1 and ids[0] != self.unk_id:
            return ids[0]
        if len(ids) == 1:
            raise ValueError(
                f"target token {token!r} is not in the tokenizer's vocabulary. {self.vocabulary()}"
            )
        variants = []
        for cand in dict.fromkeys(
            [token, token.strip(), " " + token.strip(), token.strip().lower()]
        ):
            if not cand:
                continue
            cids = self.encode(cand)
            tag = "one token" if len(cids) == 1 else f"{len(cids)} tokens"
            variants.append(f"{cand!r} -> {self.pieces(cids)} ({tag})")
        raise ValueError(
            f"target token {token!r} tokenizes to {len(ids)} tokens, but it must be exactly one; "
            "tokenizations: " + "; ".join(variants)
        )
