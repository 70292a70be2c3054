"""Shared circuits: padding changes no logit that is read, the known circuit of a TMS-like toy is
found across examples and holds on held-out ones, regime scores equal masked forwards by hand."""

import pytest
import torch

from spd_core.analysis.finder import Example
from spd_core.analysis.heldout_circuit import circuit_with_heldout
from spd_core.analysis.regimes import RegimeSettings
from spd_core.analysis.shared_circuit import (
    SHARED_REGIMES,
    SharedCircuitConfig,
    batch_examples,
    optimize_shared_circuit,
    score_circuit,
)
from spd_core.analysis.validation import MeasureSettings, Probe, ValidationConfig
from spd_core.errors import InvalidInput
from spd_core.keys import ComponentKey
from spd_core.model import ComponentModel
from tests.core.analysis.tms_like import tms_like

FAST = RegimeSettings(n_samples=2, pgd_steps=2)


def lm_examples(n: int = 4) -> list[Example]:
    g = torch.Generator().manual_seed(5)
    out = []
    for i in range(n):
        tokens = torch.randint(0, 48, (1, 5 + 3 * i), generator=g)
        out.append(Example(tokens, target_token=int(tokens[0, 1]), position=-1 - (i % 2)))
    return out


def test_right_padding_changes_no_logit_at_the_read_positions(llama: ComponentModel) -> None:
    examples = lm_examples()
    batch = batch_examples(examples, torch.device("cpu"))
    assert batch.x.shape == (4, 14) and batch.valid.sum(1).tolist() == [5, 8, 11, 14]
    assert batch.positions.tolist() == [4, 6, 10, 12]
    torch.manual_seed(0)
    masks = {k: torch.rand(4, 14, info.C) for k, info in llama.layers.items()}
    delta = {k: torch.rand(4, 14) for k in llama.layers}
    with torch.no_grad():
        plain = batch.at_positions(llama(batch.x).output)
        masked = batch.at_positions(llama(batch.x, masks=masks, delta_masks=delta).output)
        for i, ex in enumerate(examples):
            n = ex.tokens.shape[1]
            one = llama(ex.tokens).output[0, batch.positions[i]]
            sub_masks = {k: m[i : i + 1, :n] for k, m in masks.items()}
            sub_delta = {k: d[i : i + 1, :n] for k, d in delta.items()}
            one_masked = llama(ex.tokens, masks=sub_masks, delta_masks=sub_delta).output[
                0, batch.positions[i]
            ]
            assert torch.allclose(plain[i], one, atol=1e-5)
            assert torch.allclose(masked[i], one_masked, atol=1e-5)
    assert (batch.x[0, 5:] == 0).all()  # the pad id


def one_hot(feature: int, value: float) -> torch.Tensor:
    x = torch.zeros(1, 5)
    x[0, feature] = value
    return x


@pytest.mark.parametrize("features", [(2,), (0, 3)])
def test_toy_shared_circuit_is_the_active_features_components(features: tuple[int, ...]) -> None:
    """Feature f's prediction runs through exactly linear1:f and linear2:f (components built by
    hand); the circuit over examples of features ``features`` is those components and no other."""
    model = tms_like()
    examples = [Example(one_hot(f, v), f, 0) for f in features for v in (0.6, 0.8, 1.0)]
    circ = optimize_shared_circuit(
        model, examples, SharedCircuitConfig(steps=150, sparsity=0.05), regimes=FAST
    )
    expected = {ComponentKey(layer, f) for f in features for layer in ("linear1", "linear2")}
    assert {k for k, _ in circ.components} == expected, circ.components
    assert circ.n_candidates == 10 and circ.converged
    assert circ.l0 == {"linear1": len(features), "linear2": len(features)}
    gates = [g for _, g in circ.components]
    assert gates == sorted(gates, reverse=True) and all(0 < g <= 1 for g in gates)
    assert set(circ.scores) == set(SHARED_REGIMES) == set(circ.full)
    for regime in ("target", "stochastic", "ci", "alone"):
        assert circ.scores[regime].accuracy == 1.0, (regime, circ.scores[regime])
    assert circ.positions == [0] * len(examples) and circ.targets == [
        e.target_token for e in examples
    ]
    # another feature's components are not a circuit for these examples
    other = [ComponentKey("linear1", 1), ComponentKey("linear2", 1)]
    assert score_circuit(model, examples, other, FAST)["alone"].accuracy == 0.0


