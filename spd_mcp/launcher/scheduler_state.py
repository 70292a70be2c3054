"""Notice a SLURM job that the scheduler ended before the job body could (scancel, node failure,
OOM).

A cancelled job is killed without finishing its records, so the watcher asks `sacct` about the
investigation's last job and, if SLURM reports it ended, records that in metadata.json (status and
outcome) and as an event in events.jsonl. Timeouts and preemptions are left alone: submitit requeues
those and the job resumes in the same directory.
"""

from __future__ import annotations

import subprocess
from typing import Any

from spd_mcp.common.events import EventLog
from spd_mcp.launcher.layout import InvestigationDir, now_iso, read_json, update_json

# What an investigation's status becomes when SLURM reports its job in one of these states.
ENDED_STATES: dict[str, str] = {
    "CANCELLED": "cancelled",
    "FAILED": "failed",
    "NODE_FAIL": "failed",
    "OUT_OF_MEMORY": "failed",
    "BOOT_FAIL": "failed",
    "DEADLINE": "failed",
}
# Statuses the job body (or this module) writes when an investigation is over.
FINAL_STATUSES = frozenset(
    {
        "completed",
        "max_turns",
        "budget",
        "no_model_tool_called",
        "failed",
        "incomplete",
        "cancelled",
    }
)


def sacct_state(job_id: str, timeout_s: float = 15.0) -> str | None:
    """SLURM's accounting state of a job (e.g. 'CANCELLED by 0'), None if sacct cannot tell."""
    try:
        proc = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    return lines[0] if proc.returncode == 0 and lines else None


def ended_status(state: str | None) -> str | None:
    """'cancelled' or 'failed' for a SLURM state that ends a job for good, else None."""
    if not state:
        return None
    return ENDED_STATES.get(state.split()[0].rstrip("+"))


def reconcile(inv: InvestigationDir) -> str | None:
    """Record a SLURM-ended job in the directory; the new status, or None if nothing changed."""
    meta = read_json(inv.metadata)
    if (
        meta.get("executor") != "slurm"
        or meta.get("status") in FINAL_STATUSES
        or not meta.get("job_ids")
    ):
        return None
    job_id = str(meta["job_ids"][-1])
    state = sacct_state(job_id)
    status = ended_status(state)
    if status is None:
        return None
    outcome: dict[str, Any] = {
        "status": status,
        "ok": False,
        "job_id": job_id,
        "slurm_state": state,
        "error": f"SLURM ended job {job_id} before it finished: {state}",
        "recorded_by": "sacct",
    }
    changed = False

    def mark(m: dict[str, Any]) -> None:
        nonlocal changed
        if m.get("status") not in FINAL_STATUSES:  # the job body may have finished meanwhile
            m.update(status=status, finished=now_iso(), outcome=outcome)
            changed = True

    update_json(inv.metadata, mark)
    if not changed:
        return None
    with EventLog(inv.events, str(meta.get("inv_id", inv.root.name)), source="launcher") as log:
        log.emit(
            "job_cancelled" if status == "cancelled" else "job_ended_by_scheduler",
            job_id=job_id,
            slurm_state=state,
            note="recorded from sacct: the job was stopped before it wrote its own records",
        )
    return status
