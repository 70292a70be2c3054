"""Validation of claimed circuits: ground truth on a TMS-like toy and a bigram LM, a shortcut
rejected, and the numbers checked against the grader and against weights edited by hand."""

import pytest
import torch

from spd_core.analysis.ablation import TargetPasses
from spd_core.analysis.validation import Probe, ValidationConfig, bootstrap, validate
from spd_core.errors import InvalidInput
from spd_core.grader import grade_circuit, probes_from_prompts
from spd_core.keys import ComponentKey
from tests.core.analysis.tms_like import tms_like
from tests.core.bigram_model import BIGRAMS, WORDS, bigram_model, word_tokenizer

SMALL = ValidationConfig(min_examples=3, n_bootstrap=400)


def _tms_probes(n_features: int = 5) -> dict[int, list[Probe]]:
    """Feature i alone at three strengths: the toy should make output i the largest."""
    return {
        i: [
            Probe([], i, f"feature{i}", features=[a if j == i else 0.0 for j in range(n_features)])
            for a in (2.0, 3.0, 4.0)
        ]
        for i in range(n_features)
    }


def _claim(c: int) -> list[ComponentKey]:
    return [ComponentKey("linear1", c), ComponentKey("linear2", c)]


def test_tms_feature_component_is_necessary_specific_and_sufficient_and_another_is_not() -> None:
    model, probes = tms_like(n_features=5), _tms_probes()
    others = [p for j, ps in probes.items() if j != 2 for p in ps]
    right = validate(model, probes[2], others, _claim(2), config=SMALL)
    assert (right.necessity, right.specificity, right.sufficiency) == ("holds", "holds", "holds")
    det = right.regimes["deterministic"]
    assert det.broken == 1.0 and det.accuracy_kept.mean == 1.0 and det.leak == 0.0
    assert right.distinct_answers == 1 and right.n_examples == 3 and right.n_others == 12
    wrong = validate(model, probes[2], others, _claim(1), config=SMALL)
    assert wrong.necessity == "fails" and wrong.sufficiency == "fails"
    assert wrong.regimes["deterministic"].accuracy_kept.mean == 0.0
    # specificity per behaviour: removing feature 1's component harms feature 1 only, and the
    # per-behaviour means (3 examples each) average back to the overall specificity
    for regime in ("deterministic", "stochastic"):
        by, spec = wrong.regimes[regime].specificity_by, wrong.regimes[regime].specificity
        assert sorted(by) == ["feature0", "feature1", "feature3", "feature4"]
        assert spec is not None and sum(by.values()) / 4 == pytest.approx(spec.mean)
        assert by["feature1"] < 0.5 and min(v for t, v in by.items() if t != "feature1") > 0.9
    assert right.regimes["adversarial"].specificity_by == {}


BIGRAM_PROMPTS = [
    {"text": t, "target_token": "b", "mechanism": "ab"}
    for t in ("e a", "x e a", "c e a", "x x a", "e e a", "d a")
] + [
    {"text": t, "target_token": "d", "mechanism": "cd"}
    for t in ("x c", "e b c", "a c", "x x c", "e c", "b c")
]


@pytest.fixture(scope="module")
def bigram():
    return bigram_model(), probes_from_prompts(BIGRAM_PROMPTS, word_tokenizer())


def test_a_shortcut_that_holds_on_its_own_prompt_is_rejected_on_held_out_ones(bigram) -> None:
    model, probes = bigram
    # "the next word after the last one": found on 'e a' -> b, where the a->b pair alone
    # suffices ...
    shortcut = [ComponentKey("lin1", 1), ComponentKey("lin2", 1)]
    own = validate(
        model, [probes[0]], [], shortcut, config=ValidationConfig(min_examples=1, n_bootstrap=200)
    )
    assert own.regimes["deterministic"].accuracy_kept.mean == 1.0
    # ... but on held-out examples of the same behaviour with other answers it keeps answering b
    held_out = probes[1:]
    v = validate(model, held_out, [], shortcut, config=SMALL)
    det = v.regimes["deterministic"]
    assert v.distinct_answers == 2 and det.distinct_answers_kept == 1
    assert det.accuracy_kept.mean == pytest.approx(5 / 11)
    assert det.sufficiency is not None and det.sufficiency.mean <= 0.0
    assert v.sufficiency == "fails" and v.necessity != "holds"
    both = [*shortcut, ComponentKey("lin1", 3), ComponentKey("lin2", 3)]
    assert validate(model, held_out, [], both, config=SMALL).sufficiency == "holds"


def _hand_logits(
    ids: list[int], keep: set[int] | None = None, remove: set[int] = frozenset()
) -> torch.Tensor:
    """Second route: the bigram table with columns zeroed by hand (its components are its
    columns)."""
    v = len(WORDS)
    w2 = torch.zeros(v, v)
    for src, dst in BIGRAMS.items():
        w2[dst, src] = 6.0
    cols = set(range(v)) - set(remove) if keep is None else keep
    mask = torch.tensor([float(c in cols) for c in range(v)])
    return (w2 * mask)[:, ids[-1]] * mask[ids[-1]]


