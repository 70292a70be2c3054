"""NativeLlama against transformers' LlamaForCausalLM: same logits, same directories, same names."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from spd_core.errors import InvalidInput
from spd_core.run import DEMO_RUN
from spd_core.targets.llama_native import NativeLlama, load_native_llama, native_copy, supports


def _hf(directory: Path) -> LlamaForCausalLM:
    return AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).float().eval()  # type: ignore[return-value]


@torch.no_grad()
def test_demo_target_logits_equal_transformers() -> None:
    native, hf = load_native_llama(DEMO_RUN / "target"), _hf(DEMO_RUN / "target")
    assert native is not None
    ids = torch.randint(
        0, hf.config.vocab_size, (6, 48), generator=torch.Generator().manual_seed(0)
    )
    diff = (native(ids).logits - hf(ids, use_cache=False).logits).abs().max()
    assert float(diff) <= 1e-5, f"max |Δlogit| {float(diff)}"
    assert dict(native.named_parameters()).keys() == dict(hf.named_parameters()).keys()


@torch.no_grad()
def test_right_padding_mask_matches_and_other_masks_are_refused() -> None:
    native, hf = load_native_llama(DEMO_RUN / "target"), _hf(DEMO_RUN / "target")
    assert native is not None
    ids = torch.randint(4, 300, (2, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # the second row is 6 tokens, right-padded
    a, b = (
        native(ids, attention_mask=mask).logits,
        hf(ids, attention_mask=mask, use_cache=False).logits,
    )
    assert (
        float((a[0] - b[0]).abs().max()) <= 1e-5
        and float((a[1, :6] - b[1, :6]).abs().max()) <= 1e-5
    )
    left = mask.flip(1)
    with pytest.raises(AssertionError, match="only right padding"):
        native(ids, attention_mask=left)


@torch.no_grad()
def test_grouped_query_tied_llama_round_trips_through_save_pretrained(tmp_path: Path) -> None:
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
                         tie_word_embeddings=True, rms_norm_eps=1e-5)  # fmt: skip
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
    native = load_native_llama(tmp_path / "hf")
    assert native is not None
    ids = torch.randint(0, 50, (3, 16))
    expected = _hf(tmp_path / "hf")(ids, use_cache=False).logits
    assert float((native(ids).logits - expected).abs().max()) <= 1e-5
    native.save_pretrained(tmp_path / "again")  # written by NativeLlama, read by transformers
    assert (
        float((_hf(tmp_path / "again")(ids, use_cache=False).logits - expected).abs().max()) <= 1e-6
    )


def test_uncovered_configs_are_named_and_left_to_transformers(tmp_path: Path) -> None:
    config = json.loads((DEMO_RUN / "target" / "config.json").read_text())
    for key, value, reason in [
        ("attention_bias", True, "no attention bias"),
        ("model_type", "gpt2", "model_type is llama"),
        ("rope_parameters", {"rope_type": "linear", "factor": 2.0}, "default RoPE"),
    ]:
        bad = {**config, key: value}
        assert supports(bad) == (False, reason)
        with pytest.raises(InvalidInput, match=reason):
            NativeLlama(bad)
        (tmp_path / "config.json").write_text(json.dumps(bad))
        assert load_native_llama(tmp_path) is None


def test_serving_the_demo_run_never_imports_transformers() -> None:
    code = (
        "import sys; from spd_mcp.server.state import load_served_run; "
        "run = load_served_run('demo'); "
        "print(type(run.model.target).__name__, 'transformers' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["NativeLlama", "False"], out


@torch.no_grad()
def test_native_copy_of_a_trained_model_saves_a_directory_transformers_loads(
    tmp_path: Path,
) -> None:
    hf = _hf(DEMO_RUN / "target")
    native = native_copy(hf)
    assert isinstance(native, NativeLlama)
    native.save_pretrained(tmp_path)
    ids = torch.randint(
        0, hf.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(2)
    )
    assert (
        float(
            (_hf(tmp_path)(ids, use_cache=False).logits - hf(ids, use_cache=False).logits)
            .abs()
            .max()
        )
        <= 1e-6
    )


def test_native_copy_of_a_fresh_model_writes_the_config_transformers_would(tmp_path: Path) -> None:
    # a target trained in this process has never been saved: its config names no architecture yet
    saved = json.loads((DEMO_RUN / "target" / "config.json").read_text())
    fresh = LlamaForCausalLM(
        LlamaConfig(
            **{
                k: v
                for k, v in saved.items()
                if k not in ("architectures", "dtype", "transformers_version")
            }
        )
    )
    fresh.load_state_dict(_hf(DEMO_RUN / "target").state_dict())
    fresh.save_pretrained(tmp_path / "hf")
    native_copy(fresh).save_pretrained(tmp_path / "native")  # type: ignore[operator]
    assert (tmp_path / "native" / "config.json").read_bytes() == (
        tmp_path / "hf" / "config.json"
    ).read_bytes()

    # against the shipped file, everything but the writer's version (a new transformers release may
    # run the test)
    def unversioned(path: Path) -> dict[str, object]:
        return {
            k: v for k, v in json.loads(path.read_text()).items() if k != "transformers_version"
        }

    assert unversioned(tmp_path / "native" / "config.json") == unversioned(
        DEMO_RUN / "target" / "config.json"
    )
