"""The README's main command on the shipped demo run: the built-in agent investigates he/she and
every protocol step completes and the ablation it reports comes from successful ablate calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spd_mcp.launcher import cli
from spd_mcp.launcher.events import read_events
from spd_mcp.launcher.layout import InvestigationDir, read_json

pytestmark = pytest.mark.slow


def test_builtin_investigation_of_the_demo_run(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    rc = cli.main(["How does the model choose between he and she?", "--agent", "builtin", "--executor", "local",
                   "--run", "demo", "--out", str(tmp_path), "--follow"])
    printed = capsys.readouterr().out
    assert rc == 0, printed[-3000:]
    (inv_dir,) = tmp_path.iterdir()
    inv = InvestigationDir(inv_dir)
    assert read_json(inv.summary)["status"] == "completed"
    steps = [e for e in read_events(inv.events) if e.get("kind") == "protocol_step" and e["step"] != "log"]
    assert steps and all(e["outcome"] == "ok" for e in steps), [(e["step"], e["note"][:200]) for e in steps]
    log = inv.research_log.read_text()
    assert "No language model was used" in log and "pronoun_gender" in log
    hyps = [json.loads(line) for line in (inv.root / "hypotheses.jsonl").read_text().splitlines()]
    assert {h["id"] for h in hyps} == {"h_behaviour", "h_necessary", "h_sufficient"}
    assert (inv.root / "explanations.jsonl").read_text().strip()
    svgs = list((inv.root / "artifacts").glob("*.svg"))
    assert svgs and svgs[0].read_text().lstrip().startswith("<svg")
    # The ablation table in the log reports the probabilities the server returned for that call.
    calls = [e for e in read_events(inv.events) if e.get("type") == "tool_call" and e.get("tool") == "ablate"]
    assert calls and all(e["outcome"] == "ok" for e in calls)
    assert "| remove | deterministic |" in log
