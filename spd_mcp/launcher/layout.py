"""The files of one investigation directory, and metadata.json read-modify-write under a lock."""

from __future__ import annotations

import fcntl
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata as pkg_metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spd_mcp.launcher.spec import JobSpec


@dataclass(frozen=True)
class InvestigationDir:
    root: Path

    @property
    def metadata(self) -> Path:
        return self.root / "metadata.json"

    @property
    def prompt(self) -> Path:
        return self.root / "agent_prompt.md"

    @property
    def server_log(self) -> Path:
        return self.root / "server.log"

    @property
    def port_file(self) -> Path:
        return self.root / "server.port"

    @property
    def mcp_config(self) -> Path:
        return self.root / "mcp_config.json"

    @property
    def transcript(self) -> Path:
        return self.root / "agent_transcript.jsonl"

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def research_log(self) -> Path:
        return self.root / "research_log.md"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def submitit(self) -> Path:
        return self.root / "submitit"


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    tmp.replace(path)


def update_json(path: Path, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Apply `change` to the JSON object in `path` under an exclusive lock; the new object."""
    lock = path.with_name("." + path.name + ".lock")
    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            obj = read_json(path)
            change(obj)
            write_json_atomic(path, obj)
            return obj
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def versions() -> dict[str, str]:
    """Versions of the packages that shape an investigation."""
    out = {}
    for name in ("spd-mcp", "mcp", "anthropic", "submitit", "pydantic"):
        try:
            out[name] = pkg_metadata.version(name)
        except pkg_metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["python"] = ".".join(map(str, sys.version_info[:3]))
    return out


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def init_metadata(spec: JobSpec, inv: InvestigationDir) -> None:
    """Create the directory and metadata.json from the spec (the launcher calls this at submit)."""
    inv.root.mkdir(parents=True, exist_ok=True)

    def fill(meta: dict[str, Any]) -> None:
        if not meta:
            meta.update(spec.model_dump(mode="json"))
            meta.update(
                created=now_iso(), status="submitted", attempts=0, job_ids=[], versions=versions()
            )

    update_json(inv.metadata, fill)


def record_job_id(inv: InvestigationDir, job_id: str) -> None:
    def add(meta: dict[str, Any]) -> None:
        if job_id not in meta.setdefault("job_ids", []):
            meta["job_ids"].append(job_id)

    update_json(inv.metadata, add)
