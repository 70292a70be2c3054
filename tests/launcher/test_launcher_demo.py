"""The README's main command on the shipped demo run: the built-in agent investigates he/she, every
protocol step completes, and what it concludes is what its held-out validation measured."""

from __future__ import annotations

import json
import sqlite3
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
    steps = [e for e in read_events(inv.events) if e.get("kind") == "protocol_step" and e["step"] != "log"]
    assert steps and all(e["outcome"] == "ok" for e in steps), [(e["step"], e["note"][:200]) for e in steps]
    log = inv.research_log.read_text()
    assert "No language model was used" in log and "The question is about 'pronoun_gender'" in log
    hyps = [json.loads(line) for line in (inv.root / "hypotheses.jsonl").read_text().splitlines()]
    assert {h["id"] for h in hyps} == {"h_behaviour", "h_necessary", "h_specific", "h_sufficient"}
    (expl,) = [json.loads(x) for x in (inv.root / "explanations.jsonl").read_text().splitlines()]
    store = sqlite3.connect(inv.root / "store.sqlite")
    (cited,) = [json.loads(d) for (d,) in store.execute("SELECT data FROM validations WHERE id = ?",
                                                       (expl["validation_ids"][0],))]
    # held-out: none of the prompts the circuit was found on is among the validation's examples
    found_on = [c for c in read_events(inv.events) if c.get("type") == "tool_call" and c.get("tool") == "validate_claim"]
    excluded = set(found_on[0]["args"]["exclude"])
    assert excluded and not excluded & {r["text"] for r in cited["examples"]}
    supported = cited["necessity"] == "holds"
    assert expl["status"] == ("supported" if supported else "refuted" if cited["necessity"] == "fails" else "inconclusive")
    assert read_json(inv.summary)["status"] == ("completed" if supported else "inconclusive")
    svgs = list((inv.root / "artifacts").glob("*.svg"))
    assert svgs and svgs[0].read_text().lstrip().startswith("<svg")
