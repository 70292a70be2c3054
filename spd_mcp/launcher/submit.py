"""Submission through submitit (the only module that imports it): SLURM or a local process.

The job is a `Checkpointable`: on preemption or time-out submitit calls `checkpoint`, which marks
the job as preempted and requeues the same spec; the restarted job finds its directory and resumes.

A swarm on SLURM is one job array (submitted in a `batch()`, at most `parallelism` tasks at once)
plus the aggregation job, which depends on the array with `afterany` so it runs however the tasks
end. Locally one coordinator job runs the tasks as local jobs, `parallelism` at a time, then the
aggregation. A task whose investigation failed raises, so the scheduler records it as FAILED.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import DelayedSubmission

from spd_mcp.common.events import EventLog
from spd_mcp.launcher.layout import InvestigationDir, init_metadata, record_job_id
from spd_mcp.launcher.spec import LOCAL_TIMEOUT_MIN, JobSpec, SlurmResources
from spd_mcp.launcher.swarm import SwarmDir, SwarmSpec, init_swarm_dir, record_swarm

MAX_REQUEUES = 3
LOCAL_POLL_S = 0.5


class InvestigationJob(submitit.helpers.Checkpointable):
    """The submitted callable: runs the job body for one spec."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec

    def __call__(self) -> dict[str, Any]:
        from spd_mcp.launcher.job import run_job  # the MCP client and agents load only in the job

        env = submitit.JobEnvironment()
        return run_job(self.spec, job_id=str(env.job_id))

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        from spd_mcp.launcher.job import PREEMPTED

        PREEMPTED.set()
        events = InvestigationDir(Path(self.spec.inv_dir)).events
        with EventLog(events, self.spec.inv_id, source="launcher") as log:
            log.emit(
                "checkpoint", note="preempted or timed out: requeued, will resume in this directory"
            )
        return DelayedSubmission(InvestigationJob(self.spec))


def slurm_parameters(res: SlurmResources, job_name: str) -> dict[str, Any]:
    """`SlurmExecutor.update_parameters` arguments for these resources (unset ones left out)."""
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": res.time_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": res.cpus,
        "signal_delay_s": 120,
        "stderr_to_stdout": True,
    }
    optional = {
        "partition": res.partition,
        "mem": res.mem,
        "account": res.account,
        "qos": res.qos,
        "gpus_per_node": res.gpus or None,
    }
    params.update({k: v for k, v in optional.items() if v is not None})
    return params


def make_executor(spec: JobSpec) -> submitit.Executor:
    """The executor for the spec's executor kind, named explicitly (never AutoExecutor's guess)."""
    folder = InvestigationDir(Path(spec.inv_dir)).submitit
    if spec.executor == "slurm":
        assert spec.slurm is not None, "a SLURM job needs its resources in the spec"
        ex: submitit.Executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
        ex.update_parameters(**slurm_parameters(spec.slurm, f"spd-investigate-{spec.inv_id}"))
    else:
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=MAX_REQUEUES)
        ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
    return ex


def submit(spec: JobSpec) -> submitit.Job[dict[str, Any]]:
    """Create the investigation directory, submit the job, record its id; the submitit job."""
    inv = InvestigationDir(Path(spec.inv_dir))
    init_metadata(spec, inv)
    job = make_executor(spec).submit(InvestigationJob(spec))
    record_job_id(inv, str(job.job_id))
    return job


class TaskFailed(RuntimeError):
    """A swarm task whose investigation failed (the scheduler then records the job as FAILED)."""


class SwarmTaskJob(InvestigationJob):
    """One task of a swarm: the investigation job, failing loudly when the investigation failed."""

    def __call__(self) -> dict[str, Any]:
        outcome = super().__call__()
        if outcome.get("status") == "failed":
            raise TaskFailed(
                f"task {self.spec.task_index} ({self.spec.inv_id}) failed: {outcome.get('error')}"
            )
        return outcome

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        super().checkpoint(*args, **kwargs)
        return DelayedSubmission(SwarmTaskJob(self.spec))