def test_deterministic_regimes_equal_masked_forwards_by_hand(llama: ComponentModel) -> None:
    examples = lm_examples()
    keys = [ComponentKey("0.attn.v", 1), ComponentKey("1.mlp.down", 3), ComponentKey("1.mlp.up", 0)]
    scores = score_circuit(llama, examples, keys, FAST)
    for i, ex in enumerate(examples):
        with torch.no_grad():
            fwd = llama(ex.tokens, cache_inputs=True)
            ci = llama.causal_importance(fwd.inputs).lower
            sel = {k: torch.zeros_like(g) for k, g in ci.items()}
            for key in keys:
                sel[key.layer][..., key.c] = 1.0
            routes = {
                "target": fwd.output,
                "ci": llama(ex.tokens, masks={k: sel[k] * ci[k] for k in ci}).output,
                "alone": llama(ex.tokens, masks=sel).output,
            }
        for regime, out in routes.items():
            probs = out[0, ex.position].softmax(-1)
            top2 = probs.topk(2)
            hit = int(top2.indices[0]) == ex.target_token and float(top2.values[1]) < float(
                top2.values[0]
            )
            assert scores[regime].probs[i] == pytest.approx(float(probs[ex.target_token]), abs=1e-5)
            assert scores[regime].correct[i] == float(hit)


def test_shared_circuit_is_seeded_and_reports_progress(llama: ComponentModel) -> None:
    examples = lm_examples(3)
    seen: list[int] = []
    cfg = SharedCircuitConfig(steps=6, sparsity=0.01, adversarial_steps=1, seed=2)
    a = optimize_shared_circuit(
        llama, examples, cfg, progress=lambda s, n, v: seen.append(s), regimes=FAST
    )
    b = optimize_shared_circuit(llama, examples, cfg, regimes=FAST)
    assert seen == list(range(1, 7)) and a.loss_trace == b.loss_trace and a.scores == b.scores
    assert sum(a.l0.values()) == len(a.components) <= a.n_candidates
    ci = optimize_shared_circuit(
        llama, examples, SharedCircuitConfig(steps=3, mask="ci", loss="kl"), regimes=FAST
    )
    assert len(ci.loss_trace) == 3 and not ci.converged


def test_bad_examples_say_what_is_valid(llama: ComponentModel) -> None:
    with pytest.raises(InvalidInput, match="at least one example"):
        optimize_shared_circuit(llama, [])
    with pytest.raises(InvalidInput, match=r"valid: 0\.\.47"):
        score_circuit(llama, [Example(torch.tensor([[1, 2]]), 99)], [])
    with pytest.raises(InvalidInput, match="valid: 0..7"):
        score_circuit(llama, lm_examples(1), [ComponentKey("0.attn.q", 8)])


def test_toy_circuit_validated_on_held_out_examples_holds() -> None:
    """Ground truth of the TMS-like toy: feature 2's components are necessary, sufficient and
    specific for feature 2 on held-out magnitudes; the other features' examples are the controls.
    (Large magnitudes, so that the target is clearly on top; without the circuit all is uniform.)"""
    model = tms_like()
    train = [Example(one_hot(2, v), 2, 0) for v in (4.0, 8.0)]
    held = [Probe([], 2, "f2", features=one_hot(2, 3.0 + 0.7 * i)[0].tolist()) for i in range(8)]
    others = [
        Probe([], -1, "other", features=one_hot(f, 5.0)[0].tolist())
        for f in (0, 1, 3, 4)
        for _ in range(2)
    ]
    res = circuit_with_heldout(
        model,
        train,
        held,
        others,
        SharedCircuitConfig(steps=150, sparsity=0.05),
        FAST,
        ValidationConfig(measure=MeasureSettings(n_samples=8, pgd_steps=2)),
    )
    assert {k for k, _ in res.circuit.components} == {
        ComponentKey("linear1", 2),
        ComponentKey("linear2", 2),
    }
    assert res.heldout is not None and res.heldout["stochastic"].accuracy == 1.0
    v = res.validation
    assert v is not None and v.n_examples == 8 and v.n_others == 8
    assert (v.necessity, v.sufficiency, v.specificity) == ("holds", "holds", "holds"), v.notes
    assert v.regimes["deterministic"].broken == 1.0
    assert v.regimes["deterministic"].specificity is not None
    assert v.regimes["deterministic"].specificity.mean == 1.0
    assert res.circuit.n_candidates == 10 and circuit_with_heldout(model, train).validation is None
