"""The grader on the shipped demo: a circuit found by ablation search beats random sets of its size,
and a whole layer, though necessary, is not specific."""

import random

import pytest

from spd_core.grader import grade_circuit, probes_from_prompts, search_circuit
from spd_core.keys import ComponentKey
from spd_core.run import DEMO_RUN, load_run

pytestmark = pytest.mark.skipif(
    not (DEMO_RUN / "run.json").exists(), reason="demo run not built (make demo-run)"
)

PER_MECHANISM = 12  # probes per mechanism (the grader runs one forward per probe and ablation)
MECHANISM = "pronoun_gender"
N_RANDOM = 10  # random sets of the circuit's size


@pytest.fixture(scope="module")
def setup():
    run = load_run("demo")
    rows: list[dict] = []
    for m in dict.fromkeys(p["mechanism"] for p in run.probes):
        rows += [p for p in run.probes if p["mechanism"] == m][:PER_MECHANISM]
    return run.model, probes_from_prompts(rows, run.tokenizer)


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason=(
        "the faithful demo (154.5 active components per token, against 58 before) spreads "
        "pronoun_gender over more components: the searched 6-component circuit has necessity 0.070 "
        "against random sets' median 0.003 (needs a 0.3 margin); searched sets of 12 and 16 reach "
        "0.272 and 0.301. Open: "
        "a search size or mechanism for which the claim holds on this run"
    ),
)
def test_searched_circuit_beats_random_sets_and_a_whole_layer_is_unspecific(setup) -> None:
    model, probes = setup
    found = search_circuit(model, probes, MECHANISM, max_size=6, pool=12)
    best = grade_circuit(model, probes, MECHANISM, found)
    print(f"search: {len(found)} components {found}: {best}")
    everything = [
        ComponentKey(layer, c) for layer, info in model.layers.items() for c in range(info.C)
    ]
    rng = random.Random(0)
    rand = [grade_circuit(model, probes, MECHANISM,
                          rng.sample([k for k in everything if k not in found], len(found)))
            for _ in range(N_RANDOM)]  # fmt: skip
    necessities = sorted(r.necessity for r in rand)
    print(
        f"random: necessity {[round(n, 3) for n in necessities]}, "
        f"specificity {[r.specificity for r in rand]}"
    )
    # A random set may hit a hub component that every mechanism uses (it then harms the others too);
    # the typical random set is far below the searched circuit, and none matches it.
    assert necessities[N_RANDOM // 2] < best.necessity - 0.3, (necessities, best)
    assert necessities[-1] < best.necessity, (necessities, best)
    wholes = {layer: grade_circuit(model, probes, MECHANISM,
                                   [k for k in everything if k.layer == layer])
              for layer in sorted({k.layer for k in found})}  # fmt: skip
    layer, whole = max(wholes.items(), key=lambda kv: kv[1].necessity)
    print(f"whole layer {layer}: necessity {whole.necessity:.3f}, specificity {whole.specificity}")
    assert best.specificity is not None and whole.specificity is not None
    assert whole.necessity > 0.2, whole  # the layer is needed ...
    assert whole.specificity < best.specificity - 0.2, (
        whole,
        best,
    )  # ... but ablating it harms every mechanism