class AggregateJob:
    """The aggregation step of a swarm (see aggregate.py)."""

    def __init__(self, spec: SwarmSpec) -> None:
        self.spec = spec

    def __call__(self) -> dict[str, Any]:
        from spd_mcp.launcher.aggregate import run_aggregate

        return run_aggregate(self.spec, job_id=str(submitit.JobEnvironment().job_id))


class LocalSwarmJob:
    """Locally: run the tasks as local jobs, `parallelism` at a time, then the aggregation."""

    def __init__(self, spec: SwarmSpec) -> None:
        self.spec = spec

    def __call__(self) -> dict[str, Any]:
        import time

        from spd_mcp.launcher.aggregate import run_aggregate

        sd = SwarmDir(Path(self.spec.swarm_dir))
        coordinator = str(submitit.JobEnvironment().job_id)
        record_swarm(sd, status="running", job_ids={"coordinator": coordinator})
        ex = submitit.LocalExecutor(folder=sd.submitit / "tasks", max_num_timeout=MAX_REQUEUES)
        ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
        waiting, running = list(self.spec.tasks), []
        while waiting or running:
            running = [j for j in running if not j.done()]
            while waiting and len(running) < self.spec.parallelism:
                task = waiting.pop(0)
                job = ex.submit(SwarmTaskJob(task))
                record_job_id(InvestigationDir(Path(task.inv_dir)), str(job.job_id))
                record_swarm(sd, job_ids={f"t{task.task_index:02d}": str(job.job_id)})
                running.append(job)
            time.sleep(LOCAL_POLL_S)
        return run_aggregate(self.spec, job_id=coordinator)


def submit_swarm(spec: SwarmSpec) -> dict[str, submitit.Job[Any]]:
    """Create the swarm's directories, submit its tasks and aggregation; the jobs by role.

    SLURM: {'tNN': task job, ..., 'aggregate': job}; local: {'coordinator': job} (it runs
    everything).
    """
    sd = init_swarm_dir(spec)
    for task in spec.tasks:
        init_metadata(task, InvestigationDir(Path(task.inv_dir)))
    if spec.executor != "slurm":
        ex = submitit.LocalExecutor(folder=sd.submitit, max_num_timeout=MAX_REQUEUES)
        ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
        job = ex.submit(LocalSwarmJob(spec))
        record_swarm(sd, job_ids={"coordinator": str(job.job_id)})
        return {"coordinator": job}
    res = spec.tasks[0].slurm
    assert res is not None, "a SLURM swarm needs its resources in the task specs"
    ex = submitit.SlurmExecutor(folder=sd.submitit / "tasks", max_num_timeout=MAX_REQUEUES)
    ex.update_parameters(
        **slurm_parameters(res, f"spd-swarm-{spec.swarm_id}"), array_parallelism=spec.parallelism
    )
    with ex.batch():
        jobs = [ex.submit(SwarmTaskJob(task)) for task in spec.tasks]
    by_role: dict[str, submitit.Job[Any]] = {}
    for task, job in zip(spec.tasks, jobs, strict=True):
        record_job_id(InvestigationDir(Path(task.inv_dir)), str(job.job_id))
        by_role[f"t{task.task_index:02d}"] = job
    array_id = str(jobs[0].job_id).split("_")[0]
    agg = submitit.SlurmExecutor(folder=sd.submitit / "aggregate")
    agg.update_parameters(
        **slurm_parameters(res, f"spd-swarm-aggregate-{spec.swarm_id}"),
        dependency=f"afterany:{array_id}",
    )
    by_role["aggregate"] = agg.submit(AggregateJob(spec))
    record_swarm(
        sd,
        status="submitted",
        array_job_id=array_id,
        job_ids={role: str(j.job_id) for role, j in by_role.items()},
    )
    return by_role
