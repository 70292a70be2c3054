"""The shipped demo run loads by name and reproduces the accuracies recorded when it was built."""

import pytest
import torch

from spd_core.demo import regime_report
from spd_core.run import DEMO_RUN, load_run
from spd_core.targets.language import Probe
from spd_core.targets.tiny_lm import mechanism_scores

pytestmark = pytest.mark.skipif(not (DEMO_RUN / "run.json").exists(), reason="demo run not built (make demo-run)")


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
    for key in ("accuracy_ci", "accuracy_rounded", "accuracy_unmasked", "agreement_ci", "agreement_rounded"):
        for mechanism, value in report[key].items():
            assert value == pytest.approx(demo.metrics[key][mechanism], abs=1e-6), (key, mechanism)
    for layer, l0 in report["l0_per_layer"].items():
        assert l0 == pytest.approx(demo.metrics["l0_per_layer"][layer], rel=1e-6), layer
    assert report["l0_total"] == pytest.approx(demo.metrics["l0_total"], rel=1e-6)
    assert report["l0_total_above"] == pytest.approx(demo.metrics["l0_total_above"], rel=1e-6)
    assert report["l0_total"] >= report["l0_total_above"]["0.1"] >= report["l0_total_above"]["0.5"]
    for layer, kl in report["kl_single_matrix_ci"].items():
        assert kl == pytest.approx(demo.metrics["kl_single_matrix_ci"][layer], rel=1e-4, abs=1e-6), layer
    assert report["max_abs_unmasked_minus_target"] < 1e-4
    assert report["accuracy_unmasked"] == report["accuracy_target"]
    assert set(report["agreement_target"].values()) == {1.0} and set(report["agreement_unmasked"].values()) == {1.0}
    for layer, rel in report["weight_delta_rel_norm"].items():
        assert rel == pytest.approx(demo.metrics["weight_delta_rel_norm"][layer], rel=1e-5), layer


def test_demo_run_is_small_enough_to_ship() -> None:
    size = sum(p.stat().st_size for p in DEMO_RUN.rglob("*") if p.is_file())
    assert size <= 10 * 2**20, f"demo run is {size / 2**20:.1f} MB; the budget is 10 MB"
