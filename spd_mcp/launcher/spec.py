"""What a launch asks for (LaunchRequest) and what a job runs (JobSpec): frozen, validated models.

`resolve` turns a request plus the probed environment into a JobSpec without touching the disk,
so bad input fails before any directory exists. Every error is a `SpecError` whose single line
says what was wrong and how to fix it.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

AgentChoice = Literal["auto", "claude_code", "anthropic_api", "builtin"]
ExecutorChoice = Literal["auto", "local", "slurm"]
Agent = Literal["claude_code", "anthropic_api", "builtin"]
Executor = Literal["local", "slurm"]

AGENT_CHOICES: tuple[str, ...] = ("auto", "claude_code", "anthropic_api", "builtin")
EXECUTOR_CHOICES: tuple[str, ...] = ("auto", "local", "slurm")
# Back ends this build can run.
AVAILABLE_AGENTS: tuple[str, ...] = ("claude_code", "anthropic_api", "builtin")
DEFAULT_MODELS: dict[str, str] = {
    "claude_code": "opus",
    "anthropic_api": "claude-opus-4-5",
    "builtin": "none",
}
DEFAULT_OUT = "investigations/runs"
LOCAL_TIMEOUT_MIN = 24 * 60

_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")
_MEM = re.compile(r"^\d+[KMGT]?$")


class SpecError(ValueError):
    """A launch that cannot run; the message is one line that names the fix."""


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def slurm_time_minutes(text: str) -> int:
    """Minutes in a SLURM time string: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (rounded
    up)."""
    m = _TIME.match(text.strip())
    if not m:
        raise ValueError(f"time {text!r} is not a SLURM time: use MM, HH:MM:SS or D-HH:MM:SS")
    days, a, b, c = m.groups()
    n = [int(g or 0) for g in (days, a, b, c)]
    if days is not None:  # D-HH[:MM[:SS]]
        secs = n[0] * 86400 + n[1] * 3600 + n[2] * 60 + n[3]
    elif c is not None:  # HH:MM:SS
        secs = n[1] * 3600 + n[2] * 60 + n[3]
    elif b is not None:  # MM:SS
        secs = n[1] * 60 + n[2]
    else:  # MM
        secs = n[1] * 60
    if secs <= 0:
        raise ValueError(f"time {text!r} is zero: give a positive limit such as 4:00:00")
    return -(-secs // 60)


class SlurmResources(Frozen):
    """Resources of the SLURM job (sbatch options)."""

    partition: str | None = Field(
        default=None, description="sbatch --partition; cluster default if unset"
    )
    time: str = Field(default="8:00:00", description="sbatch --time, e.g. 4:00:00 or 1-00:00:00")
    gpus: int = Field(default=0, ge=0, le=16, description="GPUs per node")
    cpus: int = Field(default=4, ge=1, le=256, description="CPUs per task")
    mem: str | None = Field(default=None, description="memory per node, e.g. 32G")
    account: str | None = Field(default=None, description="sbatch --account")
    qos: str | None = Field(default=None, description="sbatch --qos")

    @field_validator("time")
    @classmethod
    def _time(cls, v: str) -> str:
        slurm_time_minutes(v)
        return v

    @field_validator("mem")
    @classmethod
    def _mem(cls, v: str | None) -> str | None:
        if v is not None and not _MEM.match(v.upper()):
            raise ValueError(f"mem {v!r} is not a SLURM size: use e.g. 32G or 16000M")
        return None if v is None else v.upper()

    @property
    def time_min(self) -> int:
        return slurm_time_minutes(self.time)


class LaunchRequest(Frozen):
    """What the user typed, parsed; `slurm` is None when no SLURM option was given."""

    question: str = Field(min_length=1)
    question_file: str | None = None
    run: str = "demo"
    agent: AgentChoice = "auto"
    executor: ExecutorChoice = "auto"
    slurm: SlurmResources | None = None
    max_turns: int = Field(default=50, ge=1, le=2000)
    budget_usd: float = Field(default=10.0, gt=0, le=10_000)
    model: str | None = None
    follow: bool = False
    out: str = DEFAULT_OUT
    server_argv: tuple[str, ...] | None = None


class Environment(Frozen):
    """What the machine offers, probed once by `detect.probe` (tests build it by hand)."""

    claude_bin: str | None = None
    claude_authenticated: bool = False
    claude_note: str = ""
    api_key_set: bool = False
    slurm_available: bool = False
    slurm_note: str = ""


class JobSpec(Frozen):
    """Everything the job body needs; pickled into the submitit job, written to metadata.json."""

    inv_id: str
    inv_dir: str
    question: str
    question_file: str | None = None
    run: str
    agent: Agent
    agent_reason: str
    executor: Executor
    executor_reason: str
    slurm: SlurmResources | None = None
    max_turns: int = Field(ge=1)
    budget_usd: float = Field(gt=0)
    model: str
    claude_bin: str | None = None
    server_argv: tuple[str, ...] | None = None
    server_start_timeout_s: float = Field(default=240.0, gt=0)
    server_stop_grace_s: float = Field(default=10.0, ge=0)
    agent_timeout_s: float | None = None
    # Set for a task of a swarm (swarm.py): where it belongs and where it starts from.
    swarm_id: str | None = None
    task_index: int | None = Field(default=None, ge=0)
    hypothesis: str | None = None
    strategy: str | None = None


def one_line(err: ValidationError) -> str:
    """The first pydantic error as `field: message` on one line."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "input"
    return f"{loc}: {first['msg']}".replace("\n", " ")


