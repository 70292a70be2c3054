"""The grader subprocess the aggregation runs prints what spd_core.grader computes in process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ["0.mlp.up:9", "1.mlp.down:12"]


def test_grader_cli_matches_grade_circuit() -> None:
    import torch

    from spd_core.grader import grade_circuit, probes_from_prompts
    from spd_core.keys import ComponentKey
    from spd_core.run import load_run

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spd_core.grader",
            "--run",
            "demo",
            "--mechanism",
            "induction",
            "--components",
            *COMPONENTS,
            "--max-probes",
            "4",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (cli,) = json.loads(proc.stdout)
    run = load_run("demo")
    rows, seen = [], {}
    for p in run.probes:  # the first four probes of every mechanism, in file order
        seen[p["mechanism"]] = seen.get(p["mechanism"], 0) + 1
        if seen[p["mechanism"]] <= 4:
            rows.append(p)
    keys = [ComponentKey(k.split(":")[0], int(k.split(":")[1])) for k in COMPONENTS]
    with torch.no_grad():
        g = grade_circuit(run.model, probes_from_prompts(rows, run.tokenizer), "induction", keys)
    assert cli["components"] == COMPONENTS and cli["n_probes"] == g.n_probes == 4
    for name in (
        "necessity",
        "sufficiency",
        "specificity",
        "accuracy_before",
        "accuracy_removed",
        "accuracy_kept",
    ):
        assert cli[name] == pytest.approx(getattr(g, name), abs=1e-6), name
    assert set(cli["other_drops"]) == {"pronoun_gender", "number_agreement", "fact_lookup"}


def test_grader_cli_rejects_a_mechanism_without_probes() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spd_core.grader",
            "--mechanism",
            "nope",
            "--components",
            COMPONENTS[0],
            "--max-probes",
            "1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert proc.returncode != 0 and "no probe has mechanism 'nope'" in proc.stderr
