"""Grader on the hand-built bigram model: the known circuit scores high, random sets low, a whole
layer unspecific."""

import math
import random

import pytest

from spd_core.errors import InvalidInput
from spd_core.grader import grade_circuit, probes_from_prompts, rank_by_ci, search_circuit
from spd_core.keys import ComponentKey
from tests.core.bigram_model import STRENGTH, WORDS, bigram_model, word_tokenizer

PROMPTS = [
    {"text": "x e a", "target_token": "b", "mechanism": "ab"},
    {"text": "e a", "target_token": "b", "mechanism": "ab"},
    {"text": "x x e a", "target_token": "b", "mechanism": "ab", "foil": "d"},
    {"text": "x c", "target_token": "d", "mechanism": "cd"},
    {"text": "e b c", "target_token": "d", "mechanism": "cd", "foil": "b"},
]
KNOWN = [ComponentKey("lin1", 1), ComponentKey("lin2", 1)]


@pytest.fixture(scope="module")
def setup():
    return bigram_model(), probes_from_prompts(PROMPTS, word_tokenizer())


def test_known_circuit_is_necessary_sufficient_and_specific(setup) -> None:
    model, probes = setup
    g = grade_circuit(model, probes, "ab", KNOWN)
    p = math.exp(STRENGTH) / (math.exp(STRENGTH) + len(WORDS) - 1)
    uniform = 1 / len(WORDS)
    assert g.n_probes == 3 and g.accuracy_before == 1.0
    assert g.necessity == pytest.approx((p - uniform) / p, rel=1e-4)
    assert g.accuracy_removed == 0.0
    assert g.sufficiency == pytest.approx(1.0, abs=1e-5) and g.accuracy_kept == 1.0
    assert g.specificity == pytest.approx(1.0, abs=1e-6) and set(g.other_drops) == {"cd"}


def test_search_beats_random_sets_and_a_whole_layer_is_unspecific(setup) -> None:
    model, probes = setup
    ranked = rank_by_ci(model, probes, "ab")
    assert {k for k, _ in ranked[:2]} == set(KNOWN)
    found = search_circuit(model, probes, "ab", max_size=4)
    assert set(KNOWN) <= set(found)
    best = grade_circuit(model, probes, "ab", found)
    rng = random.Random(0)
    everything = [ComponentKey(layer, c) for layer in ("lin1", "lin2") for c in range(len(WORDS))]
    for _ in range(5):
        rand = rng.sample([k for k in everything if k not in KNOWN], len(found))
        g = grade_circuit(model, probes, "ab", rand)
        assert g.necessity < best.necessity - 0.5 and g.sufficiency < best.sufficiency - 0.5
    layer = grade_circuit(model, probes, "ab", [k for k in everything if k.layer == "lin1"])
    assert layer.necessity == pytest.approx(best.necessity, rel=1e-4)
    assert layer.specificity is not None and best.specificity is not None
    assert layer.specificity < best.specificity - 0.5
    with pytest.raises(InvalidInput, match="valid: ab, cd"):
        grade_circuit(model, probes, "induction", KNOWN)
