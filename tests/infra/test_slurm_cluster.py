"""The single-node SLURM cluster answers, runs sbatch jobs and submitit jobs, and reports
cancellations."""

import operator
import os
import time
from pathlib import Path

import pytest
import submitit

from tests.support.slurm import SlurmCluster, bounded, cluster_running, start_cluster

pytestmark = pytest.mark.slow

RESULT_TIMEOUT_S = 90


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.5)


def _executor(folder: Path, partition: str) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_partition=partition, cpus_per_task=1, mem_gb=1)
    return executor


def test_sinfo_shows_one_usable_node_with_the_machines_cpus(slurm_cluster: SlurmCluster) -> None:
    rows = slurm_cluster.run("sinfo", "-h", "-N", "-o", "%N|%P|%c|%T").stdout.split()
    assert len(rows) == 1, f"expected one node in one partition, got {rows}"
    node, partition, cpus, state = rows[0].split("|")
    assert (node, partition, int(cpus)) == (
        "localhost",
        f"{slurm_cluster.partition}*",
        os.cpu_count(),
    )
    assert state in ("idle", "mixed", "allocated"), f"node state {state}"


def test_sbatch_wrap_completes_and_sacct_records_it(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    out = tmp_path / "job.out"
    job_id = slurm_cluster.run(
        "sbatch",
        "--parsable",
        "--chdir",
        str(tmp_path),
        "-o",
        str(out),
        "--wrap",
        "echo $((6 * 7)) $SLURM_JOB_ID",
    ).stdout.strip()
    _wait_for(
        lambda: slurm_cluster.sacct_state(job_id) == "COMPLETED",
        RESULT_TIMEOUT_S,
        f"job {job_id} COMPLETED",
    )
    assert out.read_text().split() == [str(6 * 7), job_id]


def test_submitit_slurm_executor_returns_the_result_computed_in_the_job(
    slurm_env: SlurmCluster, tmp_path: Path
) -> None:
    executor = submitit.SlurmExecutor(folder=tmp_path / "%j", max_num_timeout=0)
    executor.update_parameters(time=5, partition=slurm_env.partition, cpus_per_task=1)
    job = executor.submit(os.getenv, "SLURM_JOB_ID")
    assert bounded(job.result, RESULT_TIMEOUT_S) == job.job_id  # it ran inside that SLURM job
    _wait_for(
        lambda: job.state == "COMPLETED", RESULT_TIMEOUT_S, "submitit to read COMPLETED from sacct"
    )


def test_submitit_map_array_returns_every_task_result(
    slurm_env: SlurmCluster, tmp_path: Path
) -> None:
    lefts, rights = [3, 5, 7], [11, 13, 17]
    jobs = _executor(tmp_path, slurm_env.partition).map_array(operator.mul, lefts, rights)
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1, (
        "map_array must submit one array job"
    )
    results = [bounded(job.result, RESULT_TIMEOUT_S) for job in jobs]
    assert results == [a * b for a, b in zip(lefts, rights, strict=True)]


def test_scancel_makes_job_result_raise_instead_of_hanging(
    slurm_env: SlurmCluster, tmp_path: Path
) -> None:
    job = _executor(tmp_path, slurm_env.partition).submit(time.sleep, 600)
    _wait_for(lambda: job.state == "RUNNING", RESULT_TIMEOUT_S, f"job {job.job_id} RUNNING")
    slurm_env.run("scancel", job.job_id)
    started = time.monotonic()
    with pytest.raises(submitit.core.utils.UncompletedJobError, match="CANCELLED"):
        bounded(job.result, RESULT_TIMEOUT_S)
    assert time.monotonic() - started < RESULT_TIMEOUT_S
    assert slurm_env.sacct_state(job.job_id).startswith("CANCELLED")


def test_up_again_is_a_no_op_on_a_running_cluster(slurm_cluster: SlurmCluster) -> None:
    conf_before = slurm_cluster.conf.read_bytes()
    ctld_pid_before = (slurm_cluster.dir / "slurmctld.pid").read_text()
    proc = start_cluster(slurm_cluster.dir)
    assert proc.returncode == 0, proc.stderr
    assert slurm_cluster.conf.read_bytes() == conf_before
    assert (slurm_cluster.dir / "slurmctld.pid").read_text() == ctld_pid_before
    assert cluster_running(slurm_cluster.dir)
