"""Which of the run's behaviours a question is about, from what the agent can see through MCP.

Every mechanism tag gets a score, the sum of weighted pieces of evidence:

- a quoted single word that is one of the mechanism's answer tokens (a probe's target or foil):
  ``QUOTED_ANSWER`` / k, where k is the number of mechanisms sharing that token;
- a quoted phrase after which the model's most likely next token is one of its answer tokens:
  ``PREDICTED_ANSWER`` / k (only when every word of the phrase is known to the model);
- an unquoted question word that is one of its answer tokens ('he', 'is', ...): ``ANSWER_WORD`` / k;
- a question word whose stem occurs in its description, names or tag and in few other mechanisms':
  (M - k) / (M - 1) / k for M mechanisms (1 where the run has one), each stem once;
- the words of quoted material (phrases, and the sentences of search_dataset hits of quoted
  words) by how characteristic they are of its probe prompts: sum over words of df * df / sum(df)
  where df is the share of a mechanism's prompts holding the word, counted where that share of
  the total is at least half, capped at ``QUOTED_CONTEXT_CAP`` per quote.

Words are weighted, not dropped: 'is', 'he', 'of' count exactly as much as they are specific to
one mechanism. The best mechanism is chosen when its score reaches ``MIN_SCORE`` and beats the
next; otherwise the answer is None: the run has no behaviour that matches the question.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

QUOTED_ANSWER = 3.0
PREDICTED_ANSWER = 3.0
ANSWER_WORD = 1.0
QUOTED_CONTEXT_CAP = 1.5
MIN_SCORE = 2.0
MIN_PREDICTION_PROB = 0.2
UNKNOWN_TOKENS = frozenset({"<unk>", "[unk]", "<|unk|>"})

_WORD = re.compile(r"[a-z0-9]+")
_QUOTE = re.compile(r"(?<![\w])['\"‘“]([^'\"‘’“”]+?)['\"’”](?![\w])")
_SUFFIXES = ("ations", "ation", "ments", "ment", "ings", "ing", "ised", "ized", "ises", "izes",
             "ise", "ize", "ions", "ion", "ally", "al", "ers", "er", "ed", "es", "ly", "s", "e", "y")


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
    """The model's next-token guesses after a quoted phrase; `tokens` as the model read them."""

    text: str
    top: tuple[tuple[str, float], ...]
    tokens: tuple[str, ...] = ()


@dataclass(frozen=True)
class Evidence:
    probes: tuple[Probe, ...]
    behaviours: Mapping[str, Behaviour] = field(default_factory=dict)
    predictions: tuple[Prediction, ...] = ()
    search_hits: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # word -> snippets


