"""The demo language: determinism, vocabulary, and every probe's answer re-derived by a parser of
its own."""

from pathlib import Path

import pytest

from spd_core.targets import language as L

# Independent routes: real-world capitals and English plural spelling, not the module's tables.
WORLD_CAPITALS = {
    "france": "paris", "spain": "madrid", "italy": "rome", "japan": "tokyo", "egypt": "cairo",
    "peru": "lima", "china": "beijing", "russia": "moscow", "kenya": "nairobi",
    "chile": "santiago", "greece": "athens", "norway": "oslo", "cuba": "havana",
    "india": "delhi", "iran": "tehran", "mali": "bamako",
}  # fmt: skip
CONNECTIVE_ENDS = {"then", "because", "so", "but", "until"}
NOUNS = set(L.SINGULARS + L.PLURALS)


def _is_plural(noun: str) -> bool:
    return noun.endswith("s") or noun == "mice"


def _gender(subject: list[str]) -> str:
    """'he' or 'she' for a sentence-initial subject (a name, or 'the' + title)."""
    word = subject[1] if subject[0] == "the" else subject[0]
    if word in L.MALE_NAMES or word in L.MALE_TITLES:
        return "he"
    if word in L.FEMALE_NAMES or word in L.FEMALE_TITLES:
        return "she"
    raise AssertionError(f"{subject} is not a gendered subject")


def _last_sentence(words: list[str]) -> list[str]:
    cut = max((i for i, w in enumerate(words) if w == "."), default=-1)
    return words[cut + 1 :]


def _expected(prompt: str, mechanism: str) -> str:
    """The next word, derived from the prompt alone."""
    words = prompt.split()
    sent = _last_sentence(words)
    if mechanism == "pronoun_gender":
        assert sent[-1] in CONNECTIVE_ENDS, sent
        return _gender(sent)
    if mechanism == "number_agreement":
        assert sent[0] == "the" and sent[3] == "the", sent
        return "are" if _is_plural(sent[1]) else "is"
    if mechanism == "induction":
        query = words[-1]
        first = words.index(query)
        assert first < len(words) - 1, f"{query} has no earlier occurrence"
        return words[first + 1]
    if mechanism == "fact_lookup":
        assert sent[:3] == ["the", "capital", "of"] and sent[-1] == "is", sent
        return WORLD_CAPITALS[sent[3]]
    raise AssertionError(mechanism)


def test_plural_spelling_route_agrees_with_the_tables() -> None:
    assert all(_is_plural(p) for p in L.PLURALS)
    assert not any(_is_plural(s) for s in L.SINGULARS)
    assert WORLD_CAPITALS == L.CAPITALS


def test_spot_checks_of_gender() -> None:
    assert _gender(["the", "king"]) == "he"
    assert _gender(["mary"]) == "she"
    assert _gender(["the", "actress"]) == "she"
    assert _gender(["john"]) == "he"


def test_vocabulary_is_a_few_hundred_unique_words() -> None:
    vocab = L.vocabulary()
    assert 250 <= len(vocab) <= 500
    assert len(set(vocab)) == len(vocab)
    assert all(w and " " not in w for w in vocab)


def test_corpus_is_deterministic_per_seed() -> None:
    assert L.training_corpus(3, 40) == L.training_corpus(3, 40)
    assert L.training_corpus(3, 40) != L.training_corpus(4, 40)
    assert L.probe_prompts(3, 5) == L.probe_prompts(3, 5)
    assert L.probe_prompts(3, 5) != L.probe_prompts(4, 5)


def test_corpus_texts_fit_and_use_only_vocabulary_words() -> None:
    vocab = set(L.vocabulary())
    corpus = L.training_corpus(0, 300)
    for text in corpus:
        words = text.split()
        assert len(words) <= L.MAX_WORDS, text
        assert set(words) <= vocab, set(words) - vocab
        assert words[-1] == ".", text
    lengths = [len(t.split()) for t in corpus]
    assert min(lengths) < 25 and max(lengths) > 40, "text lengths spread over MIN_WORDS..MAX_WORDS"


