"""Which of the run's behaviours a question is about, from what the agent can see through MCP.

Each mechanism tag gets a score, the sum of weighted pieces of evidence (k: how many mechanisms
share the piece, which divides its weight among them):

- a quoted single word that is one of its answer tokens (a probe's target or foil): ``QUOTED``/k;
- a quoted phrase after which the model's most likely next token is one of its answer tokens:
  ``PREDICTED``/k (only when the model knows every word of the phrase); or, when the whole
  phrase predicts none, a quoted sentence that ends in one of its answer tokens and without that
  last word makes the model predict one of them (the right one or its foil);
- an unquoted word that is one of its answer tokens ('he', 'is'): ``LOOSE``/k times the word's
  rarity, plus ``PAIR`` when the question names two or more of its answer tokens ('is' ... 'are');
- a name of the behaviour (its tag or one of its names) whose words all occur
  within ``NAME_WINDOW`` words of the question: ``NAMED``/k, times the word's rarity when the
  name is one word;
- each question word whose stem occurs in its description, names or tag: (M - k) / (M - 1) / k
  for M mechanisms (1 when the run has one), times the word's rarity;
- the words of quoted phrases, and the sentences around quoted words in search_dataset hits, by
  how typical they are of its probe prompts (df * df / sum of df over mechanisms, where df is the
  share of a mechanism's prompts holding the word and that share of the sum is at least half),
  at most ``CONTEXT_CAP`` per quote; the question's unquoted words the same way, each times its
  rarity, at most ``CONTEXT_CAP`` in all.

Words are weighted, never dropped. Rarity is 1 - 2 * (share of the background texts, the
server's tool descriptions, that hold the word), floored at 0: 'the' and 'components' say little
about which behaviour is meant, 'gender' and 'plural' say much. Answer tokens quoted, or predicted
by the model, count in full whatever their rarity. The best mechanism is chosen when its score
reaches ``MIN_SCORE`` and beats the next; otherwise the answer is None: no behaviour of the run
matches the question.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

QUOTED = 3.0
PREDICTED = 3.0
LOOSE = 1.0
PAIR = 2.0
NAMED = 2.0
NAME_WINDOW = 4
CONTEXT_CAP = 1.5
MIN_SCORE = 2.0
MIN_PREDICTION_PROB = 0.2
UNKNOWN_TOKENS = frozenset({"<unk>", "[unk]", "<|unk|>"})

_WORD = re.compile(r"[a-z0-9]+")
_QUOTE = re.compile(r"(?<!\w)['\"‘“]([^'\"‘’“”]+?)['\"’”](?!\w)")
_SUFFIXES = (
    "ations",
    "ation",
    "ments",
    "ment",
    "ings",
    "ing",
    "ised",
    "ized",
    "ises",
    "izes",
    "ise",
    "ize",
    "ions",
    "ion",
    "ity",
    "ally",
    "al",
    "ers",
    "er",
    "ed",
    "es",
    "ly",
    "s",
    "e",
    "y",
)


@dataclass(frozen=True)
class Probe:
    text: str
    target_token: str
    mechanism: str
    foil: str | None = None


@dataclass(frozen=True)
class Behaviour:
    description: str
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prediction:
    """The model's next-token guesses after a quoted phrase; `tokens` as the model read it.

    `completes`: set when `text` is a quoted phrase without its last word, which it holds.
    """

    text: str
    top: tuple[tuple[str, float], ...]
    tokens: tuple[str, ...] = ()
    completes: str | None = None


@dataclass(frozen=True)
class Evidence:
    probes: tuple[Probe, ...]
    behaviours: Mapping[str, Behaviour] = field(default_factory=dict)
    predictions: tuple[Prediction, ...] = ()
    search_hits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # word -> snippets
    background: tuple[str, ...] = ()  # general texts about the model (the tools' descriptions)


@dataclass(frozen=True)
class BehaviourChoice:
    mechanism: str | None
    scores: dict[str, float]
    reason: str  # one sentence: the verdict, a colon, then `grounds`
    evidence: dict[str, tuple[str, ...]]  # mechanism -> what counted for it, in words
    grounds: str = ""  # the reason without its verdict, for callers that state the verdict


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def stem(word: str) -> str:
    """A crude stem: common English endings stripped while at least three letters remain."""
    w = word.lower()
    if w.endswith(("ies", "ied")) and len(w) > 4:  # countries, copied
        w = w[:-3] + "y"
    elif w.endswith("lution"):  # resolution -> resolv(e), evolution -> evolv(e)
        w = w[:-5] + "ve"
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            if w.endswith(suffix) and len(w) - len(suffix) >= 3:
                w, changed = w[: -len(suffix)], True
                break
    return w


def quoted_spans(question: str) -> list[str]:
    """The quoted parts of a question ('...', "...", curly quotes), stripped, in order."""
    return [m.group(1).strip() for m in _QUOTE.finditer(question) if m.group(1).strip()]


def norm_token(token: str) -> str:
    return token.replace("Ġ", " ").replace("▁", " ").strip().lower()


class _Profile:
    """What characterises each mechanism: answers, prompt word shares, description stems."""

    def __init__(self, evidence: Evidence) -> None:
        self.tags = list(dict.fromkeys(p.mechanism for p in evidence.probes))
        self.tags += [t for t in evidence.behaviours if t not in self.tags]
        self.answers: dict[str, set[str]] = {t: set() for t in self.tags}
        counts: dict[str, dict[str, int]] = {t: {} for t in self.tags}
        n: dict[str, int] = dict.fromkeys(self.tags, 0)
        for p in evidence.probes:
            target, foil = norm_token(p.target_token), norm_token(p.foil or "")
            self.answers[p.mechanism].update(a for a in (target, foil) if a)
            n[p.mechanism] += 1
            for w in set(words(p.text)):
                counts[p.mechanism][w] = counts[p.mechanism].get(w, 0) + 1
        self.df = {t: {w: c / n[t] for w, c in counts[t].items()} for t in self.tags}
        self.stems: dict[str, set[str]] = {}
        for t in self.tags:
            b = evidence.behaviours.get(t)
            text = " ".join(
                [
                    t.replace("_", " ").replace("-", " "),
                    *(b.names if b else ()),
                    b.description if b else "",
                ]
            )
            self.stems[t] = {stem(w) for w in words(text)}
        self.names: dict[str, set[frozenset[str]]] = {}
        for t in self.tags:
            b = evidence.behaviours.get(t)
            tag_words = words(t.replace("_", " ").replace("-", " "))
            phrases = [" ".join(tag_words), *(b.names if b else ())]
            self.names[t] = {frozenset(stem(w) for w in words(p)) for p in phrases if words(p)}
        self._docs = [{stem(w) for w in words(d)} for d in evidence.background]

    def rarity(self, word: str) -> float:
        if not self._docs:
            return 1.0
        share = sum(stem(word) in d for d in self._docs) / len(self._docs)
        return max(0.0, 1.0 - 2.0 * share)

    def answer_of(self, token: str) -> list[str]:
        return [t for t in self.tags if norm_token(token) in self.answers[t]]

    def stem_weight(self, word: str) -> dict[str, float]:
        s = stem(word)
        having = [t for t in self.tags if s in self.stems[t]]
        m, k = len(self.tags), len(having)
        if not having:
            return {}
        w = (1.0 if m == 1 else (m - k) / (m - 1) / k) * self.rarity(word)
        return {t: w for t in having} if w > 0 else {}

    def context_weight(self, ws: set[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for w in ws:
            total = sum(self.df[t].get(w, 0.0) for t in self.tags)
            for t in self.tags:
                df = self.df[t].get(w, 0.0)
                if total and df / total >= 0.5:
                    out[t] = out.get(t, 0.0) + df * df / total
        return {t: min(v, CONTEXT_CAP) for t, v in out.items()}


class _Tally:
    """Scores per mechanism and, per kind of evidence, the items that gave them."""

    def __init__(self, tags: list[str]) -> None:
        self.scores = dict.fromkeys(tags, 0.0)
        self.items: dict[str, dict[str, list[str]]] = {t: {} for t in tags}

    def add(self, tags: list[str], weight: float, kind: str, item: str) -> None:
        for t in tags:
            self.scores[t] += weight / len(tags)
            bucket = self.items[t].setdefault(kind, [])
            if item not in bucket:
                bucket.append(item)


def choose_behaviour(question: str, evidence: Evidence) -> BehaviourChoice:
    """The run's mechanism the question asks about, or None when no behaviour of the run matches."""
    prof = _Profile(evidence)
    if not prof.tags:
        return _choice(
            None,
            {},
            "No behaviour of this run matches the question",
            "the run has no probe prompts or behaviour descriptions",
            {},
        )
    tally = _Tally(prof.tags)
    quotes = quoted_spans(question)
    quoted_words = {w for q in quotes for w in words(q)}
    single = [q.lower() for q in dict.fromkeys(quotes) if len(words(q)) == 1]
    for q in single:
        if tags := prof.answer_of(q):
            tally.add(tags, QUOTED, "quoted", q)
    answered: set[str] = set()
    for pred in sorted(evidence.predictions, key=lambda p: p.completes is not None):
        known = not any(norm_token(t) in UNKNOWN_TOKENS for t in pred.tokens)
        if not (known and pred.top and pred.top[0][1] >= MIN_PREDICTION_PROB):
            continue
        token = norm_token(pred.top[0][0])
        tags = prof.answer_of(token)
        if pred.completes is not None:  # the sentence ends in an answer the model weighs too
            if f"{pred.text} {pred.completes}" in answered:
                continue
            tags = [t for t in tags if t in prof.answer_of(pred.completes)]
        if tags:
            answered.add(pred.text)
            ends = f" (the quote ends in '{pred.completes}')" if pred.completes else ""
            tally.add(tags, PREDICTED, "predicted", f"'{token}' after '{pred.text}'{ends}")
    loose = [w for w in dict.fromkeys(words(_QUOTE.sub(" ", question))) if w not in quoted_words]
    for w in loose:
        if (tags := prof.answer_of(w)) and prof.rarity(w) > 0:
            tally.add(tags, LOOSE * prof.rarity(w), "loose", w)
    named = set(loose) | set(single)
    for t in prof.tags:
        if len(alternatives := sorted(named & prof.answers[t])) >= 2:
            tally.add([t], PAIR, "pair", " and ".join(f"'{w}'" for w in alternatives[:3]))
    said = [stem(w) for w in words(question)]
    windows = [frozenset(said[i : i + NAME_WINDOW]) for i in range(len(said))]
    for name in {n for t in prof.tags for n in prof.names[t]}:
        if any(name <= w for w in windows):
            tags = [t for t in prof.tags if name in prof.names[t]]
            weight = NAMED * (prof.rarity(next(iter(name))) if len(name) == 1 else 1.0)
            if weight > 0:
                tally.add(tags, weight, "named", " ".join(sorted(name)))
    for w in dict.fromkeys(loose + sorted(quoted_words)):
        for t, weight in prof.stem_weight(w).items():
            tally.add([t], weight, "described" if weight >= 0.5 else "faint", w)
    contexts = [(q, set(words(q))) for q in quotes if len(words(q)) > 1]
    for word, snippets in evidence.search_hits.items():
        if prof.answer_of(word):
            continue  # already counted as an answer token; its contexts span every mechanism
        sentences = [s for snip in snippets for s in snip.lower().split(".") if word in words(s)]
        if sentences:
            contexts.append((word, {w for s in sentences for w in words(s)} - {word.lower()}))
    for q, ws in contexts:
        for t, weight in prof.context_weight(ws).items():
            tally.add([t], weight, "context", q)
    own: dict[str, float] = {}  # the question's words typical of the prompts ('capital'), by rarity
    for w in loose:
        for t, weight in prof.context_weight({w}).items():
            own[t] = own.get(t, 0.0) + weight * prof.rarity(w)
    for t, weight in own.items():
        if weight > 0:
            tally.add([t], min(weight, CONTEXT_CAP), "context", "the question's words")
    return _decide(tally, evidence)


