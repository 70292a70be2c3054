"""A swarm of four built-in agents on the demo run as local processes, one task made to fail.

The other three finish, the aggregation runs, the report names the failure and its reason and ranks
the surviving claims by effects it measured itself (tests/launcher/swarm_checks.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spd_mcp.launcher import cli
from spd_mcp.launcher.layout import read_json
from spd_mcp.launcher.swarm import SwarmDir
from tests.launcher.swarm_checks import check_numbers_are_measured

pytestmark = pytest.mark.slow

HYPOTHESES = """# one task per line
the he/she choice is carried by a circuit of MLP components at the last position
a handful of high-CI components decide the pronoun
this task is told to fail
induction: the model copies the token that followed the earlier occurrence
"""


def test_local_swarm_with_a_failed_task(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    hyps = tmp_path / "hyps.txt"
    hyps.write_text(HYPOTHESES)
    runs = tmp_path / "runs"
    rc = cli.main(
        [
            "How does the model choose between he and she?",
            "--hypotheses",
            str(hyps),
            "--agent",
            "builtin",
            "--executor",
            "local",
            "--parallel",
            "2",
            "--fail-task",
            "2",
            "--out",
            str(runs),
            "--follow",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0, printed[-4000:]
    (swarm_dir,) = runs.glob("swarm-*")
    sd = SwarmDir(swarm_dir)
    assert read_json(sd.meta)["status"] == "completed"
    summary = check_numbers_are_measured(sd)
    assert summary["n_tasks"] == 4 and summary["n_ok"] == 3
    (failed,) = summary["failed_tasks"]
    assert failed["index"] == 2 and failed["status"] == "failed"
    assert "exited with code 3" in failed["error"] and "injected failure" in failed["error"]
    assert "TaskFailed" in failed["log_tail"], "the job itself failed, as the scheduler saw it"
    tasks = {t["index"]: t for t in summary["tasks"]}
    assert [tasks[i]["hypothesis"] for i in range(4)] == [h for h in HYPOTHESES.splitlines()[1:]]
    mechanisms = {c["task_index"]: c["mechanism"] for c in summary["claims"]}
    assert mechanisms == {0: "pronoun_gender", 1: "pronoun_gender", 3: "induction"}, mechanisms
    # tasks of one behaviour may converge on the same set (every task also tries the circuit shared
    # by its prompts, whatever its strategy); tasks of different behaviours claim different sets
    assert {
        tuple(c["components"]) for c in summary["claims"] if c["mechanism"] == "induction"
    }.isdisjoint(
        {tuple(c["components"]) for c in summary["claims"] if c["mechanism"] == "pronoun_gender"}
    )
    report = sd.report.read_text()
    assert "## Failed tasks" in report and "t02" in report.split("## Failed tasks")[1]
    assert printed.rstrip().endswith(report.rstrip()), "--follow ends with the report"
    # watching: every task at a glance, one task's log, the report
    assert cli.main(["status", summary["swarm_id"], "--out", str(runs)]) == 0
    status = capsys.readouterr().out
    assert f"swarm {summary['swarm_id']}: completed" in status
    assert f"best claim {summary['claims'][0]['claim_id']}" in status
    for i, t in tasks.items():
        assert f"t{i:02d} {t['inv_id']}  {t['status']}" in status
    assert cli.main(["follow", summary["swarm_id"], "--task", "0", "--out", str(runs)]) == 0
    assert "No language model was used" in capsys.readouterr().out
    assert cli.main(["report", summary["swarm_id"], "--out", str(runs)]) == 0
    printed_report = capsys.readouterr().out
    best = summary["claims"][0]
    assert printed_report.startswith(
        f"answer: {summary['n_ok']}/{summary['n_tasks']} tasks finished, "
        f"{len(summary['claims'])} claims re-tested\n"
    )
    assert f"best claim {best['claim_id']}" in printed_report and printed_report.endswith(report)
    assert cli.main(["list", "--out", str(runs)]) == 0
    listed = capsys.readouterr().out
    assert summary["swarm_id"] in listed and all(t["inv_id"] in listed for t in tasks.values())
    json.loads(sd.summary.read_text())  # valid JSON
