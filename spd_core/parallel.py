"""Data parallelism over CPU processes for the training loop.

With ``workers`` W > 1 this process is rank 0 and W − 1 spawned processes join it in a gloo group.
Every rank draws the same batch from the same data generator and keeps its own 1/W of the rows;
after each backward pass the gradients are averaged (one all-reduce of a flat buffer), so every
rank takes the same optimizer step and holds the same parameters. All losses are means over rows,
so the averaged gradient is the full batch's gradient; only the random masks differ, since each
rank draws them from its own seed.
"""

import os
import pickle
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.multiprocessing.spawn import ProcessContext, ProcessException, start_processes
from torch.nn.utils import parameters_to_vector

TIMEOUT = timedelta(minutes=10)  # a rank that waits this long on its peers gives up


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1

    def rows(self, batch_size: int) -> slice:
        """This rank's share of a batch's rows."""
        per = batch_size // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def seed(self, seed: int) -> int:
        """Rank 0 keeps ``seed`` (so one worker is exactly the serial run); the others get their
        own."""
        return seed + 1_000_003 * self.rank


SOLO = Group()


def _pieces(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    """``flat`` cut back into tensors shaped like ``like`` (views, no copies)."""
    return [
        piece.view_as(t)
        for piece, t in zip(flat.split([t.numel() for t in like]), like, strict=True)
    ]


def average_grads(params: Sequence[torch.nn.Parameter], group: Group) -> None:
    """Replace every gradient by its mean over the ranks (a missing gradient counts as zero)."""
    if group.world == 1:
        return
    flat = parameters_to_vector(
        [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    )
    dist.all_reduce(flat)
    flat /= group.world
    for p, grad in zip(params, _pieces(flat, params), strict=True):
        p.grad = grad


def broadcast_params(params: Sequence[torch.nn.Parameter], group: Group) -> None:
    """Give every rank rank 0's parameter values (after a warm-up or a resume, so all start
    equal)."""
    if group.world == 1:
        return
    flat = parameters_to_vector([p.detach() for p in params])
    dist.broadcast(flat, src=0)
    with torch.no_grad():
        for p, value in zip(params, _pieces(flat, params), strict=True):
            p.copy_(value)


def mean_values(values: dict[str, float], group: Group) -> dict[str, float]:
    """The mean of each logged scalar over the ranks (every rank must log the same keys)."""
    if group.world == 1:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return {k: float(v) / group.world for k, v in zip(keys, t.tolist(), strict=True)}


def gather_rng_states(group: Group) -> list[Tensor]:
    """Every rank's torch CPU generator state, in rank order."""
    if group.world == 1:
        return [torch.get_rng_state()]
    states: list[Any] = [None] * group.world
    dist.all_gather_object(states, torch.get_rng_state())
    return states


def _join(init: str, rank: int, world: int) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world, timeout=TIMEOUT)


def _child(
    index: int, fn: Callable[..., object], payload: bytes, init: str, world: int, threads: int
) -> None:
    torch.set_num_threads(threads)
    _join(
        init, index + 1, world
    )  # first: a failure after this reaches rank 0 at its next collective,
    # one before it would leave rank 0 waiting out the rendezvous timeout
    args = pickle.loads(
        payload
    )  # plain pickle: the child's tensors are its own copies, not shared memory
    fn(*args, Group(index + 1, world))
    dist.barrier()  # rank 0 is past its last collective too
    sys.stdout.flush()
    sys.stderr.flush()
    # Leave without tearing the group down: gloo's destructors can abort ("terminate called without
    # an active exception") when rank 0 closes its side first. Rank 0 destroys the group after this
    # exit.
    os._exit(0)


@contextmanager
def workers(fn: Callable[..., object], args: tuple[object, ...], world: int) -> Iterator[Group]:
    """Start ranks 1..world−1 running ``fn(*args, group)`` and yield rank 0's group to this process.
    On an error here the other ranks are stopped (a rank's own error is added to it as a note);
    otherwise they are joined."""
    assert world >= 2, f"workers needs world ≥ 2, got {world}; run serially with SOLO"
    with tempfile.TemporaryDirectory(prefix="spd-group-") as tmp:
        init = (Path(tmp) / "rendezvous").as_uri()
        ctx = start_processes(
            _child,
            args=(fn, pickle.dumps(args), init, world, torch.get_num_threads()),
            nprocs=world - 1,
            join=False,
            start_method="spawn",
        )
        assert ctx is not None  # join=False returns the context
        try:
            _join(init, 0, world)
            yield Group(0, world)
            dist.barrier()
            while not ctx.join():
                pass
        except BaseException as err:
            _stop(ctx, err)
            raise
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()


def _stop(ctx: ProcessContext, err: BaseException) -> None:
    """After a failure in rank 0: add any other rank's own error to ``err`` (so the cause is not
    hidden behind a closed connection), then stop the ranks still running."""
    if dist.is_initialized():
        dist.destroy_process_group()  # ranks blocked on rank 0 now fail instead of waiting
    try:
        ctx.join(timeout=5)
    except ProcessException as child:
        err.add_note(f"a worker process failed too: {child}")
    for p in ctx.processes:
        if p is not None and p.is_alive():
            p.terminate()
            p.join()
