"""Jobs and status: get_job, cancel_job, server_status."""

from pydantic import Field

from spd_mcp.contract.spec import ToolContract
from spd_mcp.contract.wire import MAX_WAIT_S, Input, JobBrief, JobView, Wire


class GetJobInput(Input):
    job_id: str = Field(max_length=64)
    wait_s: float = Field(10.0, ge=0, le=MAX_WAIT_S)


class CancelJobInput(Input):
    job_id: str = Field(max_length=64)


class StatusInput(Input):
    pass


class ServerStatus(Wire):
    summary: str
    run: str
    device: str
    uptime_s: float
    calls_served: int
    calls_by_outcome: dict[str, int] = Field(description="counts of ok / error / busy tool calls")
    current: JobBrief | None = Field(description="what the device is running now")
    queue: list[JobBrief]
    recent_jobs: list[JobBrief]
    rss_mb: float = Field(description="resident memory of the server process, MB")
    workspace: str | None
    events_logged: int


TOOLS = (
    ToolContract(
        name="get_job",
        group="jobs and status",
        title="Get a job's status and result",
        description=(
            "A job's status, progress and, when done, its result; waits up to wait_s. Example: "
            "get_job(job_id='j3', wait_s=30)."
        ),
        input_model=GetJobInput,
        result_model=JobView,
        read_only=True,
        idempotent=True,
    ),
    ToolContract(
        name="cancel_job",
        group="jobs and status",
        title="Cancel a job",
        description=(
            "Cancel a job: a queued one never starts, a running one stops at its next step. "
            "Example: cancel_job(job_id='j3')."
        ),
        input_model=CancelJobInput,
        result_model=JobView,
        read_only=False,
        destructive=True,
        idempotent=True,
    ),
    ToolContract(
        name="server_status",
        group="jobs and status",
        title="Server status",
        description=(
            "What the server is doing, without waiting for the device: running job, queue, "
            "uptime, calls, memory. Example: server_status()."
        ),
        input_model=StatusInput,
        result_model=ServerStatus,
        read_only=True,
    ),
)
