"""spd-harvest on a saved language-model run: writes harvest.sqlite equal to an in-process
harvest."""

import random
from pathlib import Path

import pytest
from transformers import LlamaConfig, LlamaForCausalLM

from spd_core.config import DecompositionConfig, ModulePattern
from spd_core.harvest import HarvestConfig, harvest
from spd_core.harvest_cli import main
from spd_core.harvest_store import HarvestStore, component_summary
from spd_core.run import build_component_model, load_run, save_run
from spd_core.targets.spec import HFSpec
from tests.server.runs import WORDS, word_tokenizer


def test_cli_writes_the_same_statistics_as_the_library(tmp_path: Path, capsys) -> None:
    lm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(WORDS),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=32,
        )
    )
    lm.save_pretrained(tmp_path / "src")
    cfg = DecompositionConfig(
        steps=1,
        batch_size=2,
        modules=[ModulePattern(pattern="model.layers.*.mlp.*", C=4)],
        seq_len=6,
        importance_coeff=1e-3,
    )
    model = build_component_model(HFSpec(source=str(tmp_path / "src")), lm.eval(), cfg)
    save_run(
        tmp_path / "run",
        model,
        HFSpec(source=str(tmp_path / "src")),
        cfg,
        {},
        tokenizer=word_tokenizer(),
    )
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS[1:]) for _ in range(rng.randint(2, 10))) for _ in range(12)]
    (tmp_path / "corpus.txt").write_text("\n".join(texts) + "\n\n")
    assert (
        main(
            [
                str(tmp_path / "run"),
                "--texts",
                str(tmp_path / "corpus.txt"),
                "--n-texts",
                "9",
                "--batch",
                "4",
                "--processes",
                "2",
            ]
        )
        == 0
    )
    assert "harvested 9 texts" in capsys.readouterr().err
    store = HarvestStore(tmp_path / "run")
    assert store.meta["n_texts"] == 9 and store.layers == {
        "0.mlp.gate": 4,
        "0.mlp.up": 4,
        "0.mlp.down": 4,
    }
    run = load_run(tmp_path / "run")
    ref = harvest(
        run.model,
        run.tokenizer,
        texts[:9],
        HarvestConfig(max_tokens=32, batch_size=1),
        progress=False,
    )
    for s in ref.components:
        got = component_summary(store, s.layer, s.c)
        assert got["n_firing"] == s.n_firing and got["mean_ci"] == pytest.approx(
            s.mean_ci, abs=1e-6
        )
    with pytest.raises(SystemExit, match="--texts"):
        main([str(tmp_path / "run")])
    with pytest.raises(SystemExit, match="--processes must be >= 1"):
        main([str(tmp_path / "run"), "--texts", str(tmp_path / "corpus.txt"), "--processes", "0"])
