"""A swarm: N investigations of one question from different hypotheses or strategies, and its
directory.

`resolve_swarm` turns a LaunchRequest plus `--hypotheses FILE` or `--swarm N` into a SwarmSpec
(one JobSpec per task) without touching the disk. Every task is an ordinary investigation directory
under `--out` (`inv-<stamp>-tNN`, so `spd-investigate status/follow` work on it); the swarm
directory `swarm-<stamp>` links them:

    swarm-<stamp>/swarm.json          the spec, job ids and status (read-modify-write under a lock)
    swarm-<stamp>/tasks/tNN -> ../../inv-<stamp>-tNN
    swarm-<stamp>/aggregate/          the aggregation's server workspace, events and tool calls
    swarm-<stamp>/swarm_report.md, swarm_summary.json   written by the aggregation
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from spd_mcp.launcher.layout import now_iso, read_json, update_json, versions
from spd_mcp.launcher.spec import (
    Environment,
    Frozen,
    JobSpec,
    LaunchRequest,
    SpecError,
    new_inv_id,
    resolve,
)
from spd_mcp.launcher.strategies import strategy_for_task

MAX_TASKS = 64
BOTH_FLAGS = (
    "--hypotheses and --swarm were both given: use --hypotheses FILE (one task per line) or "
    "--swarm N (N tasks with different strategies), not both"
)
MAX_HYPOTHESIS_CHARS = 2000
# A server command that exits at once with a message on stderr: how `--fail-task` makes a task fail.
FAILING_SERVER = (
    sys.executable,
    "-c",
    "import sys; sys.stderr.write('injected failure: this task was "
    "told to fail (--fail-task); the server exits with code 3\\n'); sys.exit(3)",
)


class SwarmSpec(Frozen):
    """Everything the swarm needs: its tasks' JobSpecs and how many run at once."""

    swarm_id: str
    swarm_dir: str
    question: str
    run: str
    agent: str
    executor: str
    source: str = Field(description="'hypotheses FILE' or 'swarm N'")
    parallelism: int = Field(ge=1)
    tasks: tuple[JobSpec, ...] = Field(min_length=1)
    failing_tasks: tuple[int, ...] = ()
    aggregate_start_timeout_s: float = Field(default=240.0, gt=0)


def parse_hypotheses(text: str, source: str = "the hypotheses file") -> list[str]:
    """One hypothesis per non-empty line ('#' starts a comment line); SpecError naming the fix."""
    lines = [line.strip() for line in text.splitlines()]
    hyps = [line for line in lines if line and not line.startswith("#")]
    if not hyps:
        raise SpecError(
            f"{source} holds no hypothesis: write one hypothesis per line "
            "(blank lines and lines starting with # are skipped)"
        )
    if len(hyps) > MAX_TASKS:
        raise SpecError(
            f"{source} holds {len(hyps)} hypotheses; a swarm runs at most {MAX_TASKS} tasks: "
            "split the file"
        )
    long = next((i for i, h in enumerate(hyps) if len(h) > MAX_HYPOTHESIS_CHARS), None)
    if long is not None:
        raise SpecError(
            f"hypothesis {long + 1} of {source} has {len(hyps[long])} characters; keep each "
            f"to one line of at most {MAX_HYPOTHESIS_CHARS}"
        )
    seen: dict[str, int] = {}
    for i, h in enumerate(hyps):
        if h.lower() in seen:
            raise SpecError(
                f"hypotheses {seen[h.lower()] + 1} and {i + 1} of {source} are the same ({h!r}): "
                "every task of a swarm must start from a different hypothesis"
            )
        seen[h.lower()] = i
    return hyps


