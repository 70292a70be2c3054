"""The device worker: all model work runs in order on one thread; long work becomes a cancellable
job.

``DeviceWorker.call`` runs a short function, waiting at most ``short_wait_s`` for the device before
raising a retryable ``BusyError`` that names the running job. ``DeviceWorker.submit`` queues a long
function ``fn(progress)``; ``progress(step, total, message)`` records progress and raises
``JobCancelled`` once ``cancel`` was requested, so cancellation is cooperative. A job's raw result
goes through an async ``finish`` on the event loop (e.g. to store a graph) before it is done.
The event loop never blocks on the device.
"""

import asyncio
import contextlib
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from spd_mcp.server.errors import BusyError

JobStatus = Literal["queued", "running", "done", "error", "cancelled"]
Kind = Literal["call", "job"]
ProgressReporter = Callable[[float, float | None, str], Awaitable[None]]


class Progress(Protocol):
    def __call__(self, step: float, total: float | None = None, message: str = "") -> None: ...


class JobCancelled(Exception):
    """Raised inside a job's progress callback once cancellation was requested."""


@dataclass(eq=False)
class Job:
    id: str
    tool: str
    kind: Kind
    params: dict[str, Any]
    created: float = field(default_factory=time.time)
    status: JobStatus = "queued"
    step: float = 0.0
    total: float | None = None
    message: str = ""
    started: float | None = None
    finished: float | None = None
    result: Any = None
    error: str | None = None
    exception: BaseException | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    started_evt: asyncio.Event = field(default_factory=asyncio.Event)
    done_evt: asyncio.Event = field(default_factory=asyncio.Event)
    worker_done: asyncio.Event = field(default_factory=asyncio.Event)
    future: Future[None] | None = None

    @property
    def is_finished(self) -> bool:
        return self.status in ("done", "error", "cancelled")

    def elapsed_s(self) -> float:
        start = self.started or self.created
        return (self.finished or time.time()) - start

    def describe(self) -> str:
        where = f"step {self.step:g}" + (f"/{self.total:g}" if self.total else "")
        msg = f" '{self.message}'" if self.message else ""
        return (
            f"{self.kind} {self.id} ({self.tool}) {self.status} for {self.elapsed_s():.1f} s, "
            f"{where}{msg}"
        )