def test_validation_numbers_equal_the_grader_and_a_hand_computation(bigram) -> None:
    model, probes = bigram
    claim = [ComponentKey("lin1", 1), ComponentKey("lin2", 1)]
    ab = [p for p in probes if p.mechanism == "ab"]
    cd = [p for p in probes if p.mechanism == "cd"]
    v = validate(
        model,
        ab,
        cd,
        claim,
        config=ValidationConfig(min_examples=3, regimes=("deterministic", "stochastic")),
    )
    for regime in ("deterministic", "stochastic"):
        g = grade_circuit(model, probes, "ab", claim, regime=regime)
        r = v.regimes[regime]
        assert r.necessity.mean == pytest.approx(g.necessity, abs=1e-9)
        assert 1 - r.broken == pytest.approx(g.accuracy_removed, abs=1e-9)
        assert r.accuracy_kept.mean == pytest.approx(g.accuracy_kept, abs=1e-9)
        assert r.prob_kept == pytest.approx(g.sufficiency, abs=1e-9)
        assert r.specificity is not None and r.specificity.mean == pytest.approx(
            g.specificity, abs=1e-9
        )
    det = v.regimes["deterministic"]
    for probe, removed, kept in zip(ab, det.removed, det.kept, strict=True):
        p_before = float(_hand_logits(probe.token_ids).softmax(-1)[probe.target])
        assert removed.p_before == pytest.approx(p_before, rel=1e-5)
        assert removed.p_after == pytest.approx(
            float(_hand_logits(probe.token_ids, remove={1}).softmax(-1)[probe.target]), rel=1e-5
        )
        assert kept.p_after == pytest.approx(
            float(_hand_logits(probe.token_ids, keep={1}).softmax(-1)[probe.target]), rel=1e-5
        )


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_examples() -> None:
    few = bootstrap([1.0, 0.0, 1.0, 1.0], n_resamples=2000)
    many = bootstrap([1.0, 0.0, 1.0, 1.0] * 25, n_resamples=2000)
    assert few.mean == many.mean == 0.75
    assert few.low <= 0.75 <= few.high and many.low <= 0.75 <= many.high
    assert many.high - many.low < few.high - few.low
    assert bootstrap([0.5] * 10).low == bootstrap([0.5] * 10).high == 0.5


def test_too_few_examples_are_inconclusive_and_bad_input_says_what_is_valid(bigram) -> None:
    model, probes = bigram
    claim = [ComponentKey("lin1", 1), ComponentKey("lin2", 1)]
    v = validate(model, probes[:2], probes[6:], claim)
    assert (v.necessity, v.sufficiency, v.specificity) == ("inconclusive",) * 3
    assert any("at least 8" in n for n in v.notes)
    with pytest.raises(
        InvalidInput,
        match="regimes must be a non-empty subset of deterministic, stochastic, adversarial",
    ):
        validate(model, probes[:2], (), claim, config=ValidationConfig(regimes=("lucky",)))  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="give at least one component"):
        validate(model, probes[:2])


def test_a_shared_cache_of_target_passes_changes_no_number_and_stays_within_its_bound(
    bigram,
) -> None:
    model, probes = bigram
    ab, cd = [p for p in probes if p.mechanism == "ab"], [p for p in probes if p.mechanism == "cd"]
    cache = TargetPasses()
    for comps in ([ComponentKey("lin1", 1)], [ComponentKey("lin1", 3), ComponentKey("lin2", 3)]):
        fresh = validate(model, ab, cd, comps, config=SMALL)
        for _ in range(2):  # the second call reads every pass from the cache
            cached = validate(model, ab, cd, comps, config=SMALL, passes=cache)
            for r, n in fresh.regimes.items():
                assert cached.regimes[r].removed == n.removed and cached.regimes[r].kept == n.kept
                assert cached.regimes[r].others_removed == n.others_removed
    assert len(cache._items) == len({tuple(p.token_ids) for p in probes})  # one pass per prompt
    cpu = torch.device("cpu")
    one = cache.get(model, ab[0].as_input(cpu))
    small = TargetPasses(
        max_bytes=3 * (one.output.nbytes + sum(v.nbytes for v in one.ci_lower.values()))
    )
    seen = [small.get(model, p.as_input(cpu)) for p in probes]
    held = [tp for tp, _ in small._items.values()]
    assert small._bytes <= small.max_bytes and 1 <= len(held) < len(cache._items)
    assert held[-1] is seen[-1] and all(tp is not seen[0] for tp in held)  # the oldest dropped
    assert small.get(model, probes[-1].as_input(cpu)) is seen[-1]  # a hit: no new pass