def load_hypotheses(path: str) -> list[str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise SpecError(
            f"hypotheses file {path!r} does not exist: give a text file with one hypothesis "
            "per line"
        )
    return parse_hypotheses(p.read_text(errors="replace"), f"hypotheses file {path!r}")


def swarm_size(hypotheses: list[str] | None, swarm: int | None) -> int:
    """The number of tasks; SpecError unless exactly one of the two ways was used, sensibly."""
    if hypotheses is not None and swarm is not None:
        raise SpecError(BOTH_FLAGS)
    if swarm is not None and not 1 <= swarm <= MAX_TASKS:
        raise SpecError(f"--swarm {swarm}: give a number of tasks from 1 to {MAX_TASKS}")
    if hypotheses is None and swarm is None:
        raise SpecError("a swarm needs --hypotheses FILE or --swarm N")
    return len(hypotheses) if hypotheses is not None else int(swarm)  # type: ignore[arg-type]


def default_parallelism(n_tasks: int, executor: str) -> int:
    """Tasks at once: all of them on SLURM (the scheduler queues), else one per CPU core."""
    return n_tasks if executor == "slurm" else max(1, min(n_tasks, os.cpu_count() or 1))


def new_swarm_id() -> str:
    return "swarm-" + new_inv_id().removeprefix("inv-")


def resolve_swarm(
    request: LaunchRequest,
    env: Environment,
    *,
    hypotheses: list[str] | None = None,
    swarm: int | None = None,
    parallelism: int | None = None,
    fail_tasks: tuple[int, ...] = (),
    swarm_id: str | None = None,
) -> SwarmSpec:
    """The SwarmSpec of a request; raises SpecError, writes nothing."""
    n = swarm_size(hypotheses, swarm)
    if parallelism is not None and parallelism < 1:
        raise SpecError(f"--parallel {parallelism}: give at least 1 task at once")
    bad = [i for i in fail_tasks if not 0 <= i < n]
    if bad:
        raise SpecError(f"--fail-task {bad[0]}: tasks are numbered 0 to {n - 1}")
    swarm_id = swarm_id or new_swarm_id()
    stamp = swarm_id.removeprefix("swarm-")
    tasks = []
    for i in range(n):
        strategy = strategy_for_task(i)
        spec = resolve(request, env, inv_id=f"inv-{stamp}-t{i:02d}")
        tasks.append(
            spec.model_copy(
                update={
                    "swarm_id": swarm_id,
                    "task_index": i,
                    "strategy": strategy.name,
                    "hypothesis": hypotheses[i] if hypotheses is not None else None,
                    "server_argv": FAILING_SERVER if i in fail_tasks else spec.server_argv,
                }
            )
        )
    first = tasks[0]
    out = Path(first.inv_dir).parent
    return SwarmSpec(
        swarm_id=swarm_id,
        swarm_dir=str(out / swarm_id),
        question=first.question,
        run=first.run,
        agent=first.agent,
        executor=first.executor,
        source=f"hypotheses file ({n} lines)" if hypotheses is not None else f"swarm {n}",
        parallelism=parallelism or default_parallelism(n, first.executor),
        tasks=tuple(tasks),
        failing_tasks=tuple(sorted(set(fail_tasks))),
    )


@dataclass(frozen=True)
class SwarmDir:
    root: Path

    @property
    def meta(self) -> Path:
        return self.root / "swarm.json"

    @property
    def tasks(self) -> Path:
        return self.root / "tasks"

    @property
    def aggregate(self) -> Path:
        return self.root / "aggregate"

    @property
    def report(self) -> Path:
        return self.root / "swarm_report.md"

    @property
    def summary(self) -> Path:
        return self.root / "swarm_summary.json"

    @property
    def submitit(self) -> Path:
        return self.root / "submitit"

    @property
    def tool_calls(self) -> Path:
        """Every tool call of the aggregation with its full result (what the report's numbers
        cite)."""
        return self.aggregate / "tool_calls.jsonl"

    def task_link(self, index: int) -> Path:
        return self.tasks / f"t{index:02d}"


def init_swarm_dir(spec: SwarmSpec) -> SwarmDir:
    """Create the swarm directory, its swarm.json and a link to every task's directory."""
    sd = SwarmDir(Path(spec.swarm_dir))
    sd.tasks.mkdir(parents=True, exist_ok=True)
    sd.aggregate.mkdir(exist_ok=True)
    for t in spec.tasks:
        link = sd.task_link(int(t.task_index or 0))
        if not link.is_symlink():
            link.symlink_to(os.path.relpath(t.inv_dir, sd.tasks))

    def fill(meta: dict[str, Any]) -> None:
        if not meta:
            meta.update(spec.model_dump(mode="json", exclude={"tasks"}))
            meta["tasks"] = [
                {
                    "index": t.task_index,
                    "inv_id": t.inv_id,
                    "inv_dir": t.inv_dir,
                    "strategy": t.strategy,
                    "hypothesis": t.hypothesis,
                }
                for t in spec.tasks
            ]
            meta.update(created=now_iso(), status="submitted", job_ids={}, versions=versions())

    update_json(sd.meta, fill)
    return sd


def record_swarm(sd: SwarmDir, **fields: Any) -> dict[str, Any]:
    """Merge fields into swarm.json (job_ids merge key by key)."""

    def merge(meta: dict[str, Any]) -> None:
        job_ids = fields.pop("job_ids", None)
        meta.update(fields)
        if job_ids:
            meta.setdefault("job_ids", {}).update(job_ids)

    return update_json(sd.meta, merge)


def load_swarm_spec(sd: SwarmDir) -> SwarmSpec:
    """The SwarmSpec back from swarm.json and the tasks' metadata.json."""
    meta = read_json(sd.meta)
    assert meta, f"{sd.root} has no swarm.json: not a swarm directory"
    tasks = []
    for t in meta["tasks"]:
        task_meta = read_json(Path(t["inv_dir"]) / "metadata.json")
        fields = set(JobSpec.model_fields)
        tasks.append(JobSpec.model_validate({k: v for k, v in task_meta.items() if k in fields}))
    keep = set(SwarmSpec.model_fields) - {"tasks"}
    return SwarmSpec.model_validate(
        {**{k: v for k, v in meta.items() if k in keep}, "tasks": tasks}
    )
