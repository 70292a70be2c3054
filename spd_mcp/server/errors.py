"""The server's error boundary: core errors become ToolErrors that carry their message to the
agent."""

import logging
import math
from collections.abc import Iterable

import torch
from mcp.server.mcpserver.exceptions import ToolError

log = logging.getLogger(__name__)


class BusyError(ToolError):
    """The device is held by another job; the call may be retried."""


class NotFiniteError(ValueError):
    """A NaN or Inf appeared; the message names where."""


# Errors whose message is written for the agent: spd_core.errors.InvalidInput (a ValueError) and
# the other checks on input. An AssertionError is an internal invariant broken: an internal error.
_EXPECTED = (ValueError, KeyError, IndexError, LookupError, TypeError)


def to_tool_error(exc: BaseException, tool: str) -> ToolError:
    """Map any exception raised by a handler or core function to a ToolError with a useful
    message."""
    if isinstance(exc, ToolError):
        return exc
    if isinstance(exc, _EXPECTED):
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        return ToolError(str(text) or f"{type(exc).__name__} in {tool}")
    if isinstance(exc, torch.cuda.OutOfMemoryError | MemoryError):
        return ToolError(f"{tool} ran out of memory; try a shorter text or fewer items ({exc})")
    log.exception("unexpected error in tool %s", tool, exc_info=exc)
    return ToolError(f"internal error in {tool}: {type(exc).__name__}: {exc}")


def check_finite_tensor(t: torch.Tensor, where: str) -> None:
    """Raise NotFiniteError naming ``where`` when ``t`` holds a NaN or Inf."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        kind = "NaN" if bool(torch.isnan(t).any()) else "Inf"
        raise NotFiniteError(f"{kind} appeared in {where}")


def check_finite_values(values: Iterable[float], where: str) -> None:
    """Raise NotFiniteError when any of ``values`` is NaN or Inf (inputs from the agent)."""
    for i, v in enumerate(values):
        if not math.isfinite(v):
            raise NotFiniteError(
                f"{v} at index {i} of {where}; every value must be a finite number"
            )