@dataclass(frozen=True)
class BehaviourChoice:
    mechanism: str | None
    scores: dict[str, float]
    reason: str
    evidence: dict[str, tuple[str, ...]]  # mechanism -> what counted for it, in words


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def stem(word: str) -> str:
    """A crude stem: common English endings stripped while at least three letters remain."""
    w = word.lower()
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
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
    """What characterises each mechanism: answer tokens, prompt word shares, description stems."""

    def __init__(self, evidence: Evidence) -> None:
        self.tags = list(dict.fromkeys(p.mechanism for p in evidence.probes))
        self.tags += [t for t in evidence.behaviours if t not in self.tags]
        self.answers: dict[str, set[str]] = {t: set() for t in self.tags}
        counts: dict[str, dict[str, int]] = {t: {} for t in self.tags}
        n: dict[str, int] = dict.fromkeys(self.tags, 0)
        for p in evidence.probes:
            self.answers[p.mechanism].update(norm_token(a) for a in (p.target_token, p.foil) if a)
            n[p.mechanism] += 1
            for w in set(words(p.text)):
                counts[p.mechanism][w] = counts[p.mechanism].get(w, 0) + 1
        self.df = {t: {w: c / n[t] for w, c in counts[t].items()} for t in self.tags}
        self.stems: dict[str, set[str]] = {}
        for t in self.tags:
            b = evidence.behaviours.get(t)
            text = " ".join([t.replace("_", " ").replace("-", " "), *(b.names if b else ()),
                             b.description if b else ""])
            self.stems[t] = {stem(w) for w in words(text)}

    def answer_of(self, token: str) -> list[str]:
        return [t for t in self.tags if norm_token(token) in self.answers[t]]

    def stem_weight(self, s: str) -> dict[str, float]:
        having = [t for t in self.tags if s in self.stems[t]]
        m, k = len(self.tags), len(having)
        if not having:
            return {}
        w = 1.0 if m == 1 else (m - k) / (m - 1) / k
        return {t: w for t in having} if w > 0 else {}

    def context_weight(self, ws: set[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for w in ws:
            total = sum(self.df[t].get(w, 0.0) for t in self.tags)
            for t in self.tags:
                df = self.df[t].get(w, 0.0)
                if total and df / total >= 0.5:
                    out[t] = out.get(t, 0.0) + df * df / total
        return {t: min(v, QUOTED_CONTEXT_CAP) for t, v in out.items()}


def choose_behaviour(question: str, evidence: Evidence) -> BehaviourChoice:
    """The run's mechanism the question asks about, or None when no behaviour of the run matches."""
    prof = _Profile(evidence)
    if not prof.tags:
        return BehaviourChoice(None, {}, "The run describes no behaviours (no probe prompts), "
                               "so the question cannot be matched to one.", {})
    scores: dict[str, float] = dict.fromkeys(prof.tags, 0.0)
    why: dict[str, list[str]] = {t: [] for t in prof.tags}

    def add(tags: Sequence[str], weight: float, note: str) -> None:
        for t in tags:
            scores[t] += weight / len(tags)
            why[t].append(note)

    quotes = quoted_spans(question)
    single = {q.lower() for q in quotes if len(words(q)) == 1}
    for q in sorted(single):
        if tags := prof.answer_of(q):
            add(tags, QUOTED_ANSWER, f"the question quotes '{q}', one of its answer tokens")
    for pred in evidence.predictions:
        known = not any(norm_token(t) in UNKNOWN_TOKENS for t in pred.tokens)
        if not (known and pred.top and pred.top[0][1] >= MIN_PREDICTION_PROB):
            continue
        token = norm_token(pred.top[0][0])
        if tags := prof.answer_of(token):
            add(tags, PREDICTED_ANSWER,
                f"after '{pred.text}' the model predicts '{token}', one of its answer tokens")
    quoted_words = {w for q in quotes for w in words(q)}
    loose = [w for w in dict.fromkeys(words(_QUOTE.sub(" ", question))) if w not in quoted_words]
    for w in loose:
        if tags := prof.answer_of(w):
            add(tags, ANSWER_WORD, f"the question says '{w}', one of its answer tokens")
    matched: dict[str, list[str]] = {t: [] for t in prof.tags}
    for w in dict.fromkeys(loose + sorted(quoted_words)):
        for t, weight in prof.stem_weight(stem(w)).items():
            scores[t] += weight
            matched[t].append(w)
    for t, ws in matched.items():
        if ws:
            why[t].append("its description names " + ", ".join(f"'{w}'" for w in ws[:6]))
    contexts = [(q, set(words(q))) for q in quotes if len(words(q)) > 1]
    for word, snippets in evidence.search_hits.items():
        if prof.answer_of(word):
            continue  # an answer token already counted as such; its contexts span every mechanism
        sentences = [s for snip in snippets for s in snip.lower().split(".") if word in words(s)]
        if sentences:
            contexts.append((word, {w for s in sentences for w in words(s)} - {word.lower()}))
    for q, ws in contexts:
        for t, weight in prof.context_weight(ws).items():
            scores[t] += weight
            why[t].append(f"the words around '{q}' are typical of its probe prompts")
    scores = {t: round(v, 3) for t, v in scores.items()}
    return _decide(scores, {t: tuple(v) for t, v in why.items()}, evidence)


def _decide(scores: dict[str, float], why: dict[str, tuple[str, ...]],
            evidence: Evidence) -> BehaviourChoice:
    ranked = sorted(scores, key=lambda t: -scores[t])
    best = ranked[0]
    runner = ranked[1] if len(ranked) > 1 else None
    margin = scores[best] - (scores[runner] if runner else 0.0)
    listing = ", ".join(ranked)
    if scores[best] < MIN_SCORE:
        hint = (f"; the closest, '{best}', scores {scores[best]:.1f} of the {MIN_SCORE:.1f} needed"
                if scores[best] > 0 else "")
        return BehaviourChoice(None, scores, (
            f"No behaviour of this run matches the question: neither its words nor its quoted "
            f"examples point to any of {listing}{hint}."), why)
    if runner and margin <= 0:
        return BehaviourChoice(None, scores, (
            f"The question matches '{best}' and '{runner}' equally ({scores[best]:.1f} each), "
            f"so it does not say which behaviour of this run it is about."), why)
    about = evidence.behaviours.get(best)
    gist = f" ({_first_clause(about.description)})" if about else ""
    versus = f"; next is '{runner}' at {scores[runner]:.1f}" if runner else ""
    return BehaviourChoice(best, scores, (
        f"The question is about '{best}'{gist}: {'; '.join(why[best][:3])} "
        f"(score {scores[best]:.1f}{versus})."), why)


def _first_clause(description: str) -> str:
    text = description.split(":")[0].split(" as in ")[0].split(", as ")[0]
    return text[:1].lower() + text[1:].rstrip(". ")
