"""The shipped demo run loads by name and reproduces the accuracies recorded when it was built."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from spd_core.analysis.ablation import ablate
from spd_core.analysis.editing import remove_edit
from spd_core.analysis.overlay import applied
from spd_core.demo import regime_report
from spd_core.keys import ComponentKey
from spd_core.losses import output_loss
from spd_core.run import DEMO_RUN, load_run
from spd_core.targets.language import Probe
from spd_core.targets.tiny_lm import encode_batch, mechanism_scores
from spd_core.weight_delta import NEGLIGIBLE_REL_NORM

pytestmark = pytest.mark.skipif(
    not (DEMO_RUN / "run.json").exists(), reason="demo run not built (make demo-run)"
)


@pytest.fixture(scope="module")
def demo():
    return load_run("demo")


def _probes(demo) -> list[Probe]:
    return [Probe(p["text"], p["target_token"], p["mechanism"], p.get("foil")) for p in demo.probes]


def test_demo_target_accuracy_matches_the_report_by_a_second_route(demo) -> None:
    probes = _probes(demo)
    with torch.no_grad():
        scores = mechanism_scores(demo.model.target, demo.tokenizer, probes)
    reported = demo.metrics["accuracy_target"]
    assert set(scores) == set(reported)
    for mechanism, score in scores.items():
        assert score.accuracy == pytest.approx(reported[mechanism], abs=1e-6), mechanism


def test_demo_masked_accuracies_and_single_matrix_kl_reproduce(demo) -> None:
    probes = _probes(demo)
    report = regime_report(demo.model, demo.tokenizer, probes, n_stochastic=1)
    for key in (
        "accuracy_ci",
        "accuracy_rounded",
        "accuracy_unmasked",
        "agreement_ci",
        "agreement_rounded",
    ):
        for mechanism, value in report[key].items():
            assert value == pytest.approx(demo.metrics[key][mechanism], abs=1e-6), (key, mechanism)
    for layer, l0 in report["l0_per_layer"].items():
        assert l0 == pytest.approx(demo.metrics["l0_per_layer"][layer], rel=1e-6), layer
    assert report["l0_total"] == pytest.approx(demo.metrics["l0_total"], rel=1e-6)
    assert report["l0_total_above"] == pytest.approx(demo.metrics["l0_total_above"], rel=1e-6)
    assert report["l0_total"] >= report["l0_total_above"]["0.1"] >= report["l0_total_above"]["0.5"]
    for layer, kl in report["kl_single_matrix_ci"].items():
        assert kl == pytest.approx(
            demo.metrics["kl_single_matrix_ci"][layer], rel=1e-4, abs=1e-6
        ), layer
    assert report["max_abs_unmasked_minus_target"] < 1e-4
    assert report["accuracy_unmasked"] == report["accuracy_target"]
    assert set(report["agreement_target"].values()) == {1.0} and set(
        report["agreement_unmasked"].values()
    ) == {1.0}


# The goals the demo is shipped against (README, demo section). The deterministic numbers are
# recomputed from the run by the test above; the stochastic ones come from run.json.
AGREEMENT_MIN, AGREEMENT_WORST_MIN = 0.98, 0.97
KL_STOCHASTIC_MAX, KL_SINGLE_MATRIX_MAX, ACTIVE_MAX = 0.02, 0.05, 60


def test_demo_meets_its_agreement_goals(demo) -> None:
    m = demo.metrics
    floors = {
        "agreement_ci": AGREEMENT_MIN,
        "agreement_stochastic_mean": AGREEMENT_MIN,
        "agreement_stochastic_worst": AGREEMENT_WORST_MIN,
    }
    for key, floor in floors.items():
        low = {mech: v for mech, v in m[key].items() if v < floor}
        assert not low, f"{key} below {floor}: {low}"


@pytest.mark.xfail(
    strict=True,
    reason=(
        "faithfulness first: with the components summing to the weights (faithfulness 1e7) the "
        "shipped run has 154.5 active components per token, stochastic KL 0.0239 and 0.mlp.gate "
        "alone at KL "
        "0.064 (README, demo section); a run that meets these turns this into a failure to update"
    ),
)
def test_demo_meets_its_kl_and_sparsity_goals(demo) -> None:
    m = demo.metrics
    high = {k: kl for k, kl in m["kl_single_matrix_ci"].items() if kl > KL_SINGLE_MATRIX_MAX}
    assert not high, f"single matrices CI-masked alone above KL {KL_SINGLE_MATRIX_MAX}: {high}"
    assert m["kl_stochastic_last_token"] <= KL_STOCHASTIC_MAX
    assert m["l0_total"] <= ACTIVE_MAX


def test_the_shipped_components_sum_to_the_target_weights() -> None:
    """From the files alone (not run.json's numbers, not the loader): ‖W − (VU)ᵀ‖ / ‖W‖."""
    run_json = json.loads((DEMO_RUN / "run.json").read_text())
    components = load_file(str(DEMO_RUN / "components.safetensors"))
    weights = load_file(str(DEMO_RUN / "target" / "model.safetensors"))
    rel = {}
    for layer in run_json["layers"]:
        key = "components." + layer["name"].replace(".", "-")
        V = components[f"{key}.V"].double()  # (d_in, C)
        U = components[f"{key}.U"].double()  # (C, d_out)
        W = weights[layer["path"] + ".weight"].double()  # Linear orientation (d_out, d_in)
        assert layer["kind"] == "linear" and W.shape == (U.shape[1], V.shape[0]), layer
        rel[layer["name"]] = float((W - (V @ U).T).norm() / W.norm())
    assert len(rel) == 14
    too_big = {k: round(v, 4) for k, v in rel.items() if v > NEGLIGIBLE_REL_NORM}
    assert not too_big, f"matrices whose components do not sum to the weights: {too_big}"
    for layer, value in rel.items():  # and run.json reports the same numbers
        reported = run_json["metrics"][f"delta_rel_norm/{layer}"]
        assert reported == pytest.approx(value, rel=1e-4), layer


def _output(model, out):
    return getattr(out, model.output_attr) if model.output_attr else out


# Keep-only S with the delta off runs Σ_{c∈S} (VU)_c; the target with the components outside S
# subtracted runs W − Σ_{c∉S} (VU)_c = Σ_{c∈S} (VU)_c + Δ. They differ by Δ alone, so they agree to
# within what a negligible delta moves. Measured on the shipped run (largest ‖Δ‖/‖W‖ 0.00085): KL
# ≤ 1.7e-4, max |Δlogit| ≤ 0.36, ‖Δlogits‖/‖logits‖ ≤ 0.0074, while each kept set's own output is
# 1.5–5.1 nats of KL from the target's; the previous demo (‖Δ‖/‖W‖ 0.78–2.1) gave KL 3.5 and
# |Δlogit| 17 with a single component kept.
KEEP_ONLY_TOL = {"max_abs_logit": 1.0, "kl": 1e-3, "rel_norm": 0.02}


def test_keeping_only_a_set_equals_subtracting_the_rest_from_the_weights(demo) -> None:
    model = demo.model
    probes = _probes(demo)
    gen = torch.Generator().manual_seed(0)
    texts = [probes[int(i)].text for i in torch.randint(len(probes), (8,), generator=gen)]
    ids = encode_batch(demo.tokenizer, texts)[0]
    with torch.no_grad():
        target = model.target_output(ids).float()
    every = [(layer, c) for layer, info in model.layers.items() for c in range(info.C)]
    for size in (1, 30, 150, 448, 800):
        keep = {layer: torch.zeros(info.C) for layer, info in model.layers.items()}
        for i in torch.randperm(len(every), generator=gen)[:size].tolist():
            layer, c = every[i]
            keep[layer][c] = 1.0
        subtracted = copy.deepcopy(model.target)  # W − Σ_{c∉S} u_c v_cᵀ in every decomposed matrix
        with torch.no_grad():
            for layer, info in model.layers.items():
                comp = model.comp(layer)
                dropped = (comp.V * (1.0 - keep[layer])) @ comp.U  # (d_in, d_out)
                subtracted.get_submodule(info.path).weight -= dropped.T
        masks = {layer: k.expand(*ids.shape, -1) for layer, k in keep.items()}
        ones = {k: torch.ones(ids.shape) for k in keep}
        with torch.no_grad():
            kept = model(ids, masks=masks).output.float()
            minus = _output(model, subtracted(ids)).float()
            with_delta = model(ids, masks=masks, delta_masks=ones).output.float()
        # with the delta on, the identity is exact up to float32 rounding (measured ≤ 5e-4 on logits
        # of magnitude up to ~20)
        torch.testing.assert_close(with_delta, minus, atol=2e-3, rtol=1e-3)
        gap = float((kept - minus).abs().max())
        kl = float(output_loss(kept, minus, "kl"))
        rel = float((kept - minus).norm() / minus.norm())
        assert gap <= KEEP_ONLY_TOL["max_abs_logit"], (size, gap)
        assert kl <= KEEP_ONLY_TOL["kl"] and rel <= KEEP_ONLY_TOL["rel_norm"], (size, kl, rel)
        assert float(output_loss(kept, target, "kl")) > 0.5, size  # not the target itself


def test_a_remove_edit_equals_ablating_the_component_everywhere(demo) -> None:
    model = demo.model
    probes = _probes(demo)
    gen = torch.Generator().manual_seed(1)
    layers = list(model.layers)
    for trial in range(6):
        draws = torch.randint(len(layers) * 64, (1 + 4 * (trial % 2),), generator=gen).tolist()
        chosen = [ComponentKey(layers[i // 64], i % 64) for i in draws]
        text = probes[int(torch.randint(len(probes), (), generator=gen))].text
        ids = encode_batch(demo.tokenizer, [text])[0]
        ablated = ablate(model, ids, components=chosen, mode="remove", regime="deterministic", k=10)
        with torch.no_grad():
            with applied(model, remove_edit(model, chosen)):
                edited = model.target_output(ids)[0, ablated.position].float()
            target = model.target_output(ids)[0, ablated.position].float()
        kl = float(output_loss(edited, target, "kl"))
        assert ablated.kl == pytest.approx(kl, rel=1e-3, abs=1e-6), chosen
        probs = edited.softmax(-1)
        for token, prob in ablated.after_top:
            assert prob == pytest.approx(float(probs[token]), abs=1e-5), (chosen, token)
        assert [t for t, _ in ablated.after_top] == probs.topk(10).indices.tolist()


def test_demo_run_is_small_enough_to_ship() -> None:
    size = sum(p.stat().st_size for p in DEMO_RUN.rglob("*") if p.is_file())
    assert size <= 10 * 2**20, f"demo run is {size / 2**20:.1f} MB; the budget is 10 MB"
