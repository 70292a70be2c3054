"""Investigations submitted to a real single-node SLURM cluster through the launcher's
SlurmExecutor.

`slurm_env` (tests/support/slurm.py) brings the cluster up and sets SLURM_CONF; without SLURM or
root these tests skip locally and fail in CI (SPD_MCP_REQUIRE_SLURM).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from spd_mcp.common.events import read_events
from spd_mcp.launcher import cli
from spd_mcp.launcher.detect import slurm_answers
from spd_mcp.launcher.layout import InvestigationDir, read_json
from spd_mcp.launcher.spec import Environment, LaunchRequest, SlurmResources, resolve
from spd_mcp.launcher.submit import submit
from tests.launcher.launcher_support import STANDIN

pytestmark = pytest.mark.slow
RESOURCES = SlurmResources(time="0:10:00", cpus=1)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _slurm_spec(out: Path, note: str, **kw):
    env = Environment(slurm_available=True, slurm_note=note)
    return resolve(
        LaunchRequest(
            question=kw.pop("question", "How does the model choose between he and she?"),
            agent="builtin",
            executor="slurm",
            out=str(out),
            slurm=kw.pop("slurm", RESOURCES),
            **kw,
        ),
        env,
    )


def test_builtin_investigation_runs_under_slurm(slurm_env, tmp_path: Path) -> None:
    """The README's main command's investigation (demo run, built-in agent) as a real SLURM job."""
    ok, note = slurm_answers()
    assert ok, f"the slurm cluster is up but SLURM does not answer: {note}"
    spec = _slurm_spec(tmp_path / "runs", note, run="demo")
    job = submit(spec)
    outcome = job.result()
    inv = InvestigationDir(Path(spec.inv_dir))
    events = read_events(inv.events)
    assert outcome["status"] == "completed" and outcome["summary_written_by_launcher"] is False, (
        outcome
    )
    meta = read_json(inv.metadata)
    assert (
        meta["executor"] == "slurm"
        and meta["job_ids"] == [str(job.job_id)]
        and meta["agent"] == "builtin"
    )
    assert meta["status"] == outcome["status"]
    kinds = [e.get("kind") for e in events if e.get("source") == "launcher"]
    assert kinds[0] == "job_started" and kinds[-1] == "job_finished" and "server_stopped" in kinds
    steps = {e["step"]: e["outcome"] for e in events if e.get("kind") == "protocol_step"}
    assert steps and all(v == "ok" for v in steps.values()), steps
    assert "No language model was used" in inv.research_log.read_text()
    deadline = time.monotonic() + 60  # the result is written just before the job's process exits
    while (state := slurm_env.sacct_state(str(job.job_id))) != "COMPLETED":
        assert time.monotonic() < deadline and state in ("RUNNING", "COMPLETING", ""), state
        time.sleep(0.5)


def test_scancel_is_recorded_in_the_investigation_directory(
    slurm_env, tmp_path: Path, capsys
) -> None:
    """A running job records its own cancellation (SIGTERM); a pending one is recorded from
    sacct."""
    ok, note = slurm_answers()
    assert ok, note
    runs = tmp_path / "runs"
    node_cpus = int(slurm_env.run("sinfo", "-h", "-o", "%c").stdout.split()[0])
    # a server that never reports its port keeps a job busy (240 s) until it is cancelled
    hang = (*STANDIN, "--hang")
    running = _slurm_spec(
        runs,
        note,
        question="cancel me while running",
        server_argv=hang,
        slurm=SlurmResources(time="0:10:00", cpus=node_cpus),
    )
    running_job = submit(running)
    inv = InvestigationDir(Path(running.inv_dir))
    deadline = time.monotonic() + 120
    while "server_started" not in [e.get("kind") for e in read_events(inv.events)]:
        assert time.monotonic() < deadline and not running_job.done(), (
            "the job never started its server"
        )
        time.sleep(0.2)
    pending = _slurm_spec(runs, note, question="cancel me while pending", server_argv=hang)
    pending_job = submit(pending)  # the node's CPUs are all taken: it waits
    time.sleep(1.0)
    assert (
        slurm_env.run("squeue", "-h", "-o", "%T", "-j", str(pending_job.job_id)).stdout.strip()
        == "PENDING"
    )
    server_pid = next(
        e["pid"] for e in read_events(inv.events) if e.get("kind") == "server_started"
    )
    for job in (pending_job, running_job):
        slurm_env.run("scancel", str(job.job_id))
    for job in (pending_job, running_job):
        while not slurm_env.sacct_state(str(job.job_id)).startswith("CANCELLED"):
            assert time.monotonic() < deadline, f"sacct: {slurm_env.sacct_state(str(job.job_id))}"
            time.sleep(0.5)

    for spec, job in ((running, running_job), (pending, pending_job)):
        assert cli.main(["status", spec.inv_id, "--out", str(runs)]) == 0
        shown = capsys.readouterr().out
        assert f"investigation {spec.inv_id}: cancelled" in shown and "job_cancelled" in shown, (
            shown
        )
        d = InvestigationDir(Path(spec.inv_dir))
        outcome = read_json(d.metadata)["outcome"]
        assert (
            outcome["status"] == "cancelled"
            and not outcome["ok"]
            and outcome["job_id"] == str(job.job_id)
        )
        assert (
            cli.main(["status", spec.inv_id, "--out", str(runs)]) == 0
        )  # recorded once, not per look
        cancelled = [e for e in read_events(d.events) if e.get("kind") == "job_cancelled"]
        assert len(cancelled) == 1 and cancelled[0]["job_id"] == str(job.job_id), cancelled
    assert "SIGTERM" in read_json(inv.metadata)["outcome"]["error"]  # the job body saw it
    pending_outcome = read_json(InvestigationDir(Path(pending.inv_dir)).metadata)["outcome"]
    assert pending_outcome["recorded_by"] == "sacct" and pending_outcome["slurm_state"].startswith(
        "CANCELLED"
    )
    while _alive(server_pid):
        assert time.monotonic() < deadline, "the server outlived its cancelled job"
        time.sleep(0.2)
