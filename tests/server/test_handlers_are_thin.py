"""Tool handlers parse, call one core function and wrap the result: none is longer than 30 lines.

The handlers checked are every registered tool's handler (``spd_mcp.server.tools.ALL_TOOLS``) and
every other module-level function of ``spd_mcp/server/tools/`` with a handler's signature
``(state, inp, ctx)`` (``optimize_shared``, the several-prompt form of optimize_circuit).

Counting rule: the lines of the function's body, from the first statement after the docstring to
the last line of the function, not counting the docstring, blank lines and lines that hold only a
comment. Nested functions and closures count (they are part of the body). The signature and
decorators do not count.
"""

import ast
import importlib
import inspect
import pkgutil
import textwrap
from collections.abc import Callable
from typing import Any

import spd_mcp.server.tools as tools_pkg
from spd_mcp.server.tools import ALL_TOOLS

MAX_BODY_LINES = 30


def body_lines(fn: Callable[..., Any]) -> int:
    """The number of body lines of ``fn`` by the module docstring's rule."""
    src = textwrap.dedent(inspect.getsource(fn))
    node = ast.parse(src).body[0]
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    body = node.body
    skip: set[int] = set()
    first = body[0]
    doc = first.value if isinstance(first, ast.Expr) else None
    if isinstance(doc, ast.Constant) and isinstance(doc.value, str):
        skip = set(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines = src.splitlines()
    end = node.end_lineno or node.lineno
    return sum(
        1
        for i in range(body[0].lineno, end + 1)
        if i not in skip and lines[i - 1].strip() and not lines[i - 1].strip().startswith("#")
    )


def handlers() -> dict[str, Callable[..., Any]]:
    """Registered handlers by tool name; every other (state, inp, ctx) function by its name."""
    found: dict[str, Callable[..., Any]] = {spec.name: spec.handler for spec in ALL_TOOLS}
    seen = set(found.values())
    for info in pkgutil.iter_modules(tools_pkg.__path__):
        module = importlib.import_module(f"{tools_pkg.__name__}.{info.name}")
        for name, fn in vars(module).items():
            if not inspect.isfunction(fn) or fn.__module__ != module.__name__ or fn in seen:
                continue
            if list(inspect.signature(fn).parameters) == ["state", "inp", "ctx"]:
                found[name] = fn
    return found


def test_every_handler_is_at_most_30_lines() -> None:
    found = handlers()
    assert len(found) > len(ALL_TOOLS), "expected optimize_shared beside the registered handlers"
    assert "optimize_shared" in found
    long = {name: n for name, fn in found.items() if (n := body_lines(fn)) > MAX_BODY_LINES}
    assert not long, (
        f"handlers over {MAX_BODY_LINES} body lines (move computation to spd_core/analysis, "
        f"wiring to module-level helpers): {long}"
    )


def _sample(state: Any, inp: Any, ctx: Any) -> int:
    """A docstring
    of two lines."""
    # a comment

    a = 1
    b = (  # a comment at the end counts: the line holds code
        2
    )

    def inner() -> int:
        return a + b

    return inner()


def test_the_counter_counts_by_its_rule() -> None:
    """By hand: a, b's three lines, def inner, its return, the final return = 7."""
    assert body_lines(_sample) == 7
    assert _sample(None, None, None) == 3
