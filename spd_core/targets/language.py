"""The demo synthetic language: a seeded generator of texts with four planted mechanisms and its
probes.

Words are lower-case and separated by single spaces; every word is one token (see ``tokenizer.py``).
A text is a sequence of sentences, each ending in ``.``; its length is drawn from
``MIN_WORDS..MAX_WORDS`` (the tokenizer adds ``<bos>``, so the model sees at most ``MAX_WORDS + 1``
tokens). Short texts make the induction signal less diluted, which speeds up its learning.

Grammar (``[x]`` optional, ``X|Y`` a choice, CAPITALS word classes listed below):

    filler     := SUBJ VERB PREP the [ADJ] PLACE .
    pronoun    := SUBJ VERB PREP the [ADJ] PLACE [with the [ADJ] NOUN] CONN PRON VERB .
    agreement  := the SING|PLUR PREP the [ADJ] SING|PLUR is|are ADJ .
    fact       := the capital of COUNTRY is CITY .
    mention    := code A B C* .       (a run of RUN_MIN..RUN_MAX NONCE words; 0-2 runs per text,
                                       mostly 2 when any (RUN_COUNT_WEIGHTS),
                                       no NONCE word twice in a text outside its run's repeats)
    recall     := code A B C* .       (the same run again, RECALLS times, after its mention)
    repeat     := code X1 .. Xn . code X1 .. Xn .   (a whole text, share REPEAT_TEXT_P;
                                       n in REPEAT_LEN: long repeats make the model copy by
                                       content, not by position)

Probe runs are RUN_MIN..RUN_MAX words long too; the probe asks only for the word after the first.

    SUBJ := MALE_NAME | FEMALE_NAME | the MALE_TITLE | the FEMALE_TITLE | the [ADJ] SING
    CONN := and then | because | so | but | until       (always followed by PRON)

Planted mechanisms; the correct next token is fixed by the text so far:

- ``pronoun_gender``: after CONN, PRON is ``he`` when the sentence's SUBJ is a male name or title
  and ``she`` when female (pronoun sentences only take gendered subjects). The subject is 4-10
  words back, and earlier sentences may have subjects of the other gender.
- ``number_agreement``: ``is`` when the sentence's first noun is singular, ``are`` when plural,
  whatever the number of the distractor noun right before the verb.
- ``induction``: after ``code A`` where ``code A B`` occurred earlier in the text, the next word is
  ``B`` (and so on along the run). NONCE words appear nowhere else and runs are drawn afresh for
  every text, so only copying predicts them.
- ``fact_lookup``: after ``the capital of COUNTRY is`` comes that country's capital (``CAPITALS``).

Sentences of all kinds are mixed in every text, so each mechanism is surrounded by the others as
filler. Probes (``probe_prompts``) come from their own random stream (seed ``"probes:{seed}"``,
the corpus uses ``"corpus:{seed}"``) and are built to be harder than the average training text:
the agreement distractor always has the other number, and pronoun and induction probes always carry
an opposite-gender subject / a second nonce pair in their context. ``overlapping_probes`` checks
that no probe prompt starts a training text.
"""

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

MAX_WORDS = 47
MIN_WORDS = 12  # texts stop at a length drawn from MIN_WORDS..MAX_WORDS
RUN_MIN, RUN_MAX = 3, 5  # NONCE words per code sentence
RUN_COUNT_WEIGHTS = (0.3, 0.1, 0.6)  # P(0, 1, 2 nonce runs in a training text)
RECALLS = (1, 1, 2)
# share of texts that are one long run said twice, its length
# times a run is recalled after its mention
REPEAT_TEXT_P, REPEAT_LEN = 0.15, (6, 18)

