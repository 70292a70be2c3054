"""spd-decompose: local transformers models (Llama and GPT-2 with Conv1D) and its input errors."""

import json
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from spd_core.cli import main
from spd_core.masks import ones_masks
from spd_core.recovery import tms_recovered, tms_recovery
from spd_core.run import load_run


def _save_tiny(kind: str, path: Path) -> None:
    if kind == "llama":
        model = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=40,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=2,
                max_position_embeddings=32,
            )
        )
    else:
        model = GPT2LMHeadModel(
            GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2, n_positions=32)
        )
    model.save_pretrained(path)


@pytest.mark.parametrize(
    ("kind", "module", "layers", "extra"),
    [
        ("llama", "model.layers.*.mlp.*_proj:8", {"0.mlp.up", "0.mlp.gate", "0.mlp.down"}, []),
        ("gpt2", "transformer.h.*.mlp.c_*:8", {"0.mlp.up", "0.mlp.down"}, []),
        ("gpt2", "transformer.h.*.mlp.c_*:8", {"0.mlp.up", "0.mlp.down"}, ["--workers", "2"]),
    ],
)
def test_decompose_a_local_transformers_model(
    tmp_path: Path, kind: str, module: str, layers: set[str], extra: list[str], capsys
) -> None:
    _save_tiny(kind, tmp_path / "model")
    rc = main(
        [
            "--hf",
            str(tmp_path / "model"),
            "--module",
            module,
            "--steps",
            "4",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            *extra,
        ]
    )
    assert rc == 0
    assert "run directory:" in capsys.readouterr().out
    run = load_run(tmp_path / "run")
    assert set(run.model.layers) == layers
    ids = torch.randint(0, 40, (2, 7))
    with torch.no_grad():
        tgt = run.model(ids, cache_inputs=True)
        masks, delta = ones_masks(run.model.causal_importance(tgt.inputs).lower)
        torch.testing.assert_close(
            run.model(ids, masks=masks, delta_masks=delta).output, tgt.output, atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no_such_experiment"], "unknown experiment 'no_such_experiment'; valid: tms_5-2"),
        (["missing.json"], "config file missing.json does not exist"),
        (["--hf", "/nonexistent/dir", "--module", "x:4"], "is not a transformers model directory"),
        (["--hf", "/tmp", "--module", "nocolon"], "malformed --module 'nocolon'"),
        (
            ["tms_5-2", "--workers", "3", "--batch-size", "32"],
            "batch_size 32 must be a multiple of workers 3",
        ),
    ],
)
def test_bad_input_fails_at_once_naming_what_is_valid(
    argv: list[str], message: str, capsys, tmp_path: Path
) -> None:
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_pattern_matching_nothing_lists_candidates(tmp_path: Path, capsys) -> None:
    cfg = {
        "target": {"kind": "tms", "n_features": 5, "n_hidden": 2},
        "decomposition": {
            "steps": 2,
            "batch_size": 4,
            "modules": [{"pattern": "nothing*", "C": 2}],
            "importance_coeff": 1e-3,
        },
    }
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    assert main([str(tmp_path / "c.json"), "--out", str(tmp_path / "out")]) == 2
    assert "matches no decomposable module; candidates: linear1, linear2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_toy_run_ends_with_the_delta_and_a_recovery_verdict(tmp_path: Path, capsys) -> None:
    """The verdict line's counts are the recovery checks recomputed on the saved run; the delta
    table rows are the saved components' deltas (a short run: its counts, not 5 of 5, count)."""
    assert main(["tms_5-2", "--steps", "300", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    run = load_run(tmp_path / "run")
    found = {k: tms_recovered(tms_recovery(run.model, k, 5)) for k in ("linear1", "linear2")}
    n1, n2 = len(found["linear1"]), len(found["linear2"])
    both = len(found["linear1"] & found["linear2"])
    verdict = [line for line in out.splitlines() if line.startswith("verdict:")]
    assert verdict == [
        f"verdict: features recovered {both} of 5 (linear1 {n1}/5, linear2 {n2}/5); check: with"
        " one feature at 0.75 as input, exactly one live component (CI > 0.1, norm > 0.1 of the"
        " largest) matches the feature's rank-1 piece of the weight with cosine ≥ 0.98 and norm"
        " ratio 0.9–1.1, in linear1 and linear2"
    ]
    for layer in ("linear1", "linear2"):
        comp = run.model.comp(layer)
        with torch.no_grad():
            rel = float((comp.target_weight - comp.weight()).norm() / comp.target_weight.norm())
        row = next(line.split() for line in out.splitlines() if line.startswith(f"  {layer} "))
        assert float(row[1]) == pytest.approx(rel, rel=2e-3), (layer, row)
        assert run.metrics[f"delta_rel_norm/{layer}"] == pytest.approx(rel, rel=1e-5)
    # a toy run without faithfulness relies on its delta: the table says so
    worst = max(run.metrics[f"delta_rel_norm/{k}"] for k in ("linear1", "linear2"))
    assert ("WARNING: the components do not sum to the weights" in out) == (worst > 0.01)
