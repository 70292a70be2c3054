"""The built-in protocol on a toy run of the public SPD implementation (the TMS 5-2 fixture): it
names which component carries which feature, and the answer is checked against the fixture's known
feature directions by a second route (each named component's rank-1 weight against the target's
feature column, computed here from the loaded run, not through the tools or CI).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from spd_core.run import load_run
from spd_mcp.common.events import read_events
from spd_mcp.launcher import cli
from spd_mcp.launcher.agents.builtin_toy import NECESSARY_MAX, FeatureFinding, verdicts
from spd_mcp.launcher.layout import InvestigationDir, read_json

ROOT = Path(__file__).resolve().parents[2]
TMS = ROOT.parent / "shared" / "fixtures" / "upstream_spd" / "tms_5-2"


def test_verdicts_follow_the_held_out_numbers() -> None:
    f = FeatureFinding(
        0,
        base={0.25: 0.1, 0.5: 0.4, 1.0: 1.0},
        carriers=["a:1"],
        removed={0.25: 0.0, 0.5: 0.01, 1.0: 0.02},
        alone={0.25: 0.095, 0.5: 0.39, 1.0: 0.98},
        others_moved=0.03,
    )
    assert verdicts(f) == {"necessary": "holds", "sufficient": "holds", "specific": "holds"}
    leaky = FeatureFinding(
        0,
        base=f.base,
        carriers=["a:1"],
        removed={**f.removed, 0.25: NECESSARY_MAX * 0.1 * 1.5},
        alone={**f.alone, 1.0: 0.7},
        others_moved=0.5,
    )
    assert verdicts(leaky) == {"necessary": "fails", "sufficient": "fails", "specific": "fails"}


@torch.no_grad()
def _feature_direction_cos(model, component: str, feature: int) -> float:
    layer, c = component.split(":")
    comp = model.comp(layer)
    w1 = model.comp(
        "linear1"
    ).target_weight  # (hidden, features): feature f's direction is its column
    w = comp.component_weight(int(c))
    truth = torch.zeros_like(w)
    if layer == "linear1":
        truth[:, feature] = w1[:, feature]
    else:
        truth[feature, :] = w1[:, feature]
    return float(torch.nn.functional.cosine_similarity(w.flatten(), truth.flatten(), dim=0))


@pytest.mark.slow  # starts a server process
@pytest.mark.skipif(
    not TMS.is_dir(), reason=f"upstream SPD fixtures not found at {TMS} (../shared beside the repo)"
)
def test_builtin_protocol_names_the_carrier_of_each_tms_feature(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    rc = cli.main(
        [
            "Which component carries which feature?",
            "--agent",
            "builtin",
            "--executor",
            "local",
            "--run",
            str(TMS),
            "--out",
            str(tmp_path / "runs"),
            "--follow",
        ]
    )
    printed = capsys.readouterr().out
    (inv_dir,) = (tmp_path / "runs").iterdir()
    inv = InvestigationDir(inv_dir)
    steps = [
        e
        for e in read_events(inv.events)
        if e.get("kind") == "protocol_step" and e["step"] != "log"
    ]
    assert [(e["step"], e["outcome"]) for e in steps] == [
        ("model info", "ok"),
        ("feature outputs", "ok"),
        ("carriers", "ok"),
        ("validation", "ok"),
        ("hypotheses", "ok"),
    ], printed
    assert rc == 0 and read_json(inv.summary)["status"] == "completed", printed

    hyps = {
        h["id"]: h
        for h in map(json.loads, (inv.root / "hypotheses.jsonl").read_text().splitlines())
    }
    assert sorted(hyps) == [f"h_feature_{f}" for f in range(5)]
    model = load_run(TMS).model
    named: set[str] = set()
    for f in range(5):
        h = hyps[f"h_feature_{f}"]
        assert h["status"] == "supported", h
        carriers = re.search(r"carried by (.+?): ", h["statement"]).group(1).split(", ")  # type: ignore[union-attr]
        assert sorted(c.split(":")[0] for c in carriers) == ["linear1", "linear2"], carriers
        for comp in carriers:
            assert _feature_direction_cos(model, comp, f) > 0.99, (f, comp)
        named |= set(carriers)
    assert len(named) == 10  # five features, one component per matrix each, none shared
    summary = read_json(inv.summary)["summary"]
    assert "5 of 5 represented features" in summary and "feature 2 → " in summary
