"""Data-parallel training over CPU processes (``workers`` > 1) against the serial loop."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from transformers import LlamaConfig, LlamaForCausalLM

from spd_core.config import DecompositionConfig, ModulePattern
from spd_core.decompose import decompose
from spd_core.run import build_component_model
from spd_core.targets.spec import HFSpec, RandomTokens, load_target

# No random masks: CI-masked reconstruction of all layers plus importance minimality, so the serial
# run and the split run see the same batches and differ only in the order of float additions.
DETERMINISTIC = DecompositionConfig(
    steps=12,
    batch_size=8,
    seq_len=6,
    modules=[ModulePattern(pattern="model.layers.*.mlp.*", C=4)],
    ci_fn_type="shared_mlp",
    ci_hidden=8,
    lr=1e-2,
    importance_coeff=1e-3,
    stochastic_recon_coeff=0.0,
    stochastic_layerwise_coeff=0.0,
    ci_recon_coeff=1.0,
    ci_recon_mode="all",
    output_loss="kl",
    faithfulness_warmup_steps=5,
    eval_batches=1,
    eval_freq=5,
    log_freq=1,
    checkpoint_freq=4,
    device="cpu",
)


def _model(tmp_path: Path, config: DecompositionConfig):
    src = tmp_path / "src"
    if not src.exists():
        torch.manual_seed(0)
        lm = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=23,
                hidden_size=16,
                intermediate_size=24,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=2,
                max_position_embeddings=16,
            )
        )
        lm.save_pretrained(src)
    spec = HFSpec(source=str(src))
    target = load_target(spec, src).requires_grad_(False).eval()
    torch.manual_seed(1)
    return build_component_model(spec, target, config)


def test_two_workers_follow_the_serial_run(tmp_path: Path) -> None:
    serial, split = _model(tmp_path, DETERMINISTIC), _model(tmp_path, DETERMINISTIC)
    one = decompose(serial, RandomTokens(23, 6), DETERMINISTIC, progress=False)
    two = decompose(
        split, RandomTokens(23, 6), DETERMINISTIC.model_copy(update={"workers": 2}), progress=False
    )
    for (name, p), q in zip(
        serial.trainable_state().items(), split.trainable_state().values(), strict=True
    ):
        torch.testing.assert_close(
            q, p, rtol=1e-4, atol=1e-6, msg=f"split run diverged from the serial run at {name}"
        )
    # the logged losses are the means over both halves of each batch, i.e. the full batch's loss
    rows1 = [r for r in one.history if "loss" in r]
    rows2 = [r for r in two.history if "loss" in r]
    assert [r["step"] for r in rows1] == [r["step"] for r in rows2] == [float(s) for s in range(12)]
    for a, b in zip(rows1, rows2, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["l0_total"] == pytest.approx(a["l0_total"], rel=1e-4, abs=1e-6)
    assert two.metrics["recon_ci"] == pytest.approx(one.metrics["recon_ci"], rel=1e-3)


def test_split_run_with_random_masks_resumes_to_the_same_components(tmp_path: Path) -> None:
    config = DETERMINISTIC.model_copy(
        update={
            "stochastic_recon_coeff": 1.0,
            "stochastic_subset_coeff": 1.0,
            "ci_recon_mode": "sequence_layer",
            "workers": 2,
        }
    )
    whole = _model(tmp_path, config)
    decompose(whole, RandomTokens(23, 6), config, progress=False)
    cut = _model(tmp_path, config)
    decompose(cut, RandomTokens(23, 6), config, tmp_path / "run", progress=False, stop_after=8)
    resumed = _model(tmp_path, config)
    result = decompose(resumed, RandomTokens(23, 6), config, tmp_path / "run", progress=False)
    assert result.resumed_from == 8
    for (name, p), q in zip(
        whole.trainable_state().items(), resumed.trainable_state().values(), strict=True
    ):
        torch.testing.assert_close(
            q, p, rtol=0, atol=0, msg=f"resumed split run diverged at {name}"
        )


def test_workers_config_errors_say_what_is_valid() -> None:
    with pytest.raises(ValidationError, match="batch_size 8 must be a multiple of workers 3"):
        DecompositionConfig.model_validate(DETERMINISTIC.model_dump() | {"workers": 3})
    with pytest.raises(ValidationError, match="with workers > 1 use 'uniform'"):
        DecompositionConfig.model_validate(
            DETERMINISTIC.model_dump()
            | {"workers": 2, "ci_recon_mode": "random_layer", "ci_recon_layer_sampling": "loss"}
        )


class _FailsInRankOne(RandomTokens):
    """Random tokens, except that the second process fails on its third batch."""

    calls = 0

    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        self.calls += 1
        if (
            torch.distributed.is_initialized()
            and torch.distributed.get_rank() == 1
            and self.calls == 3
        ):
            raise RuntimeError("planted failure in rank 1")
        return super().batch(batch_size, generator)


class _FailsToUnpickle(RandomTokens):
    """Random tokens that cannot be rebuilt in another process (the parent never unpickles them)."""

    def __setstate__(self, state: dict) -> None:
        raise RuntimeError("planted failure while a worker unpickled its arguments")


# The second case fails before the worker's first step: it joins the group before it unpickles its
# arguments, so rank 0 sees it go at the first collective instead of waiting out the rendezvous
# timeout.
@pytest.mark.parametrize(
    ("data", "planted"),
    [
        (_FailsInRankOne(23, 6), "planted failure in rank 1"),
        (_FailsToUnpickle(23, 6), "planted failure while a worker unpickled"),
    ],
)
def test_a_failing_worker_fails_the_run_instead_of_hanging(
    tmp_path: Path, data: RandomTokens, planted: str
) -> None:
    config = DETERMINISTIC.model_copy(update={"workers": 2})
    model = _model(tmp_path, config)
    with pytest.raises(RuntimeError) as err:
        decompose(model, data, config, progress=False)
    # rank 0 sees the closed connection; the note carries the failing rank's own traceback
    assert any(planted in note for note in getattr(err.value, "__notes__", [])), err.value


def test_a_split_run_leaves_nothing_behind_at_exit(tmp_path: Path) -> None:
    # worker ranks leave with os._exit, so anything they made that needs cleaning up at exit is
    # leaked; Python's resource tracker reports that on stderr when the whole program ends
    argv = [
        sys.executable,
        "-m",
        "spd_core.cli",
        "tms_5-2",
        "--workers",
        "2",
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--out",
        str(tmp_path / "run"),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "leaked" not in done.stderr, done.stderr
    assert (tmp_path / "run" / "run.json").is_file()