MALE_NAMES = (
    "john", "james", "peter", "paul", "david", "mark", "tom", "george", "henry", "jack",
    "luke", "adam", "simon", "oliver", "harry", "frank", "victor", "oscar", "leo", "hugo",
)  # fmt: skip
FEMALE_NAMES = (
    "mary", "anna", "emma", "sarah", "lucy", "alice", "julia", "kate", "laura", "rose",
    "clara", "sophie", "grace", "ella", "nina", "maria", "olivia", "helen", "amy", "eva",
)  # fmt: skip
MALE_TITLES = (
    "king", "prince", "father", "actor", "waiter", "monk", "uncle", "brother", "son", "husband",
    "duke", "emperor", "boy", "man", "lord", "nephew",
)  # fmt: skip
FEMALE_TITLES = (
    "queen", "princess", "mother", "actress", "waitress", "nun", "aunt", "sister", "daughter",
    "wife", "duchess", "empress", "girl", "woman", "lady", "niece",
)  # fmt: skip
NOUNS = (  # (singular, plural)
    ("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("horse", "horses"), ("fox", "foxes"),
    ("wolf", "wolves"), ("mouse", "mice"), ("goat", "goats"), ("cow", "cows"), ("duck", "ducks"),
    ("frog", "frogs"), ("rabbit", "rabbits"), ("bear", "bears"), ("lion", "lions"),
    ("tiger", "tigers"), ("snake", "snakes"), ("box", "boxes"), ("car", "cars"), ("tree", "trees"),
    ("book", "books"), ("cup", "cups"), ("key", "keys"), ("chair", "chairs"), ("table", "tables"),
    ("lamp", "lamps"), ("ship", "ships"), ("train", "trains"), ("stone", "stones"),
    ("flower", "flowers"), ("bell", "bells"),
)  # fmt: skip
SINGULARS = tuple(s for s, _ in NOUNS)
PLURALS = tuple(p for _, p in NOUNS)
PLACES = (
    "market", "river", "garden", "forest", "castle", "church", "school", "bridge", "station",
    "harbor", "village", "library", "kitchen", "tower", "field", "lake", "hill", "palace",
    "temple", "farm",
)  # fmt: skip
ADJECTIVES = (
    "big", "small", "old", "young", "red", "green", "blue", "quiet", "loud", "happy", "sad",
    "tired", "hungry", "brave", "lazy", "clever", "calm", "wild", "dark", "bright", "cold",
    "warm", "tall", "short", "gentle",
)  # fmt: skip
VERBS = (
    "walked", "ran", "sat", "slept", "waited", "smiled", "laughed", "danced", "sang", "cried",
    "rested", "stood", "worked", "played", "jumped", "swam", "shouted", "whispered", "stayed",
    "left", "arrived", "returned", "paused", "prayed", "cooked", "read", "wrote", "painted",
    "hid", "fell",
)  # fmt: skip
PREPOSITIONS = ("near", "behind", "beside", "under", "above", "past", "by", "inside")
CONNECTIVES = (("and", "then"), ("because",), ("so",), ("but",), ("until",))
CAPITALS = {
    "france": "paris", "spain": "madrid", "italy": "rome", "japan": "tokyo", "egypt": "cairo",
    "peru": "lima", "china": "beijing", "russia": "moscow", "kenya": "nairobi",
    "chile": "santiago", "greece": "athens", "norway": "oslo", "cuba": "havana",
    "india": "delhi", "iran": "tehran", "mali": "bamako",
}  # fmt: skip
NONCE = (
    "zab", "kiv", "mup", "dex", "fol", "gri", "hap", "jun", "kel", "lom", "nax", "pim", "qor",
    "rud", "sev", "tib", "ulk", "vop", "wix", "yat", "zun", "bim", "cof", "dra", "eld", "fep",
    "gox", "hul", "ips", "jor", "kaz", "lun", "mip", "nob", "ovo", "pex", "quo", "riv", "sul",
    "tav", "uzi", "vel", "wab", "xem", "yol", "zim", "bax", "cur", "dol", "fiz", "gam", "hob",
    "jil", "kip", "lev", "mox", "nup", "pag", "rix", "sab",
)  # fmt: skip
FUNCTION_WORDS = ("the", "with", "he", "she", "is", "are", "capital", "of", "code", ".")

MECHANISMS = ("pronoun_gender", "number_agreement", "induction", "fact_lookup")


def vocabulary() -> tuple[str, ...]:
    """Every word of the language once, in a fixed order (the tokenizer's ids follow it)."""
    groups: Sequence[Iterable[str]] = (
        FUNCTION_WORDS, MALE_NAMES, FEMALE_NAMES, MALE_TITLES, FEMALE_TITLES, SINGULARS, PLURALS,
        PLACES, ADJECTIVES, VERBS, PREPOSITIONS, (w for c in CONNECTIVES for w in c),
        CAPITALS.keys(), CAPITALS.values(), NONCE,
    )  # fmt: skip
    words = tuple(w for g in groups for w in g)
    assert len(set(words)) == len(words), "a word belongs to two word classes"
    return words


@dataclass(frozen=True)
class Probe:
    """A prompt that stops where one mechanism fixes the next word.

    ``text`` is the prompt (words separated by spaces, no special tokens), ``target`` the one
    correct next word, ``foil`` the wrong answer the mechanism rules out (``None`` if none).
    """

    text: str
    target: str
    mechanism: str
    foil: str | None = None


# One sentence as words, plus the index of the word a mechanism decides and its foil.
@dataclass(frozen=True)
class _Sentence:
    words: tuple[str, ...]
    mechanism: str | None = None
    cut: int = -1
    foil: str | None = None


def _maybe_adj(rng: random.Random) -> list[str]:
    return [rng.choice(ADJECTIVES)] if rng.random() < 0.5 else []


def _gendered_subject(rng: random.Random, male: bool) -> list[str]:
    if rng.random() < 0.5:
        return [rng.choice(MALE_NAMES if male else FEMALE_NAMES)]
    return ["the", rng.choice(MALE_TITLES if male else FEMALE_TITLES)]


def _filler(rng: random.Random, male: bool | None = None) -> _Sentence:
    if male is None and rng.random() < 0.25:
        subj = ["the", *_maybe_adj(rng), rng.choice(SINGULARS)]
    else:
        subj = _gendered_subject(rng, rng.random() < 0.5 if male is None else male)
    place = ["the", *_maybe_adj(rng), rng.choice(PLACES)]
    return _Sentence((*subj, rng.choice(VERBS), rng.choice(PREPOSITIONS), *place, "."))


def _pronoun(rng: random.Random, male: bool | None = None) -> _Sentence:
    male = rng.random() < 0.5 if male is None else male
    words = [*_gendered_subject(rng, male), rng.choice(VERBS), rng.choice(PREPOSITIONS)]
    words += ["the", *_maybe_adj(rng), rng.choice(PLACES)]
    if rng.random() < 0.5:
        words += ["with", "the", *_maybe_adj(rng), rng.choice(rng.choice(NOUNS))]
    words += rng.choice(CONNECTIVES)
    cut = len(words)
    target, foil = ("he", "she") if male else ("she", "he")
    words += [target, rng.choice(VERBS), "."]
    return _Sentence(tuple(words), "pronoun_gender", cut, foil)


def _agreement(rng: random.Random, distractor_differs: bool | None = None) -> _Sentence:
    plural = rng.random() < 0.5
    if distractor_differs is None:
        distractor_differs = rng.random() < 0.5
    d_plural = plural != distractor_differs
    subject, distractor = rng.choice(NOUNS), rng.choice(NOUNS)
    words = ["the", subject[plural], rng.choice(PREPOSITIONS), "the", *_maybe_adj(rng)]
    words.append(distractor[d_plural])
    cut = len(words)
    target, foil = ("are", "is") if plural else ("is", "are")
    words += [target, rng.choice(ADJECTIVES), "."]
    return _Sentence(tuple(words), "number_agreement", cut, foil)


def _fact(rng: random.Random) -> _Sentence:
    country = rng.choice(list(CAPITALS))
    foil = rng.choice([c for k, c in CAPITALS.items() if k != country])
    words = ("the", "capital", "of", country, "is", CAPITALS[country], ".")
    return _Sentence(words, "fact_lookup", 5, foil)


def _code(run: tuple[str, ...], foil: str | None = None) -> _Sentence:
    return _Sentence(("code", *run, "."), "induction", 2, foil)


_FREE_KINDS = (_filler, _pronoun, _agreement, _fact)


def _free_sentence(rng: random.Random) -> _Sentence:
    return rng.choices(_FREE_KINDS, weights=(2, 3, 3, 1))[0](rng)


def _words(sentences: Iterable[_Sentence]) -> list[str]:
    return [w for s in sentences for w in s.words]


def _nonce_runs(rng: random.Random, n: int) -> list[tuple[str, ...]]:
    """``n`` runs of RUN_MIN..RUN_MAX NONCE words, no word used twice."""
    lengths = [rng.randint(RUN_MIN, RUN_MAX) for _ in range(n)]
    words = rng.sample(NONCE, sum(lengths))
    starts = [sum(lengths[:i]) for i in range(n)]
    return [tuple(words[a : a + k]) for a, k in zip(starts, lengths, strict=True)]


def _fill(rng: random.Random, budget: int) -> list[_Sentence]:
    """Free sentences drawn until the next one would not fit in ``budget`` words."""
    out: list[_Sentence] = []
    while True:
        s = _free_sentence(rng)
        if len(s.words) > budget:
            return out
        out.append(s)
        budget -= len(s.words)


def _repeat_text(rng: random.Random) -> str:
    """``code`` + a long run of NONCE words, twice: only copying predicts the second half."""
    run = tuple(rng.sample(NONCE, rng.randint(*REPEAT_LEN)))
    return " ".join(_words([_code(run), _code(run)]))


def _training_text(rng: random.Random) -> str:
    if rng.random() < REPEAT_TEXT_P:
        return _repeat_text(rng)
    # Mostly two runs per text, so copying "whatever followed the last code sentence" fails often
    # and only real induction (find the earlier ``code A``, copy what came next) predicts the
    # recalls.
    runs = _nonce_runs(rng, rng.choices((0, 1, 2), weights=RUN_COUNT_WEIGHTS)[0])
    mentions = [_code(r) for r in runs]
    recalls = [_code(r) for r in runs for _ in range(rng.choice(RECALLS))]
    while len(_words(mentions + recalls)) > MAX_WORDS:  # drop repeats, keep one recall per run
        recalls.remove(next(r for r in recalls if recalls.count(r) > 1))
    length = rng.randint(MAX_WORDS - 12 if runs else MIN_WORDS, MAX_WORDS)  # room for gaps
    order = _fill(rng, max(0, length - len(_words(mentions + recalls))))
    if not order and not mentions:
        order = [_free_sentence(rng)]
    # All sentences in a uniformly random order, except that each run's mention takes the earliest
    # of its run's slots: the gap between a mention and its recalls (other runs, free sentences)
    # varies as widely as in the probes, so no "copy the previous code sentence" shortcut holds.
    order += mentions + recalls
    rng.shuffle(order)
    for m in mentions:
        slots = [i for i, s in enumerate(order) if s.words == m.words]
        first = min(slots)
        j = next(i for i in slots if order[i] is m)
        order[first], order[j] = order[j], order[first]
    return " ".join(_words(order))


def training_corpus(seed: int, n_texts: int, exclude: Iterable[str] = ()) -> list[str]:
    """``n_texts`` texts drawn from the grammar with ``random.Random("corpus:{seed}")``.

    Texts that start with any prompt in ``exclude`` (e.g. the probe prompts) are redrawn, so
    held-out probes are never training prefixes.
    """
    assert n_texts >= 0, f"n_texts must be >= 0, got {n_texts}"
    rng = random.Random(f"corpus:{seed}")
    banned = {tuple(p.split()) for p in exclude}
    lengths = sorted({len(b) for b in banned})
    out: list[str] = []
    while len(out) < n_texts:
        text = _training_text(rng)
        words = tuple(text.split())
        if not any(words[:n] in banned for n in lengths):
            out.append(text)
    return out


def _probe(rng: random.Random, mechanism: str) -> Probe:
    context: list[_Sentence]
    if mechanism == "pronoun_gender":
        male = rng.random() < 0.5
        critical = _pronoun(rng, male)
        context = [_filler(rng, male=not male)]
    elif mechanism == "number_agreement":
        critical = _agreement(rng, distractor_differs=True)
        context = []
    elif mechanism == "induction":
        run, other = _nonce_runs(rng, 2)
        critical = _code(run, foil=other[1])
        context = [_code(run), _code(other)]
        rng.shuffle(context)
    elif mechanism == "fact_lookup":
        critical = _fact(rng)
        context = []
    else:
        raise ValueError(f"unknown mechanism {mechanism!r}; valid: {', '.join(MECHANISMS)}")
    budget = MAX_WORDS - len(critical.words) - len(_words(context))
    for _ in range(rng.randint(1, 3)):
        extra = _free_sentence(rng)
        if len(extra.words) <= budget:
            context.insert(rng.randint(0, len(context)), extra)
            budget -= len(extra.words)
    prompt = _words(context) + list(critical.words[: critical.cut])
    return Probe(" ".join(prompt), critical.words[critical.cut], mechanism, critical.foil)


def probe_prompts(seed: int, n_per_mechanism: int) -> list[Probe]:
    """``n_per_mechanism`` distinct probes for each mechanism, from
    ``random.Random("probes:{seed}")``."""
    assert n_per_mechanism >= 0, f"n_per_mechanism must be >= 0, got {n_per_mechanism}"
    rng = random.Random(f"probes:{seed}")
    out: list[Probe] = []
    for mechanism in MECHANISMS:
        seen: set[str] = set()
        while len(seen) < n_per_mechanism:
            probe = _probe(rng, mechanism)
            if probe.text not in seen:
                seen.add(probe.text)
                out.append(probe)
    return out


def overlapping_probes(probes: Iterable[Probe], corpus: Iterable[str]) -> list[Probe]:
    """The probes whose prompt is the start (in whole words) of some text in ``corpus``."""
    probes = list(probes)
    by_words = {tuple(p.text.split()): p for p in probes}
    lengths = sorted({len(k) for k in by_words})
    hits: dict[tuple[str, ...], Probe] = {}
    for text in corpus:
        words = tuple(text.split())
        for n in lengths:
            if words[:n] in by_words:
                hits[words[:n]] = by_words[words[:n]]
    return [p for p in probes if tuple(p.text.split()) in hits]


def write_probes(path: Path, probes: Iterable[Probe]) -> None:
    """One JSON object per line: text, target, mechanism, foil."""
    path.write_text("".join(json.dumps(asdict(p)) + "\n" for p in probes))


def read_probes(path: Path) -> list[Probe]:
    """Inverse of ``write_probes``."""
    return [Probe(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


# What each planted mechanism is, in plain words, and names people use for it. The demo recipe
# writes this into the run directory as ``behaviours.json`` (``spd_core.run``), which the server
# serves with the probe prompts.
BEHAVIOURS: dict[str, dict[str, object]] = {
    "pronoun_gender": {
        "description": (
            "Choosing the pronoun 'he' or 'she' to match the gender of the sentence's subject: "
            "after a connective (and then, because, so, but, until) the pronoun refers back to a "
            "male or female name or title such as 'john', 'mary', 'the king' or 'the queen', 4-10 "
            "words back, even when an earlier sentence has a subject of the other gender."
        ),
        "names": [
            "he/she choice",
            "pronoun gender",
            "gendered pronouns",
            "gender agreement",
            "pronoun resolution",
            "coreference",
            "referring back to a person",
            "male or female",
            "man or woman",
            "masculine or feminine",
            "his or her",
        ],
    },
    "number_agreement": {
        "description": (
            "Choosing the verb 'is' or 'are' to match the number of the sentence's subject: "
            "singular or plural as its first noun is, whatever the number of the distractor noun "
            "right before the verb, as in 'the keys near the old lamp are' and 'the dog behind the "
            "trees is'."
        ),
        "names": [
            "subject-verb agreement",
            "number agreement",
            "singular or plural verb",
            "is/are choice",
            "grammatical number",
            "agreement attraction",
            "one or many",
            "plurality of the subject",
            "verb form",
            "ignoring the nearest noun",
        ],
    },
    "induction": {
        "description": (
            "Continuing a run of made-up nonce words by copying from the context: after 'code' "
            "and a word seen earlier in the text comes the word that followed it then, as in "
            "'code zab kiv . code zab' -> 'kiv'. These words occur nowhere else, so only copying "
            "predicts them."
        ),
        "names": [
            "induction heads",
            "in-context copying",
            "repeating a sequence",
            "pattern completion",
            "copying repeated tokens",
            "nonsense word repetition",
            "invented words",
            "random tokens seen before",
            "in-context learning",
            "continuing a repeated sequence",
        ],
    },
    "fact_lookup": {
        "description": (
            "Recalling a country's capital city: after 'the capital of COUNTRY is' comes that "
            "country's capital, as in 'the capital of france is paris', a memorised fact stored "
            "in the weights, not copied from the context."
        ),
        "names": [
            "factual recall",
            "capital cities",
            "knowledge retrieval",
            "memorised associations",
            "country to capital lookup",
            "fact lookup",
            "world knowledge",
            "geography",
            "trivia",
        ],
    },
}
