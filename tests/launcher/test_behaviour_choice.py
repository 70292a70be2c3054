"""choose_behaviour: the pure chooser on evidence built by hand, then every question of
bench/questions.jsonl through a real MCP server process of the demo run."""

from __future__ import annotations

import pytest

from bench.bench_behaviour import accuracy, choose_all, is_right, load_questions
from spd_mcp.launcher.agents.behaviour_choice import (
    MIN_SCORE,
    Behaviour,
    Evidence,
    Prediction,
    Probe,
    choose_behaviour,
    quoted_spans,
    stem,
)

PROBES = (
    Probe("the dogs near the cat", "are", "agreement", "is"),
    Probe("the dog near the cats", "is", "agreement", "are"),
    Probe("mary sat . the king ran so", "he", "pronoun", "she"),
    Probe("the capital of peru is", "lima", "capital", "oslo"),
)
BEHAVIOURS = {
    "agreement": Behaviour(
        "Choosing 'is' or 'are' to match a singular or plural subject.", ("subject-verb agreement",)
    ),
    "pronoun": Behaviour("Choosing 'he' or 'she' to match the subject's gender."),
    "capital": Behaviour("Recalling a country's capital city.", ("factual recall",)),
}
EVIDENCE = Evidence(PROBES, BEHAVIOURS)


def test_quoted_answer_tokens_decide_even_for_words_a_stop_list_would_drop() -> None:
    choice = choose_behaviour("Why 'are' rather than 'is' here?", EVIDENCE)
    assert choice.mechanism == "agreement", choice
    # 3 per quoted answer token, 2 for naming both alternatives; the description's is/are are shared
    # with no other mechanism, so they add (M - k) / (M - 1) / k = 1 each (no background given).
    assert choice.scores["agreement"] == pytest.approx(3 + 3 + 2 + 1 + 1)
    assert "quotes 'are' and 'is'" in choice.reason


def test_the_models_prediction_on_a_quoted_phrase_is_evidence() -> None:
    ev = Evidence(PROBES, {}, (Prediction("the capital of mali is", (("lima", 0.9),), ("the",)),))
    choice = choose_behaviour("What happens after 'the capital of mali is'?", ev)
    assert choice.mechanism == "capital" and "predicts 'lima'" in choice.reason
    with_pred = choose_behaviour("What happens after 'the capital of mali is'?", ev).scores[
        "capital"
    ]
    without = choose_behaviour(
        "What happens after 'the capital of mali is'?", Evidence(PROBES)
    ).scores["capital"]
    assert with_pred == pytest.approx(without + 3)
    # a phrase with a word the model does not know: its prediction is not evidence
    unknown = Evidence(
        PROBES, {}, (Prediction("the capital of mali is", (("lima", 0.9),), ("<unk>",)),)
    )
    assert (
        choose_behaviour("What happens after 'the capital of mali is'?", unknown).scores["capital"]
        == without
    )


def test_a_quoted_sentence_ending_in_an_answer_counts_through_its_prefix() -> None:
    full = Prediction("the cats near the dog are", (("red", 0.5),), ("the",))
    prefix = Prediction("the cats near the dog", (("is", 0.7),), ("the",), completes="are")
    choice = choose_behaviour(
        "Explain 'the cats near the dog are'.", Evidence(PROBES, {}, (full, prefix))
    )
    assert choice.mechanism == "agreement" and "(the quote ends in 'are')" in choice.reason
    base = choose_behaviour("Explain 'the cats near the dog are'.", Evidence(PROBES, {}, (full,)))
    assert choice.scores["agreement"] == pytest.approx(base.scores["agreement"] + 3)
    # when the whole quote already predicts an answer, its prefix adds nothing more
    cap = Prediction("the capital of peru is", (("lima", 0.9),), ("the",))
    cap_prefix = Prediction("the capital of peru", (("is", 0.9),), ("the",), completes="is")
    both = choose_behaviour(
        "Why 'the capital of peru is'?", Evidence(PROBES, {}, (cap_prefix, cap))
    )
    only = choose_behaviour("Why 'the capital of peru is'?", Evidence(PROBES, {}, (cap,)))
    assert both.scores == only.scores


def test_a_question_about_no_behaviour_of_the_run_gets_none() -> None:
    for q in ("How does the model do arithmetic?", "Which components detect sentiment?"):
        choice = choose_behaviour(q, EVIDENCE)
        assert choice.mechanism is None and choice.reason.startswith("No behaviour of this run"), (
            choice
        )
        assert max(choice.scores.values()) < MIN_SCORE


def test_common_background_words_weigh_less_than_rare_ones() -> None:
    background = ("the subject of a tool", "the subject here", "a subject")
    plain = choose_behaviour("how is the subject chosen", EVIDENCE)
    damped = choose_behaviour(
        "how is the subject chosen", Evidence(PROBES, BEHAVIOURS, background=background)
    )
    assert damped.scores["agreement"] < plain.scores["agreement"]


def test_an_unquoted_word_typical_of_one_behaviours_prompts_counts_by_its_rarity() -> None:
    question = "What do you know about peru?"  # no other word of it is in any description
    choice = choose_behaviour(question, EVIDENCE)
    # 'peru' is in every 'capital' prompt and no other: df * df / sum of df = 1 * 1 / 1
    assert choice.scores == {"agreement": 0.0, "pronoun": 0.0, "capital": pytest.approx(1.0)}
    assert "context: the question's words" in choice.evidence["capital"]
    # a word every background text holds says nothing (rarity 1 - 2 * 1, floored at 0)
    common = Evidence(PROBES, BEHAVIOURS, background=("peru here", "peru there"))
    assert choose_behaviour(question, common).scores["capital"] == 0.0


def test_a_tie_is_no_choice_and_a_run_without_probes_has_none() -> None:
    ev = Evidence((Probe("a", "x", "m1"), Probe("b", "x", "m2")))
    assert choose_behaviour("Why 'x'?", ev).mechanism is None
    assert choose_behaviour("Why 'x'?", Evidence(())).mechanism is None


def test_quotes_and_stems() -> None:
    assert quoted_spans("the model's choice of 'he' after \"the king ran so\"") == [
        "he",
        "the king ran so",
    ]
    assert stem("countries") == stem("country") != stem("count")
    assert stem("copying") == stem("copies") == stem("copied") == stem("copy")


@pytest.mark.slow
def test_the_question_set_through_a_real_server_of_the_demo_run() -> None:
    rows = load_questions()
    assert len(rows) >= 32 and sum(r["expected"] == "none" for r in rows) >= 6
    choices = choose_all(r["question"] for r in rows)
    wrong = [
        (r["id"], r["question"], c.mechanism, c.reason)
        for r, c in zip(rows, choices, strict=True)
        if not is_right(r, c)
    ]
    assert len(wrong) <= 0.1 * len(rows), (accuracy(rows, choices), wrong)
    nones = [
        (r["id"], c.mechanism)
        for r, c in zip(rows, choices, strict=True)
        if r["expected"] == "none"
    ]
    # blind4 (written without sight of the chooser) has two "none" questions the chooser maps to
    # a behaviour (occupational gender bias quoting 'she' and 'he'; copying Python variable names)
    assert sum(m is None for _, m in nones) >= 0.9 * len(nones), nones
    for c in choices:
        assert c.reason.endswith(".") and len(c.reason) < 700 and "\n" not in c.reason
