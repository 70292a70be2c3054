"""The device worker: one thread, in order; bounded waits with busy errors; cooperative
cancellation."""

import asyncio
import threading
import time

import pytest

from spd_mcp.server.device import DeviceWorker
from spd_mcp.server.errors import BusyError

pytestmark = pytest.mark.anyio


def sleeper(seconds: float, steps: int = 10, log: list | None = None):
    def fn(progress):
        for i in range(steps):
            time.sleep(seconds / steps)
            progress(i + 1, steps, f"step {i + 1}")
        if log is not None:
            log.append(threading.current_thread().name)
        return steps

    return fn


async def test_calls_run_in_order_on_one_thread() -> None:
    dev = DeviceWorker(short_wait_s=5)
    order: list[int] = []
    threads: set[str] = set()

    def work(i: int):
        def fn():
            threads.add(threading.current_thread().name)
            order.append(i)
            return i * i

        return fn

    results = await asyncio.gather(*(dev.call("t", work(i)) for i in range(8)))
    assert results == [i * i for i in range(8)] and order == list(range(8))
    assert len(threads) == 1 and threading.current_thread().name not in threads
    await dev.shutdown()


async def test_short_call_gets_busy_error_naming_the_job() -> None:
    dev = DeviceWorker(short_wait_s=0.2)
    job = dev.submit("optimize_circuit", sleeper(1.0))
    await asyncio.sleep(0.15)
    t0 = time.monotonic()
    with pytest.raises(BusyError) as info:
        await dev.call("run_prompt", lambda: 1)
    assert time.monotonic() - t0 < 1.5
    msg = str(info.value)
    assert job.id in msg and "optimize_circuit" in msg and "step" in msg and "get_job" in msg
    await dev.wait(job, 5)
    assert job.status == "done" and job.result == 10
    assert (
        await dev.call("run_prompt", lambda: 2) == 2
    )  # the busy call never ran, the next one does
    await dev.shutdown()


async def test_cancel_running_and_queued_jobs() -> None:
    dev = DeviceWorker()
    running = dev.submit("a", sleeper(5.0, steps=100))
    queued = dev.submit("b", sleeper(0.1))
    await asyncio.sleep(0.2)
    assert running.status == "running" and queued.status == "queued"
    assert "before it started" in dev.cancel(queued)
    assert "next progress step" in dev.cancel(running)
    t0 = time.monotonic()
    await dev.wait(running, 2)
    assert running.status == "cancelled" and time.monotonic() - t0 < 1.0
    await dev.wait(queued, 1)
    assert queued.status == "cancelled" and queued.done_evt.is_set()
    assert "already cancelled" in dev.cancel(running)
    await dev.shutdown()


async def test_errors_propagate_with_their_message() -> None:
    dev = DeviceWorker()

    def bad():
        raise ValueError("unknown layer 'x'; valid layers: a, b")

    with pytest.raises(ValueError, match="valid layers"):
        await dev.call("t", bad)
    job = dev.submit("t", lambda progress: bad())
    await dev.wait(job, 2)
    assert job.status == "error" and "valid layers" in (job.error or "")
    await dev.shutdown()


async def test_finish_runs_on_the_loop_and_progress_is_forwarded() -> None:
    dev = DeviceWorker()
    seen: list[float] = []

    async def report(step, total, message):
        seen.append(step)

    async def finish(raw):
        return {"doubled": raw * 2}

    job = dev.submit("t", sleeper(0.6, steps=6), finish=finish)
    await dev.wait(job, 5, report)
    assert job.status == "done" and job.result == {"doubled": 12}
    assert seen and seen == sorted(set(seen)) and seen[-1] <= 6
    await dev.shutdown()


async def test_wait_returns_after_wait_s_while_the_job_keeps_running() -> None:
    dev = DeviceWorker()
    job = dev.submit("t", sleeper(0.8))
    t0 = time.monotonic()
    await dev.wait(job, 0.2)
    assert job.status == "running" and 0.15 < time.monotonic() - t0 < 1.0
    await dev.wait(job, 5)
    assert job.status == "done"
    await dev.shutdown()