class DeviceWorker:
    def __init__(self, short_wait_s: float = 3.0, keep_finished: int = 200) -> None:
        self.short_wait_s = short_wait_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spd-device")
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._active: OrderedDict[str, Job] = OrderedDict()  # queued or running, in order
        self._jobs: OrderedDict[str, Job] = OrderedDict()  # kind == "job", most recent last
        self._keep = keep_finished
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_finished: Callable[[Job], Awaitable[None]] | None = None

    # --- introspection (never waits for the device) -----------------------------------------------
    def current(self) -> Job | None:
        with self._lock:
            return next((j for j in self._active.values() if j.status == "running"), None)

    def queued(self) -> list[Job]:
        with self._lock:
            return [j for j in self._active.values() if j.status == "queued"]

    def job(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def recent_jobs(self, n: int = 10) -> list[Job]:
        return list(self._jobs.values())[-n:]

    def busy_message(self, tool: str) -> str:
        cur = self.current()
        queued = self.queued()
        what = cur.describe() if cur else "the device queue"
        hint = (
            f"; poll it with get_job(job_id='{cur.id}', wait_s=30)"
            if cur and cur.kind == "job"
            else ""
        )
        return (
            f"busy: {tool} waited {self.short_wait_s:g} s for the device, which is running {what}; "
            f"{len(queued)} queued. Retry in a few seconds{hint}, or cancel_job it."
        )

    # --- short calls ------------------------------------------------------------------------------
    async def call(
        self, tool: str, fn: Callable[[], Any], params: dict[str, Any] | None = None
    ) -> Any:
        """Run ``fn()`` on the device; BusyError if it has not started after ``short_wait_s``."""
        job = self._enqueue(tool, "call", params or {}, lambda _progress: fn(), None)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.started_evt.wait(), self.short_wait_s)
            if not job.started_evt.is_set() and self._cancel_queued(job):
                raise BusyError(self.busy_message(tool))
            await job.done_evt.wait()
        except asyncio.CancelledError:
            self._cancel_queued(job)
            job.cancel_requested.set()
            raise
        if job.exception is not None:
            raise job.exception
        return job.result

    # --- long jobs --------------------------------------------------------------------------------
    def submit(
        self,
        tool: str,
        fn: Callable[[Progress], Any],
        params: dict[str, Any] | None = None,
        finish: Callable[[Any], Awaitable[Any]] | None = None,
    ) -> Job:
        """Queue ``fn(progress)`` as a job; ``finish(raw)`` (async, on the loop) makes its
        result."""
        job = self._enqueue(tool, "job", params or {}, fn, finish)
        self._jobs[job.id] = job
        while len(self._jobs) > self._keep:
            oldest = next(iter(self._jobs.values()))
            if not oldest.is_finished:
                break
            self._jobs.popitem(last=False)
        return job

    async def wait(self, job: Job, wait_s: float, report: ProgressReporter | None = None) -> Job:
        """Wait up to ``wait_s`` for ``job``, forwarding increasing progress to ``report``."""
        deadline = time.monotonic() + wait_s
        last = 0.0
        while not job.done_evt.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.done_evt.wait(), min(0.2, remaining))
            if report is not None and job.step > last:
                last = job.step
                with contextlib.suppress(
                    Exception
                ):  # a client that went away must not fail the wait
                    await report(job.step, job.total, job.message)
        return job

    def cancel(self, job: Job) -> str:
        """Request cancellation; a queued job is cancelled at once, a running one at its next
        progress call."""
        if job.is_finished:
            return f"job {job.id} already {job.status}; nothing to cancel"
        job.cancel_requested.set()
        if self._cancel_queued(job):
            return f"job {job.id} cancelled before it started"
        return f"job {job.id} is running; it stops at its next progress step (poll get_job)"

    async def shutdown(self) -> None:
        for job in list(self._active.values()):
            job.cancel_requested.set()
            self._cancel_queued(job)
        self._executor.shutdown(wait=False, cancel_futures=True)
        for task in list(self._tasks):
            task.cancel()

    # --- internals --------------------------------------------------------------------------------
    def _enqueue(
        self,
        tool: str,
        kind: Kind,
        params: dict[str, Any],
        fn: Callable[[Progress], Any],
        finish: Callable[[Any], Awaitable[Any]] | None,
    ) -> Job:
        loop = asyncio.get_running_loop()
        job = Job(
            id=f"{'j' if kind == 'job' else 'c'}{next(self._ids)}",
            tool=tool,
            kind=kind,
            params=params,
        )

        def progress(step: float, total: float | None = None, message: str = "") -> None:
            job.step, job.total, job.message = (
                float(step),
                None if total is None else float(total),
                str(message),
            )
            if job.cancel_requested.is_set():
                raise JobCancelled(f"job {job.id} cancelled at step {step:g}")

        def body() -> None:
            try:
                with self._lock:
                    if job.cancel_requested.is_set():
                        job.status = "cancelled"
                        return
                    job.status, job.started = "running", time.time()
                loop.call_soon_threadsafe(job.started_evt.set)
                try:
                    job.result = fn(progress)
                except JobCancelled as exc:
                    job.status, job.error = "cancelled", str(exc)
                except BaseException as exc:  # reported to the caller as a tool error
                    job.status, job.exception = "error", exc
                    job.error = f"{type(exc).__name__}: {exc}"
            finally:
                loop.call_soon_threadsafe(job.worker_done.set)

        with self._lock:
            self._active[job.id] = job
        job.future = self._executor.submit(body)
        task = loop.create_task(self._complete(job, finish))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _complete(self, job: Job, finish: Callable[[Any], Awaitable[Any]] | None) -> None:
        try:
            await job.worker_done.wait()
            if job.status == "running" and job.exception is None:
                if finish is not None:
                    try:
                        job.result = await finish(job.result)
                    except Exception as exc:
                        job.status, job.exception, job.error = (
                            "error",
                            exc,
                            f"{type(exc).__name__}: {exc}",
                        )
                if job.status == "running":
                    job.status = "done"
        finally:
            job.finished = time.time()
            with self._lock:
                self._active.pop(job.id, None)
            job.started_evt.set()
            job.done_evt.set()
            if self.on_finished is not None and job.kind == "job":
                with contextlib.suppress(Exception):
                    await self.on_finished(job)

    def _cancel_queued(self, job: Job) -> bool:
        """Cancel a job that has not started; True if it will never run."""
        with self._lock:
            if job.status != "queued":
                return False
            job.cancel_requested.set()
            job.status = "cancelled"
            job.error = job.error or "cancelled before it started"
        if job.future is not None and job.future.cancel():
            job.worker_done.set()  # the body will never run to set it
        return True