def load_question(arg: str) -> tuple[str, str | None]:
    """The question text and its source file (for `@path`); SpecError if empty or missing."""
    source = None
    text = arg
    if arg.startswith("@"):
        source = arg[1:]
        path = Path(source).expanduser()
        if not path.is_file():
            raise SpecError(
                f"question file {source!r} does not exist: give an existing file after @, "
                "or the question itself in quotes"
            )
        text = path.read_text()
    if not text.strip():
        where = f"file {source!r} is empty" if source else "question is empty"
        raise SpecError(
            f"the {where}: pass the question in quotes, e.g. "
            'spd-investigate "How does the model choose between he and she?"'
        )
    return text.strip(), source


def resolve_run(run: str) -> str:
    """`demo`, or the absolute path of an existing run directory (it holds run.json, or
    final_config.yaml when the public SPD implementation wrote it)."""
    if run == "demo":
        return run
    path = Path(run).expanduser()
    if not path.is_dir():
        raise SpecError(
            f"run directory {run!r} does not exist: pass --run demo or the path of a "
            "run directory (one holding run.json)"
        )
    if not (path / "run.json").is_file() and not (path / "final_config.yaml").is_file():
        raise SpecError(
            f"{run!r} is not a run directory (no run.json inside): pass --run demo, a "
            "directory written by spd-decompose, or one of goodfire-ai/spd "
            "(final_config.yaml + model_<step>.pth)"
        )
    return str(path.resolve())


