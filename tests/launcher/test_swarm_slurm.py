"""A swarm of four built-in agents on the demo run as a real SLURM array, one task made to fail.

The failing task ends FAILED in SLURM's accounting, the other three complete, the aggregation job
(afterany on the array) starts only after all of them ended, and its report names the failure with
SLURM's state and ranks the surviving claims by effects it measured
(tests/launcher/swarm_checks.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from spd_mcp.common.events import read_events
from spd_mcp.launcher import cli
from spd_mcp.launcher.detect import slurm_answers
from spd_mcp.launcher.layout import read_json
from spd_mcp.launcher.spec import Environment, LaunchRequest, SlurmResources
from spd_mcp.launcher.submit import submit_swarm
from spd_mcp.launcher.swarm import SwarmDir, resolve_swarm
from tests.launcher.swarm_checks import check_numbers_are_measured
from tests.support.slurm import bounded

pytestmark = pytest.mark.slow


def _final_state(slurm_env, job_id: str, deadline: float) -> str:
    while not (state := slurm_env.sacct_state(job_id)) or state in (
        "PENDING",
        "RUNNING",
        "COMPLETING",
    ):
        assert time.monotonic() < deadline, f"job {job_id} still {state!r}"
        time.sleep(0.5)
    return state


def test_slurm_swarm_with_a_failed_task(slurm_env, tmp_path: Path, capsys) -> None:
    ok, note = slurm_answers()
    assert ok, f"the slurm cluster is up but SLURM does not answer: {note}"
    runs = tmp_path / "runs"
    req = LaunchRequest(
        question="How does the model choose between he and she?",
        agent="builtin",
        executor="slurm",
        out=str(runs),
        slurm=SlurmResources(time="0:15:00", cpus=1),
    )
    spec = resolve_swarm(
        req, Environment(slurm_available=True, slurm_note=note), swarm=4, fail_tasks=(1,)
    )
    jobs = submit_swarm(spec)
    assert set(jobs) == {"t00", "t01", "t02", "t03", "aggregate"}
    array_ids = {str(jobs[f"t{i:02d}"].job_id) for i in range(4)}
    assert len({j.split("_")[0] for j in array_ids}) == 1, f"one array: {array_ids}"
    outcome = bounded(jobs["aggregate"].result, 900)  # ~60 s on an idle 2-core machine
    assert outcome["status"] == "completed" and outcome["ok_tasks"] == 3, outcome
    deadline = time.monotonic() + 120
    states = {i: _final_state(slurm_env, str(jobs[f"t{i:02d}"].job_id), deadline) for i in range(4)}
    assert states == {0: "COMPLETED", 1: "FAILED", 2: "COMPLETED", 3: "COMPLETED"}, states

    sd = SwarmDir(Path(spec.swarm_dir))
    summary = check_numbers_are_measured(sd)
    (failed,) = summary["failed_tasks"]
    assert (
        failed["index"] == 1 and failed["slurm_state"] == "FAILED" and failed["exit_code"] == "1:0"
    )
    assert "exited with code 3" in failed["error"] and "TaskFailed" in failed["log_tail"]
    assert "SLURM state FAILED, exit code 1:0" in sd.report.read_text()
    assert {c["task_index"] for c in summary["claims"]} == {0, 2, 3}
    # tasks 0 and 2 find their circuits on the same prompts and may converge on the same set (every
    # task also tries the circuit shared by its prompts); task 3 (the other-prompt strategy) starts
    # elsewhere
    assert len({tuple(c["components"]) for c in summary["claims"]}) >= 2, (
        "the strategies claim different circuits"
    )
    # afterany: the aggregation started after every task had finished its records
    started = next(
        e["t"]
        for e in read_events(sd.aggregate / "events.jsonl")
        if e.get("kind") == "aggregate_started"
    )
    for t in spec.tasks:
        finished = [
            e["t"]
            for e in read_events(Path(t.inv_dir) / "events.jsonl")
            if e.get("kind") == "job_finished"
        ]
        assert finished and max(finished) <= started, t.inv_id
    meta = read_json(sd.meta)
    assert meta["status"] == "completed" and meta["job_ids"]["aggregate"] == str(
        jobs["aggregate"].job_id
    )
    assert cli.main(["status", spec.swarm_id, "--out", str(runs)]) == 0
    status = capsys.readouterr().out
    assert f"swarm {spec.swarm_id}: completed" in status and "failed" in status
