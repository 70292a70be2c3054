"""Submission through submitit (the only module that imports it): SLURM or a local process.

The job is a `Checkpointable`: on preemption or time-out submitit calls `checkpoint`, which marks
the job as preempted and requeues the same spec; the restarted job finds its directory and resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import DelayedSubmission

from spd_mcp.launcher.events import EventLog
from spd_mcp.launcher.layout import InvestigationDir, init_metadata, record_job_id
from spd_mcp.launcher.spec import LOCAL_TIMEOUT_MIN, JobSpec, SlurmResources

MAX_REQUEUES = 3


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
        EventLog(InvestigationDir(Path(self.spec.inv_dir)).events, self.spec.inv_id).emit(
            "checkpoint", note="preempted or timed out: requeued, will resume in this directory")
        return DelayedSubmission(InvestigationJob(self.spec))


def slurm_parameters(res: SlurmResources, job_name: str) -> dict[str, Any]:
    """`SlurmExecutor.update_parameters` arguments for these resources (unset ones left out)."""
    params: dict[str, Any] = {"job_name": job_name, "time": res.time_min, "nodes": 1,
                              "ntasks_per_node": 1, "cpus_per_task": res.cpus,
                              "signal_delay_s": 120, "stderr_to_stdout": True}
    optional = {"partition": res.partition, "mem": res.mem, "account": res.account, "qos": res.qos,
                "gpus_per_node": res.gpus or None}
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