def choose_agent(choice: str, env: Environment) -> tuple[Agent, str]:
    """The agent back end and a one-line reason. `auto` takes Claude Code when its CLI is found and
    authenticated, else the Anthropic API when a key is set, else the built-in protocol."""
    if choice not in AGENT_CHOICES:
        raise SpecError(f"unknown agent {choice!r}: choose one of {', '.join(AGENT_CHOICES)}")
    if choice == "claude_code":
        if env.claude_bin is None:
            raise SpecError(
                "--agent claude_code but the claude CLI was not found: install "
                "@anthropic-ai/claude-code (or set SPD_CLAUDE_BIN), or use --agent auto"
            )
        if not env.claude_authenticated:
            raise SpecError(
                "--agent claude_code but claude is not authenticated for headless use: "
                "set ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN (claude setup-token)"
            )
        return "claude_code", f"requested; {env.claude_note}".rstrip("; ")
    if choice == "anthropic_api":
        if not env.api_key_set:
            raise SpecError(
                "--agent anthropic_api needs ANTHROPIC_API_KEY in the environment: set it, "
                "or use --agent auto"
            )
        return "anthropic_api", "requested"
    if choice == "builtin":
        return "builtin", "requested"
    if env.claude_bin and env.claude_authenticated:
        return "claude_code", f"claude CLI found and authenticated ({env.claude_note})"
    if env.api_key_set:
        why = f"claude CLI not usable ({env.claude_note})" if env.claude_note else "no claude CLI"
        return "anthropic_api", f"{why}; ANTHROPIC_API_KEY is set"
    return "builtin", "no authenticated claude CLI and no ANTHROPIC_API_KEY: no language model used"


def choose_executor(choice: str, slurm_given: bool, env: Environment) -> tuple[Executor, str]:
    """Local or SLURM, and a one-line reason; SLURM options only make sense with SLURM."""
    if choice not in EXECUTOR_CHOICES:
        raise SpecError(f"unknown executor {choice!r}: choose one of {', '.join(EXECUTOR_CHOICES)}")
    if choice == "local":
        if slurm_given:
            raise SpecError(
                "SLURM options (--partition/--time/--gpus/--cpus/--mem/--account/--qos) "
                "were given with --executor local: drop them, or use --executor slurm"
            )
        return "local", "requested"
    if choice == "slurm":
        if not env.slurm_available:
            raise SpecError(
                f"--executor slurm but SLURM does not answer here ({env.slurm_note}): "
                "run on a SLURM login node, or use --executor local"
            )
        return "slurm", "requested"
    if env.slurm_available:
        return "slurm", f"sbatch available and answering ({env.slurm_note})"
    if slurm_given:
        raise SpecError(
            f"SLURM options were given but SLURM does not answer here ({env.slurm_note}): "
            "drop them to run locally, or run on a SLURM login node"
        )
    return "local", f"no SLURM here ({env.slurm_note}); running as a local process"


def new_inv_id(now: datetime | None = None) -> str:
    """A sortable, unique investigation id: inv-YYYYMMDD-HHMMSS-<6 hex>."""
    now = now or datetime.now(UTC)
    return f"inv-{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def resolve(request: LaunchRequest, env: Environment, inv_id: str | None = None) -> JobSpec:
    """The JobSpec for a request in an environment; raises SpecError, writes nothing."""
    run = resolve_run(request.run)
    agent, agent_reason = choose_agent(request.agent, env)
    executor, executor_reason = choose_executor(request.executor, request.slurm is not None, env)
    if agent not in AVAILABLE_AGENTS:
        raise SpecError(
            f"agent {agent!r} ({agent_reason}) is not available in this build yet: set "
            "ANTHROPIC_API_KEY, or install and authenticate the claude CLI"
        )
    if agent == "builtin" and request.model:
        raise SpecError(
            "--model has no effect with the built-in agent (it uses no language model): "
            "drop --model, or choose --agent claude_code / anthropic_api"
        )
    inv_id = inv_id or new_inv_id()
    out = Path(request.out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {request.out!r} is a file: give a directory for investigations")
    try:
        return JobSpec(
            inv_id=inv_id,
            inv_dir=str(out / inv_id),
            question=request.question,
            question_file=request.question_file,
            run=run,
            agent=agent,
            agent_reason=agent_reason,
            executor=executor,
            executor_reason=executor_reason,
            slurm=(request.slurm or SlurmResources()) if executor == "slurm" else None,
            max_turns=request.max_turns,
            budget_usd=request.budget_usd,
            model=request.model or DEFAULT_MODELS[agent],
            claude_bin=env.claude_bin if agent == "claude_code" else None,
            server_argv=request.server_argv,
        )
    except ValidationError as err:
        raise SpecError(one_line(err)) from None
