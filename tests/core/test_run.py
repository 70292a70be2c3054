"""The run directory round trip, and a killed training run that resumes from its last checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

from spd_core.config import DecompositionConfig, ModulePattern
from spd_core.decompose import decompose
from spd_core.run import build_component_model, load_run, save_run
from spd_core.targets.spec import HFSpec, RandomTokens, data_source
from spd_core.targets.tms import TMSModel, TMSSpec

CFG = DecompositionConfig(
    steps=5,
    batch_size=32,
    modules=[ModulePattern(pattern="linear*", C=4)],
    importance_coeff=1e-3,
    eval_batches=1,
    log_freq=1,
)


def _outputs(run, x):
    with torch.no_grad():
        tgt = run.model(x, cache_inputs=True)
        ci = run.model.causal_importance(tgt.inputs).lower
        return tgt.output, ci, run.model(x, masks=ci).output


def test_toy_run_round_trip_reproduces_outputs_exactly(tmp_path: Path) -> None:
    spec = TMSSpec(n_features=5, n_hidden=2)
    target = TMSModel(spec).requires_grad_(False)
    model = build_component_model(spec, target, CFG)
    decompose(model, data_source(spec, target, None), CFG, progress=False)
    save_run(tmp_path / "run", model, spec, CFG, {"x": 1.0})
    loaded = load_run(tmp_path / "run")
    x = torch.rand(16, 5)
    from types import SimpleNamespace

    for a, b in zip(_outputs(SimpleNamespace(model=model), x), _outputs(loaded, x), strict=True):
        if isinstance(a, dict):
            assert all(torch.equal(a[k], b[k]) for k in a)
        else:
            assert torch.equal(a, b)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["format_version"] == 1 and [lay["name"] for lay in meta["layers"]] == [
        "linear1",
        "linear2",
    ]
    assert loaded.config == CFG and loaded.metrics == {"x": 1.0}


def test_language_model_run_round_trip(tmp_path: Path) -> None:
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=31,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=32,
        )
    )
    lm.save_pretrained(tmp_path / "src")
    spec = HFSpec(source=str(tmp_path / "src"))
    cfg = CFG.model_copy(
        update={
            "modules": [ModulePattern(pattern="model.layers.*.mlp.*", C=4)],
            "seq_len": 6,
            "output_loss": "kl",
        }
    )
    target = LlamaForCausalLM.from_pretrained(tmp_path / "src").eval()
    model = build_component_model(spec, target, cfg)
    decompose(model, RandomTokens(31, 6), cfg, progress=False)
    save_run(tmp_path / "run", model, spec, cfg, {})
    loaded = load_run(tmp_path / "run")
    ids = torch.randint(0, 31, (2, 6))
    from types import SimpleNamespace

    a, b = _outputs(SimpleNamespace(model=model), ids), _outputs(loaded, ids)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    assert list(loaded.model.layers) == ["0.mlp.gate", "0.mlp.up", "0.mlp.down"]


def test_load_errors_name_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no run.json"):
        load_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(ValueError, match="format version 99; this spd-mcp reads version 1"):
        load_run(tmp_path)


def _spd_decompose(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "spd_core.cli",
        "tms_5-2",
        "--out",
        str(out),
        "--steps",
        "300",
        "--batch-size",
        "512",
        "--checkpoint-every",
        "40",
        "--no-progress",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


@pytest.mark.slow
def test_killed_run_resumes_from_checkpoint_and_matches_uninterrupted(tmp_path: Path) -> None:
    full = _spd_decompose(tmp_path / "full")
    out, _ = full.communicate(timeout=600)
    assert full.returncode == 0, out
    # Same target, so the interrupted run does not retrain it.
    (tmp_path / "cut").mkdir()
    os.system(f"cp -r {tmp_path / 'full' / 'target'} {tmp_path / 'cut' / 'target'}")
    cut = _spd_decompose(tmp_path / "cut")
    ckpt = tmp_path / "cut" / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and cut.poll() is None:
        time.sleep(0.05)
    os.kill(cut.pid, signal.SIGKILL)
    cut.wait()
    step = torch.load(ckpt, weights_only=False)["step"]
    assert 0 < step < 300, f"the run should have been killed mid-way, checkpoint step {step}"
    resumed = _spd_decompose(tmp_path / "cut")
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out
    assert f"resumed from step {step}" in out
    a = load_file(str(tmp_path / "full" / "components.safetensors"))
    b = load_file(str(tmp_path / "cut" / "components.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(
            a[k], b[k], atol=1e-6, rtol=1e-6, msg=f"resumed run diverged at {k}"
        )