def _quote_list(items: list[str]) -> str:
    quoted = [f"'{i}'" for i in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _because(items: dict[str, list[str]]) -> str:
    def answers(verb: str, ws: list[str]) -> str:
        return (
            f"it {verb} {_quote_list(ws)}, "
            + ("an answer token" if len(ws) == 1 else "answer tokens")
            + " of this behaviour"
        )

    parts = []
    if items.get("named"):
        parts.append(f"it names the behaviour ({_quote_list(items['named'])})")
    if items.get("quoted"):
        parts.append(answers("quotes", items["quoted"]))
    if items.get("predicted"):
        parts.append("the model predicts " + "; ".join(items["predicted"][:2]))
    if items.get("pair"):
        parts.append(f"it names the alternatives {items['pair'][0]}")
    elif items.get("loose"):
        parts.append(answers("says", items["loose"]))
    if described := items.get("described", [])[:5]:
        parts.append(
            f"{'its words' if len(described) > 1 else 'its word'} {_quote_list(described)} "
            f"{'occur' if len(described) > 1 else 'occurs'} in the behaviour's description"
        )
    if items.get("context"):
        parts.append(
            f"the words in and around {_quote_list(items['context'][:2])} are typical "
            "of its probe prompts"
        )
    return "; ".join(parts) if parts else "only faint matches"


def _decide(tally: _Tally, evidence: Evidence) -> BehaviourChoice:
    scores = {t: round(v, 3) for t, v in tally.scores.items()}
    why = {
        t: tuple(f"{k}: {', '.join(v)}" for k, v in items.items())
        for t, items in tally.items.items()
    }
    ranked = sorted(scores, key=lambda t: -scores[t])
    best, runner = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    if scores[best] < MIN_SCORE:
        near = (
            f"; the nearest, '{best}', scores {scores[best]:.1f} where {MIN_SCORE:.1f} is needed"
            if scores[best] > 0
            else ""
        )
        return _choice(
            None,
            scores,
            "No behaviour of this run matches the question",
            (
                f"neither its words nor its quoted examples point to any of "
                f"{', '.join(sorted(scores))}{near}"
            ),
            why,
        )
    if runner and scores[runner] >= scores[best]:
        return _choice(
            None,
            scores,
            "The question does not say which behaviour it is about",
            (f"it fits '{best}' and '{runner}' equally well ({scores[best]:.1f} each)"),
            why,
        )
    about = evidence.behaviours.get(best)
    gist = f" ({_gist(about.description)})" if about else ""
    versus = f" against {scores[runner]:.1f} for '{runner}'" if runner else ""
    return _choice(
        best,
        scores,
        f"The question is about '{best}'{gist}",
        (f"{_because(tally.items[best])} (score {scores[best]:.1f}{versus})"),
        why,
    )


def _choice(
    mechanism: str | None,
    scores: dict[str, float],
    verdict: str,
    grounds: str,
    why: dict[str, tuple[str, ...]],
) -> BehaviourChoice:
    return BehaviourChoice(mechanism, scores, f"{verdict}: {grounds}.", why, grounds)


def _gist(description: str, limit: int = 100) -> str:
    """The description up to its first colon or full stop, at most `limit` characters."""
    text = re.split(r"[:;]|\.\s", description.strip(), maxsplit=1)[0].rstrip(". ")
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0] + "..."
    return text[:1].lower() + text[1:]
