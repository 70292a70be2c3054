"""A real single-node SLURM cluster (scripts/slurm/up.sh, with accounting) as a pytest session
fixture.

The cluster lives in `$SPD_MCP_SLURM_DIR` (default `/tmp/spd-mcp-slurm`, the one `make slurm-up`
starts). Pytest sessions share it: each registers its pid in `DIR/.fixture-users/` under a file
lock. A session that finds the cluster stopped starts it and marks it `DIR/.fixture-started`; the
last session to leave stops a cluster so marked, and leaves alone one started by hand
(`make slurm-up`). Registrations of dead sessions are pruned, so a killed session delays the stop
until the next one ends. Without `sbatch`, without root, or when the cluster does not come up,
tests using it skip, or fail when `SPD_MCP_REQUIRE_SLURM` is set (CI).
"""

import fcntl
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.requirements import unavailable

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "slurm"
REQUIRE_ENV = "SPD_MCP_REQUIRE_SLURM"
DIR_ENV = "SPD_MCP_SLURM_DIR"
DEFAULT_DIR = Path("/tmp/spd-mcp-slurm")
PARTITION = "debug"
UP_TIMEOUT_S = 180

T = TypeVar("T")


@dataclass(frozen=True)
class SlurmCluster:
    """A running cluster: clients need only `env` (SLURM_CONF) added to their environment."""

    dir: Path
    conf: Path
    env: dict[str, str]
    partition: str = PARTITION

    def run(
        self, *args: str, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs a SLURM client command (sinfo, sbatch, sacct, scancel ...) against this cluster."""
        proc = subprocess.run(
            args, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\n"
                f"stderr: {proc.stderr}"
            )
        return proc

    def sacct_state(self, job_id: str) -> str:
        """The accounting state of a job or array task (e.g. COMPLETED, CANCELLED by 0); "" if not
        yet recorded."""
        out = self.run("sacct", "-X", "-n", "-P", "-o", "State", "-j", job_id).stdout.split("\n")
        return out[0].strip()


def _pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (PID 1 here may be slow to reap daemonized
    parents)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _daemon_alive(pidfile: Path, name: str) -> bool:
    """The daemon named in `pidfile` runs and is `name` (guards against PID reuse)."""
    try:
        pid = int(pidfile.read_text().strip())
        return _pid_alive(pid) and Path(f"/proc/{pid}/comm").read_text().strip() == name
    except (OSError, ValueError):
        return False


def cluster_running(directory: Path) -> bool:
    """slurmctld and slurmd of the cluster in `directory` are running."""
    return _daemon_alive(directory / "slurmctld.pid", "slurmctld") and _daemon_alive(
        directory / "slurmd.pid", "slurmd"
    )


def start_cluster(directory: Path, accounting: bool = True) -> subprocess.CompletedProcess[str]:
    """Runs up.sh (idempotent); the caller checks returncode. Output is in stdout/stderr."""
    args = [str(SCRIPTS / "up.sh"), str(directory)] + (["--accounting"] if accounting else [])
    return subprocess.run(
        args, capture_output=True, text=True, timeout=UP_TIMEOUT_S, stdin=subprocess.DEVNULL
    )


def stop_cluster(directory: Path, purge: bool = False) -> subprocess.CompletedProcess[str]:
    """Runs down.sh: stops the cluster's daemons by their PID files; `purge` deletes the directory
    too."""
    args = [str(SCRIPTS / "down.sh"), str(directory)] + (["--purge"] if purge else [])
    return subprocess.run(
        args, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".fixture.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _live_users(directory: Path) -> set[int]:
    """Pids of registered sessions that still run; removes the registrations of dead ones."""
    users = directory / ".fixture-users"
    users.mkdir(exist_ok=True)
    live = set()
    for entry in users.iterdir():
        if entry.name.isdigit() and _pid_alive(int(entry.name)):
            live.add(int(entry.name))
        else:
            entry.unlink(missing_ok=True)
    return live


def acquire_cluster(directory: Path) -> subprocess.CompletedProcess[str]:
    """Registers this process as a user of the cluster in `directory` and starts it if needed.

    If up.sh refuses (e.g. its config changed under a running cluster) and no other session uses the
    cluster, it is restarted once.
    """
    with _locked(directory):
        others = _live_users(directory) - {os.getpid()}
        if not cluster_running(directory):
            (directory / ".fixture-started").touch()
        proc = start_cluster(directory)
        if proc.returncode != 0 and not others:
            stop_cluster(directory)
            proc = start_cluster(directory)
        if proc.returncode == 0:
            (directory / ".fixture-users" / str(os.getpid())).touch()
        return proc


def release_cluster(directory: Path) -> None:
    """Unregisters this process; the last user stops a cluster that a fixture started."""
    with _locked(directory):
        (directory / ".fixture-users" / str(os.getpid())).unlink(missing_ok=True)
        if not _live_users(directory) and (directory / ".fixture-started").exists():
            stop_cluster(directory)
            (directory / ".fixture-started").unlink(missing_ok=True)


def bounded(fn: Callable[[], T], timeout_s: float) -> T:
    """Calls `fn` in a daemon thread; returns its result, re-raises its exception, or raises
    TimeoutError.

    For calls that can hang (submitit's `job.result()` without accounting); a hung thread does not
    keep the interpreter alive.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="bounded-call")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise TimeoutError(f"{getattr(fn, '__qualname__', fn)} did not return within {timeout_s} s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A running single-node cluster with accounting (sacct works); see the module docstring."""
    if shutil.which("sbatch") is None:
        unavailable(
            REQUIRE_ENV, "SLURM is not installed (`make slurm-install` or scripts/slurm/install.sh)"
        )
    if os.geteuid() != 0:
        unavailable(
            REQUIRE_ENV, "the test SLURM cluster runs its daemons as root; this user is not root"
        )
    directory = Path(os.environ.get(DIR_ENV) or DEFAULT_DIR).resolve()
    proc = acquire_cluster(directory)
    if proc.returncode != 0:
        unavailable(
            REQUIRE_ENV,
            f"the SLURM cluster in {directory} did not come up:\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-3000:]}",
        )
    conf = directory / "slurm.conf"
    try:
        yield SlurmCluster(dir=directory, conf=conf, env={"SLURM_CONF": str(conf)})
    finally:
        release_cluster(directory)


@pytest.fixture
def slurm_env(slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """The cluster, with SLURM_CONF set in os.environ for this test (submitit runs sbatch/sacct
    itself)."""
    for key, value in slurm_cluster.env.items():
        monkeypatch.setenv(key, value)
    return slurm_cluster
