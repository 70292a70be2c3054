"""The weight-delta report: per-matrix ‖W − (VU)ᵀ‖ / ‖W‖ and mean squared delta, checked against the
sum of the components' rank-1 weights taken one at a time."""

import pytest
import torch
from torch import nn

from spd_core.losses import faithfulness_loss
from spd_core.model import ComponentModel
from spd_core.weight_delta import NEGLIGIBLE_REL_NORM, weight_delta_report


def _model() -> ComponentModel:
    torch.manual_seed(0)
    target = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5))
    return ComponentModel(target, [("0", 8), ("2", 5)])


def _fit_exactly(model: ComponentModel) -> None:
    """Set V, U from the SVD so that (VU)ᵀ = W."""
    with torch.no_grad():
        for layer in model.layers:
            comp = model.comp(layer)
            u, s, vh = torch.linalg.svd(comp.target_weight, full_matrices=False)  # W = u diag(s) vh
            r = s.numel()
            comp.V.zero_()
            comp.U.zero_()
            comp.V[:, :r] = vh.T * s
            comp.U[:r] = u.T


@torch.no_grad()
def test_report_matches_the_components_summed_one_by_one() -> None:
    model = _model()
    report = weight_delta_report(model)
    n_sq, n = 0.0, 0
    for layer, info in model.layers.items():
        comp = model.comp(layer)
        summed = sum(comp.component_weight(c) for c in range(info.C))
        delta = comp.target_weight - summed
        assert report.rel_norm[layer] == pytest.approx(
            float(delta.norm() / comp.target_weight.norm()), rel=1e-5
        )
        assert report.mean_sq[layer] == pytest.approx(float(delta.pow(2).mean()), rel=1e-5)
        n_sq, n = n_sq + float(delta.pow(2).sum()), n + delta.numel()
    assert report.mean_sq_all == pytest.approx(n_sq / n, rel=1e-5)
    assert report.mean_sq_all == pytest.approx(float(faithfulness_loss(model)), rel=1e-5)
    assert not report.negligible  # random initial components are far from the weights
    layer, worst = report.worst
    assert worst == max(report.rel_norm.values()) > NEGLIGIBLE_REL_NORM
    assert report.summary().startswith("WARNING: the components do not sum to the weights")
    assert f"2 of 2 matrices (largest {worst:.3g}, {layer})" in report.warning()
    metrics = report.metrics()
    assert (
        metrics["delta_rel_norm/0"] == report.rel_norm["0"]
        and metrics["delta_mean_sq/2"] == report.mean_sq["2"]
    )
    assert metrics["delta_mean_sq"] == report.mean_sq_all and metrics["delta_rel_norm_max"] == worst


def test_components_that_sum_to_the_weights_are_negligible() -> None:
    model = _model()
    _fit_exactly(model)
    report = weight_delta_report(model)
    assert max(report.rel_norm.values()) < 1e-6 and report.negligible
    assert report.summary().startswith("The components sum to the weights")
    with torch.no_grad():  # one matrix off by 5% of its norm: that one is named
        comp = model.comp("2")
        comp.U[0] += (
            0.05 * comp.target_weight.norm() / (comp.V[:, 0].norm() * comp.U[0].norm()) * comp.U[0]
        )
    report = weight_delta_report(model)
    assert report.rel_norm["2"] == pytest.approx(0.05, rel=1e-4) and report.rel_norm["0"] < 1e-6
    assert "in 1 of 2 matrices (largest 0.05, 2)" in report.warning()
