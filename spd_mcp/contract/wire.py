"""Bases of every tool's wire models, and the models several tools share: job views, token
probabilities."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

JobStatusName = Literal["queued", "running", "done", "error", "cancelled"]
MAX_WAIT_S = 30.0  # the longest a call waits for a job before it answers with the job to poll


class Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Input(BaseModel):
    """Base of every tool's input model: frozen, unknown fields rejected, strict types (no coercion:
    ``true`` is not the integer 1 and ``"yes"`` is not a boolean)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class LongInput(Input):
    """Base of a long tool's input: it answers with a job once it runs longer than ``wait_s``."""

    wait_s: float = Field(20.0, ge=0, le=30)


class TokenProb(Wire):
    token: str = Field(description="display string of the token")
    token_id: int
    prob: float = Field(description="probability in [0, 1]")


class JobBrief(Wire):
    job_id: str
    kind: Literal["call", "job"] = Field(
        description="'call': a short tool call; 'job': a long tool run as a job"
    )
    tool: str
    status: JobStatusName
    step: float
    total: float | None
    message: str
    elapsed_s: float


class JobView(Wire):
    """A long tool's answer: its result when it finished within wait_s, else the job to poll."""

    job_id: str
    tool: str
    status: JobStatusName
    step: float = Field(description="progress so far, in units of `total`")
    total: float | None
    message: str
    elapsed_s: float
    result: dict[str, Any] | None = Field(description="the tool's result once status is 'done'")
    error: str | None
    summary: str
