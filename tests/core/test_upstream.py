"""Run directories written by the public SPD implementation (goodfire-ai/spd) load as our runs and
reproduce the numbers that implementation computed from the same files (``reference_outputs.json``).

The fixtures live beside the repository (``../shared/fixtures/upstream_spd``, read-only).
"""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from spd_core.keys import canonical_layer_name
from spd_core.masks import ones_masks
from spd_core.run import load_run
from spd_core.upstream import UpstreamRunError, load_upstream_run

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures" / "upstream_spd"
pytestmark = pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"upstream SPD fixtures not found at {FIXTURES} (../shared beside the repo)",
)
RUNS = ["tms_5-2", "resid_mlp1", "lm_demo_llama"]
# Tolerances: float32 with a different order of operations (their einsum vs our matmul; their
# transformers Llama vs our NativeLlama). Toy outputs are O(1); LM logits reach 16.
TOL = {"tms_5-2": 1e-5, "resid_mlp1": 1e-5, "lm_demo_llama": 1e-4}


def _reference(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name / "reference_outputs.json").read_text())


@pytest.fixture(scope="module")
def loaded() -> dict[str, Any]:
    return {name: load_run(FIXTURES / name) for name in RUNS}


def _outputs(run: Any, ref: dict[str, Any]) -> dict[str, Any]:
    m = run.model
    x = torch.tensor(ref["inputs"])
    last = (
        (lambda t: t[:, -1]) if ref["kind"] == "lm" else (lambda t: t)
    )  # LM: logits at the last position
    with torch.no_grad():
        ci = m.causal_importance(m(x, cache_inputs=True).inputs).lower
        ones, delta = ones_masks(ci)
        return {
            "ci": ci,
            "target_output": last(m.target_output(x)),
            "ci_masked_output": last(m(x, masks=ci).output),
            "ones_with_delta_output": last(m(x, masks=ones, delta_masks=delta).output),
        }


@pytest.mark.parametrize("name", RUNS)
def test_layers_get_canonical_names_and_the_configured_C(loaded: dict[str, Any], name: str) -> None:
    run, ref = loaded[name], _reference(name)
    want = {
        canonical_layer_name(k): torch.tensor(v).shape[-1] for k, v in ref["ci_lower_leaky"].items()
    }
    assert run.model.layer_c() == want
    if name == "lm_demo_llama":
        assert set(want) == {
            f"{i}.{kind}"
            for i in (0, 1)
            for kind in ("attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down")
        }
        assert run.tokenizer is not None and run.config.ci_fn_type == "shared_mlp"
    else:
        assert run.tokenizer is None and run.config.ci_fn_type == "mlp"
    assert run.info["checkpoint"] == ref["checkpoint"]


@pytest.mark.parametrize("name", RUNS)
def test_all_ones_masks_with_the_delta_reproduce_the_target(
    loaded: dict[str, Any], name: str
) -> None:
    out = _outputs(loaded[name], _reference(name))
    assert (out["ones_with_delta_output"] - out["target_output"]).abs().max().item() <= 1e-6


@pytest.mark.parametrize("name", RUNS)
def test_outputs_and_causal_importances_equal_the_public_implementations(
    loaded: dict[str, Any], name: str
) -> None:
    ref = _reference(name)
    out = _outputs(loaded[name], ref)
    tol = TOL[name]
    for key in ("target_output", "ci_masked_output", "ones_with_delta_output"):
        diff = (out[key] - torch.tensor(ref[key])).abs().max().item()
        assert diff <= tol, f"{name} {key}: max |diff| {diff:.3g} > {tol}"
    for layer, values in ref["ci_lower_leaky"].items():
        diff = (out["ci"][canonical_layer_name(layer)] - torch.tensor(values)).abs().max().item()
        assert diff <= 1e-5, f"{name} CI of {layer}: max |diff| {diff:.3g}"
    # the CI masks matter: their output differs from the target's by far more than the tolerance
    assert (
        torch.tensor(ref["ci_masked_output"]) - torch.tensor(ref["target_output"])
    ).abs().max().item() > 10 * tol


@pytest.mark.parametrize("name", RUNS)
def test_weight_delta_norms_equal_the_public_implementations(
    loaded: dict[str, Any], name: str
) -> None:
    model = loaded[name].model
    for layer, want in _reference(name)["weight_delta_rel_norm"].items():
        comp = model.comp(canonical_layer_name(layer))
        got = (comp.weight_delta().norm() / comp.target_weight.norm()).item()
        assert got == pytest.approx(want, rel=1e-5, abs=1e-7), layer


