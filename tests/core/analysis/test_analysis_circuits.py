"""Circuit optimisation finds the known circuit of a hand-built TMS-like model; regimes are
consistent."""

import torch

from spd_core.analysis.circuits import CircuitConfig, optimize_circuit
from spd_core.analysis.regimes import RegimeSettings
from tests.core.analysis.tms_like import tms_like


def test_tms_like_components_reproduce_target() -> None:
    model = tms_like()
    for name in model.layers:
        assert torch.allclose(model.comp(name).weight(), model.comp(name).target_weight, atol=1e-6)


def test_circuit_finds_active_feature_component() -> None:
    model = tms_like()
    for feature in (0, 3):
        x = torch.zeros(1, 5)
        x[0, feature] = 1.0
        circ = optimize_circuit(
            model,
            x,
            target_token=feature,
            position=0,
            config=CircuitConfig(steps=100, lr=0.1, sparsity=0.05, seed=0),
            regimes=RegimeSettings(n_samples=4, pgd_steps=5),
        )
        kept = {(n.layer, n.c) for n, ci in circ.nodes if ci > 0.1}
        assert kept == {("linear1", feature), ("linear2", feature)}, (feature, circ.nodes)
        assert circ.l0 == {"linear1": 1, "linear2": 1} or all(v >= 1 for v in circ.l0.values())
        assert abs(circ.probs["unmasked"] - circ.probs["target"]) < 1e-5
        assert len(circ.loss_trace) == 100


def test_circuit_is_seeded_and_reports_progress() -> None:
    model = tms_like()
    x = torch.zeros(1, 5)
    x[0, 2] = 1.0
    seen: list[int] = []
    cfg = CircuitConfig(steps=20, mask="stochastic", adversarial_steps=2, seed=3)
    a = optimize_circuit(
        model,
        x,
        2,
        0,
        cfg,
        RegimeSettings(n_samples=2, pgd_steps=2),
        progress=lambda s, n, loss: seen.append(s),
    )
    b = optimize_circuit(model, x, 2, 0, cfg, RegimeSettings(n_samples=2, pgd_steps=2))
    assert seen == list(range(1, 21))
    assert a.loss_trace == b.loss_trace
    assert a.probs == b.probs


def test_circuit_on_language_model_reports_every_regime(llama, tokens) -> None:  # noqa: ANN001
    with torch.no_grad():
        token = int(llama.target_output(tokens)[0, -1].argmax())
    circ = optimize_circuit(
        llama,
        tokens,
        token,
        -1,
        CircuitConfig(steps=8, loss="kl", mask="stochastic", adversarial_steps=1),
        RegimeSettings(n_samples=2, pgd_steps=2),
    )
    assert set(circ.probs) == {"target", "ci", "stochastic", "adversarial", "unmasked"}
    assert abs(circ.probs["unmasked"] - circ.probs["target"]) < 1e-5
    assert circ.position == tokens.shape[1] - 1 and len(circ.loss_trace) == 8
    assert sum(circ.l0.values()) == len(circ.nodes)
