"""optimize_removal on the hand-built bigram LM, whose circuits are known: the set it finds for
a -> b is made of a -> b's own components, and its training numbers equal validation's on the same
examples (a second route through ``ablate``)."""

import pytest
import torch

from spd_core.analysis.finder import Example
from spd_core.analysis.removal_set import RemovalConfig, optimize_removal, per_answer_rms
from spd_core.analysis.validation import ValidationConfig, validate
from spd_core.errors import InvalidInput
from spd_core.grader import probes_from_prompts
from spd_core.keys import ComponentKey
from tests.core.bigram_model import bigram_model, word_tokenizer

FILLER = ["x", "e", "b x", "x e", "e e", "x x", "e x", "b e", "x b", "e b"]
PROMPTS = [{"text": f"{f} a", "target_token": "b", "mechanism": "ab"} for f in FILLER] + [
    {"text": f"{f} c", "target_token": "d", "mechanism": "cd"} for f in FILLER
]


def _examples(probes):
    return [Example(torch.tensor([p.token_ids]), p.target) for p in probes]


def test_the_removal_set_of_a_known_behaviour_is_its_own_components_and_numbers_agree() -> None:
    model = bigram_model()
    probes = probes_from_prompts(PROMPTS, word_tokenizer())
    ab = [p for p in probes if p.mechanism == "ab"]
    cd = [p for p in probes if p.mechanism == "cd"]
    found = optimize_removal(model, _examples(ab), _examples(cd), RemovalConfig(steps=150))
    own = {ComponentKey("lin1", 1), ComponentKey("lin2", 1)}
    assert found.components and set(found.components) <= own, found.components
    assert found.kept_behaviour < 0.3 and found.kept_others > 0.99
    assert len(found.trace) == 150 and found.trace[-1] < found.trace[0]
    # second route: validation removes the same set on the same examples (deterministic regime)
    v = validate(model, ab, cd, found.components, config=ValidationConfig(min_examples=3))
    det = v.regimes["deterministic"]
    assert det.necessity.mean == pytest.approx(1 - found.kept_behaviour, abs=1e-5)
    assert det.specificity is not None
    assert det.specificity.mean == pytest.approx(found.kept_others, abs=1e-5)
    assert (v.necessity, v.specificity) == ("holds", "holds")
    # seeded: the same call gives the same set
    again = optimize_removal(model, _examples(ab), _examples(cd), RemovalConfig(steps=150))
    assert again.components == found.components and again.trace == found.trace


def test_per_answer_rms_punishes_breaking_one_answer_only_and_bad_input_is_refused() -> None:
    targets = torch.tensor([1, 1, 2, 2])
    one_only = per_answer_rms(torch.tensor([0.0, 0.0, 1.0, 1.0]), targets)
    halfway = per_answer_rms(torch.tensor([0.5, 0.5, 0.5, 0.5]), targets)
    assert float(one_only) == pytest.approx(0.5**0.5) and float(halfway) == pytest.approx(0.5)
    model = bigram_model()
    probes = _examples(probes_from_prompts(PROMPTS, word_tokenizer()))
    with pytest.raises(InvalidInput, match="at least 2 examples of other behaviours"):
        optimize_removal(model, probes[:3], probes[10:11])
    with pytest.raises(InvalidInput, match="steps must be"):
        optimize_removal(model, probes[:3], probes[10:13], RemovalConfig(steps=0))
