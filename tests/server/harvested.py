"""A tiny Llama run with a small harvest built in the test (texts from the run's word
vocabulary)."""

import dataclasses
import random
from pathlib import Path

from spd_core.harvest import HarvestConfig, harvest
from spd_core.harvest_store import write_harvest
from spd_mcp.server.state import ServedRun
from tests.server.runs import WORDS

TEXTS_EXTRA = ["Paris is the capital of France", "the cat sat on the mat and then it was happy"]


def corpus(n: int = 24, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return TEXTS_EXTRA + [
        " ".join(rng.choice(WORDS[1:]) for _ in range(rng.randint(3, 12))) for _ in range(n)
    ]


def harvested_run(run: ServedRun, run_dir: Path, threshold: float = 0.3) -> ServedRun:
    """``run`` served from ``run_dir``, which now holds a harvest.sqlite of ``corpus()``."""
    h = harvest(
        run.model,
        run.tokenizer,
        corpus(),
        HarvestConfig(threshold=threshold, n_examples=6, window=3),
        progress=False,
    )
    write_harvest(run_dir, h, labels={("0.mlp.up", 1): "test label"})
    return dataclasses.replace(run, path=run_dir)
