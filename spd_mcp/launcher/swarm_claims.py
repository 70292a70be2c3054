"""Read a swarm's task directories: how each task ended (and why, if it failed) and the circuits it
claims.

A claim is one saved explanation (`explanations.jsonl`): a set of components, the prompt it was
found on and the behaviour. The agent's own verdicts on it come from its hypotheses
(`hypotheses.jsonl`): a hypothesis about removing / necessity or keeping only / sufficiency whose
statement names the same components (or, when the task has one claim, names none). Numbers the
agents wrote are kept only as text (`agent_text`): the aggregation measures its own.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spd_mcp.launcher.findings import read_jsonl
from spd_mcp.launcher.layout import InvestigationDir, read_json
from spd_mcp.launcher.scheduler_state import reconcile
from spd_mcp.launcher.server_proc import log_tail
from spd_mcp.launcher.spec import JobSpec

# '<layer>:<c>' (layer names hold dots), not the '<layer>:<pos>:<c>' of a node.
COMPONENT = re.compile(r"(?<![\w.:])(\d+\.[A-Za-z_][\w.]*:\d+)(?![\w:])")
NECESSITY_WORDS = ("necess", "remov", "ablating")
SUFFICIENCY_WORDS = ("suffic", "keep only", "keeping only", "keep_only")
OK_STATUSES = frozenset({"completed", "max_turns", "budget", "incomplete"})


@dataclass(frozen=True)
class TaskRecord:
    index: int
    inv_id: str
    inv_dir: str
    strategy: str | None
    hypothesis: str | None
    status: str
    ok: bool
    job_id: str | None
    error: str | None = None
    slurm_state: str | None = None
    exit_code: str | None = None
    log_tail: str = ""
    n_hypotheses: int = 0
    n_explanations: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Claim:
    claim_id: str
    task_index: int
    inv_id: str
    components: tuple[str, ...]
    subject_prompt: str
    behaviour: str
    confidence: str
    agent_verdicts: dict[str, str] = field(
        default_factory=dict
    )  # necessary/sufficient -> the agent's status
    agent_text: str = ""


def components_in(text: str) -> set[str]:
    return set(COMPONENT.findall(text))


def sacct_exit(job_id: str, timeout_s: float = 15.0) -> tuple[str | None, str | None]:
    """(State, ExitCode) of a SLURM job or array task from sacct; (None, None) when it cannot
    tell."""
    try:
        proc = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "State,ExitCode", "-j", job_id],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    rows = [line.split("|") for line in proc.stdout.splitlines() if "|" in line]
    return (rows[0][0], rows[0][1]) if proc.returncode == 0 and rows else (None, None)


def job_log_tail(submitit_root: Path, job_id: str, lines: int = 12) -> str:
    """The end of the submitit log of a job (stderr, else stdout), searched under the swarm's
    folder."""
    for suffix in ("err", "out"):
        hits = sorted(submitit_root.rglob(f"{job_id}_0_log.{suffix}"))
        text = hits[0].read_text(errors="replace").strip() if hits else ""
        if text:
            return "\n".join(text.splitlines()[-lines:])
    return ""


def read_task(spec: JobSpec, submitit_root: Path) -> TaskRecord:
    """How one task ended; for a failure: the recorded error, SLURM's state and exit code, the log's
    end."""
    inv = InvestigationDir(Path(spec.inv_dir))
    reconcile(inv)
    meta = read_json(inv.metadata)
    outcome = meta.get("outcome") or {}
    status = str(meta.get("status") or "missing")
    job_ids = meta.get("job_ids") or []
    job_id = str(job_ids[-1]) if job_ids else None
    ok = status in OK_STATUSES
    state = code = None
    tail = ""
    if not ok:
        if spec.executor == "slurm" and job_id:
            state, code = sacct_exit(job_id)
        tail = job_log_tail(submitit_root, job_id) if job_id else ""
        if not tail and inv.server_log.exists():
            tail = log_tail(inv.server_log, 12)
    return TaskRecord(
        index=int(spec.task_index or 0),
        inv_id=spec.inv_id,
        inv_dir=spec.inv_dir,
        strategy=spec.strategy,
        hypothesis=spec.hypothesis,
        status=status if outcome or status != "running" else "unfinished",
        ok=ok,
        job_id=job_id,
        error=None if ok else str(outcome.get("error") or f"status {status}"),
        slurm_state=state,
        exit_code=code,
        log_tail=tail,
        n_hypotheses=len(read_jsonl(inv.root / "hypotheses.jsonl")),
        n_explanations=len(read_jsonl(inv.root / "explanations.jsonl")),
    )


def _verdict_kind(statement: str) -> str | None:
    s = statement.lower()
    if any(w in s for w in SUFFICIENCY_WORDS):
        return "sufficient"
    if any(w in s for w in NECESSITY_WORDS):
        return "necessary"
    return None


def claims_of(task: TaskRecord) -> list[Claim]:
    """The task's claimed circuits, each with the agent's verdicts on necessity and sufficiency."""
    root = Path(task.inv_dir)
    explanations = read_jsonl(root / "explanations.jsonl")
    latest: dict[str, dict[str, Any]] = {}
    for h in read_jsonl(
        root / "hypotheses.jsonl"
    ):  # later versions of a hypothesis replace earlier ones
        latest[str(h.get("id"))] = h
    claims = []
    for i, e in enumerate(explanations):
        comps = tuple(
            dict.fromkeys(
                str(c.get("component"))
                for c in e.get("components") or []
                if isinstance(c, dict) and c.get("component")
            )
        )
        if not comps:
            continue
        verdicts: dict[str, str] = {}
        texts = [json.dumps(e, default=str)]
        for h in latest.values():
            statement = str(h.get("statement", ""))
            named = components_in(statement)
            if named != set(comps) and (named or len(explanations) != 1):
                continue
            kind = _verdict_kind(statement)
            if kind is not None:
                verdicts[kind] = str(h.get("status"))
                texts.append(json.dumps(h, default=str))
        claims.append(
            Claim(
                claim_id=f"t{task.index:02d}.e{i}",
                task_index=task.index,
                inv_id=task.inv_id,
                components=comps,
                subject_prompt=str(e.get("subject_prompt", "")),
                behaviour=str(e.get("behaviour", "")),
                confidence=str(e.get("confidence", "")),
                agent_verdicts=verdicts,
                agent_text="\n".join(texts),
            )
        )
    return claims
