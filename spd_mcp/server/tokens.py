"""One view over the run's tokenizer (HF or ``tokenizers``): encode without special tokens, display, single tokens."""

from typing import Any


class TokenizerView:
    def __init__(self, tokenizer: Any) -> None:
        self.raw = tokenizer
        self._hf = hasattr(tokenizer, "convert_ids_to_tokens")  # transformers tokenizer vs tokenizers.Tokenizer

    @property
    def vocab_size(self) -> int:
        return len(self.raw) if self._hf else self.raw.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        if self._hf:
            return list(self.raw.encode(text, add_special_tokens=False))
        return list(self.raw.encode(text, add_special_tokens=False).ids)

    def display(self, token_id: int) -> str:
        return self.raw.decode([token_id])

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.display(i) for i in ids]

    def tokenize(self, text: str, max_tokens: int | None) -> list[int]:
        """Token ids of ``text``; an error names the limit when there are none or too many."""
        ids = self.encode(text)
        if not ids:
            raise ValueError(f"text {text!r} tokenizes to 0 tokens; give at least one token of text")
        if max_tokens is not None and len(ids) > max_tokens:
            raise ValueError(f"text tokenizes to {len(ids)} tokens; the model's context holds at most {max_tokens}")
        return ids

    def single_token(self, token: str) -> int:
        """The id of a string that must be exactly one token; else the error lists the tokenizations."""
        ids = self.encode(token)
        if len(ids) == 1:
            return ids[0]
        variants = []
        for cand in dict.fromkeys([token, token.strip(), " " + token.strip(), token.strip().lower()]):
            if not cand:
                continue
            cids = self.encode(cand)
            tag = "one token" if len(cids) == 1 else f"{len(cids)} tokens"
            variants.append(f"{cand!r} -> {self.pieces(cids)} ({tag})")
        raise ValueError(
            f"target token {token!r} tokenizes to {len(ids)} tokens, but it must be exactly one; tokenizations: "
            + "; ".join(variants)
        )