def test_tms_components_are_the_five_feature_directions(loaded: dict[str, Any]) -> None:
    """Second route: the known answer. Each of the 5 features has one live component per matrix
    whose rank-1 weight is that feature's column of W1 (and row of W2), and its CI is on for that
    feature alone."""
    model = loaded["tms_5-2"].model
    W1 = model.comp("linear1").target_weight  # (2, 5)
    x = 0.75 * torch.eye(
        5
    )  # the public implementation's IdentityCIError probe (at 1.0, linear2's CIs spill)
    with torch.no_grad():
        ci = model.causal_importance(model(x, cache_inputs=True).inputs).lower
    for layer in ("linear1", "linear2"):
        comp = model.comp(layer)
        norms = torch.stack([comp.component_weight(c).norm() for c in range(comp.C)])
        live = norms.argsort(descending=True)[:5]
        assert norms[live].min() > 1.0 and norms.sort(descending=True).values[5] < 0.01
        on = ci[layer] > 0.5  # (feature, component)
        assert on.sum(dim=1).tolist() == [1] * 5, f"{layer}: one component on per feature"
        assert set(on.nonzero()[:, 1].tolist()) == set(live.tolist())
        for f in range(5):
            c = int(on[f].nonzero())
            w = comp.component_weight(c)
            truth = torch.zeros_like(w)
            if layer == "linear1":
                truth[:, f] = W1[:, f]
            else:
                truth[f, :] = W1[:, f]
            cos = torch.nn.functional.cosine_similarity(w.flatten(), truth.flatten(), dim=0).item()
            assert cos > 0.99, f"{layer}:{c} vs feature {f}: cos {cos:.4f}"


# --- what is refused, and how ---------------------------------------------------------------------


def _copy_tms(tmp_path: Path, edit: dict[str, Any] | None = None, keep_target: bool = True) -> Path:
    run = tmp_path / "tms"
    shutil.copytree(FIXTURES / "tms_5-2", run, ignore=shutil.ignore_patterns("figures", "*.png"))
    run.chmod(0o755)
    for p in run.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    if not keep_target:
        shutil.rmtree(run / "target_run")
        (run / "tms.pth").unlink()
    if edit:
        cfg = yaml.safe_load((run / "final_config.yaml").read_text())
        cfg.update(edit)
        (run / "final_config.yaml").write_text(yaml.safe_dump(cfg))
    return run


def test_the_target_is_found_next_to_the_run_or_passed_explicitly(tmp_path: Path) -> None:
    run = _copy_tms(tmp_path, keep_target=False)
    with pytest.raises(
        UpstreamRunError,
        match=r"/cluster/spd_out/train/t-8eb90a6a/tms\.pth.*not on this machine.*target_run",
    ):
        load_upstream_run(run)
    loaded = load_upstream_run(run, target=FIXTURES / "tms_5-2" / "target_run")
    assert loaded.info["target_loaded_from"] == str(FIXTURES / "tms_5-2" / "target_run" / "tms.pth")


def test_a_wandb_target_without_a_local_copy_is_named(tmp_path: Path) -> None:
    run = _copy_tms(
        tmp_path, {"pretrained_model_path": "wandb:goodfire/spd/runs/abc123"}, keep_target=False
    )
    with pytest.raises(
        UpstreamRunError, match="wandb:goodfire/spd/runs/abc123.*W&B path with no local copy"
    ):
        load_upstream_run(run)


def test_a_different_target_is_refused(tmp_path: Path) -> None:
    run = _copy_tms(tmp_path)
    weights = torch.load(run / "target_run" / "tms.pth", weights_only=True)
    weights["linear1.weight"] = weights["linear1.weight"] * 1.01
    torch.save(weights, run / "target_run" / "tms.pth")
    with pytest.raises(UpstreamRunError, match=r"linear1\.weight.*differ from the checkpoint"):
        load_upstream_run(run)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            {"ci_fn_type": "global_shared_mlp"},
            "CI function type 'global_shared_mlp'.*valid: mlp, vector_mlp, shared_mlp",
        ),
        (
            {"ci_config": {"mode": "global", "fn_type": "global_shared_transformer"}},
            "mode 'global'.*valid: layerwise",
        ),
        ({"ci_fn_hidden_dims": [16, 16]}, r"hidden dims \[16, 16\].*exactly one hidden layer"),
        ({"sigmoid_type": "normal"}, "sigmoid_type 'normal'.*valid: leaky_hard"),
        (
            {"identity_module_info": [{"module_pattern": "linear1", "C": 2}]},
            "identity_module_info.*valid: null",
        ),
        (
            {"pretrained_model_class": "spd.experiments.ih.model.InductionTransformer"},
            "not supported here; valid: spd",
        ),
    ],
)
def test_what_we_do_not_implement_is_refused_by_name(
    tmp_path: Path, edit: dict[str, Any], message: str
) -> None:
    with pytest.raises(UpstreamRunError, match=message):
        load_upstream_run(_copy_tms(tmp_path, edit))


def test_a_directory_that_is_neither_format_says_both(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no run\.json \(ours\) or final_config\.yaml"):
        load_run(tmp_path)
