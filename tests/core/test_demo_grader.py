"""The grader on the shipped demo: a circuit found by ablation search beats random sets of its size,
and a whole layer, though necessary, is not specific."""

import random

import pytest

from spd_core.grader import grade_circuit, probes_from_prompts, search_circuit
from spd_core.keys import ComponentKey
from spd_core.run import DEMO_RUN, load_run

pytestmark = pytest.mark.skipif(not (DEMO_RUN / "run.json").exists(), reason="demo run not built (make demo-run)")

PER_MECHANISM = 12  # probes per mechanism (the grader runs one forward per probe and ablation)
MECHANISM = "pronoun_gender"


@pytest.fixture(scope="module")
def setup():
    run = load_run("demo")
    rows: list[dict] = []
    for m in dict.fromkeys(p["mechanism"] for p in run.probes):
        rows += [p for p in run.probes if p["mechanism"] == m][:PER_MECHANISM]
    return run.model, probes_from_prompts(rows, run.tokenizer)


@pytest.mark.slow
def test_searched_circuit_beats_random_sets_and_a_whole_layer_is_unspecific(setup) -> None:
    model, probes = setup
    found = search_circuit(model, probes, MECHANISM, max_size=6, pool=12)
    best = grade_circuit(model, probes, MECHANISM, found)
    print(f"search: {len(found)} components {found}: {best}")
    everything = [ComponentKey(layer, c) for layer, info in model.layers.items() for c in range(info.C)]
    rng = random.Random(0)
    for _ in range(5):
        rand = grade_circuit(model, probes, MECHANISM, rng.sample([k for k in everything if k not in found], len(found)))
        print(f"random: necessity {rand.necessity:.3f}, specificity {rand.specificity}")
        assert rand.necessity < best.necessity - 0.3, (rand, best)
    layer = max({k.layer for k in found}, key=lambda name: sum(k.layer == name for k in found))
    whole = grade_circuit(model, probes, MECHANISM, [k for k in everything if k.layer == layer])
    print(f"whole layer {layer}: necessity {whole.necessity:.3f}, specificity {whole.specificity}")
    assert best.specificity is not None and whole.specificity is not None
    assert whole.necessity >= best.necessity - 0.05
    assert whole.specificity < best.specificity - 0.2