def test_corpus_obeys_every_mechanism() -> None:
    """Each place in a training text where a mechanism decides the next word, the text follows
    it."""
    seen = dict.fromkeys(L.MECHANISMS, 0)
    for text in L.training_corpus(1, 300):
        words = text.split()
        for i in range(1, len(words)):
            prefix, nxt = " ".join(words[:i]), words[i]
            sent = _last_sentence(words[:i])
            if not sent:
                continue
            if sent[-1] in CONNECTIVE_ENDS:
                mechanism = "pronoun_gender"
            elif len(sent) in (5, 6) and sent[2] in L.PREPOSITIONS and sent[-1] in NOUNS:
                mechanism = "number_agreement"
            elif sent[0] == "code" and len(sent) >= 2 and words[:i].count(words[i - 1]) >= 2:
                mechanism = "induction"
            elif sent[:3] == ["the", "capital", "of"] and len(sent) == 5:
                mechanism = "fact_lookup"
            else:
                continue
            seen[mechanism] += 1
            assert nxt == _expected(prefix, mechanism), (mechanism, prefix, nxt)
    assert min(seen.values()) >= 20, seen


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_every_probe_target_rederived(seed: int) -> None:
    probes = L.probe_prompts(seed, 40)
    assert [p.mechanism for p in probes].count("induction") == 40
    assert {p.mechanism for p in probes} == set(L.MECHANISMS)
    vocab = set(L.vocabulary())
    for p in probes:
        assert p.target == _expected(p.text, p.mechanism), p
        assert len(p.text.split()) < L.MAX_WORDS
        assert set(p.text.split()) <= vocab and p.target in vocab
        assert p.foil is not None and p.foil != p.target and p.foil in vocab, p


def test_probe_foils_are_the_wrong_alternative() -> None:
    for p in L.probe_prompts(2, 30):
        sent = _last_sentence(p.text.split())
        if p.mechanism == "pronoun_gender":
            assert {p.target, p.foil} == {"he", "she"}
            # the context holds a subject of the other gender
            assert p.foil in {_gender(s) for s in _sentences(p.text)[:-1] if _gendered(s)}
        elif p.mechanism == "number_agreement":
            assert {p.target, p.foil} == {"is", "are"}
            assert _is_plural(sent[1]) != _is_plural(sent[-1]), (
                "probe distractors have the other number"
            )
        elif p.mechanism == "induction":
            words = p.text.split()
            assert p.foil in words and p.foil in L.NONCE
        else:
            assert p.foil in WORLD_CAPITALS.values()


def _sentences(text: str) -> list[list[str]]:
    out, cur = [], []
    for w in text.split():
        cur.append(w)
        if w == ".":
            out.append(cur)
            cur = []
    return [*out, cur] if cur else out


def _gendered(sentence: list[str]) -> bool:
    word = sentence[1] if sentence[0] == "the" else sentence[0]
    return word in L.MALE_NAMES + L.FEMALE_NAMES + L.MALE_TITLES + L.FEMALE_TITLES


def test_probes_are_distinct_and_counted() -> None:
    probes = L.probe_prompts(0, 25)
    assert len(probes) == 100
    assert len({p.text for p in probes}) == 100


def test_overlap_check_finds_a_planted_leak() -> None:
    probes = L.probe_prompts(0, 10)
    leak = probes[3].text + " " + probes[3].target + " ."
    corpus = [*L.training_corpus(0, 20), leak]
    assert L.overlapping_probes(probes, corpus) == [probes[3]]
    # a text that merely contains the prompt later on is not a prefix leak
    assert L.overlapping_probes(probes, ["the cat ran . " + probes[3].text]) == []


def test_probes_are_held_out_from_the_corpus() -> None:
    probes = L.probe_prompts(0, 100)
    exclude = [probes[5].text]
    corpus = L.training_corpus(0, 2000, exclude=exclude)
    assert len(corpus) == 2000
    assert not L.overlapping_probes(probes[5:6], corpus)
    assert not L.overlapping_probes(
        probes, L.training_corpus(0, 2000, exclude=[p.text for p in probes])
    )


def test_probes_round_trip_through_jsonl(tmp_path: Path) -> None:
    probes = L.probe_prompts(0, 3)
    L.write_probes(tmp_path / "prompts.jsonl", probes)
    assert L.read_probes(tmp_path / "prompts.jsonl") == probes


def test_unknown_mechanism_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid: pronoun_gender"):
        L._probe(__import__("random").Random(0), "counting")
