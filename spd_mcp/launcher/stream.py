"""The terminal stream of an investigation: one line per event in one format, each step once.

Every event, launcher's or server's, prints as `HH:MM:SS source   kind  details`. Whatever is cut
(a long argument, a tool list, a note, the line itself) ends with `…`. The research log is the
record of each step, so the follower prints a log section where the call that wrote it happened
and nothing else for that step: not the `update_research_log` / `record_hypothesis` call, not the
built-in protocol's step note (the same text), not the launcher's copy of a server-side tool error.
A step note still prints when its log entry could not be written.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ELLIPSIS = "…"
LOG_TOOLS = frozenset({"update_research_log", "record_hypothesis"})  # each writes one log section
LOG_HEADING = re.compile(r"^## (\d{4}-\d\d-\d\dT(\d\d:\d\d:\d\d))\S*(?: (.*))?$")
BODY = " " * 18 + "| "
HEAD_KEYS = frozenset({"schema", "seq", "ts", "t", "source", "agent_id", "kind"})


@dataclass(frozen=True)
class Limits:
    """How much of an event line shows: the line, one field's value, one tool argument, all the
    arguments, the items of a list (characters, or items)."""

    line: int = 180
    value: int = 48
    arg: int = 40
    args: int = 100
    items: int = 4


SHORT = Limits()
UNCUT = Limits(line=10**9, value=10**9, arg=10**9, args=10**9, items=10**9)


def cut(text: object, limit: int) -> str:
    """`text` on one line, at most `limit` characters; a cut one ends with `…`."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: max(0, limit - 1)].rstrip() + ELLIPSIS


def value(v: Any, limit: int, items: int) -> str:
    """One field's value, short: strings bare, lists as their first items then `…`."""
    if isinstance(v, str):
        return cut(v, limit)
    if isinstance(v, list | tuple):
        shown = [value(x, limit // 2, items) for x in v[:items]]
        return "[" + ", ".join(shown + ([ELLIPSIS] if len(v) > items else [])) + "]"
    return cut(json.dumps(v, default=str, ensure_ascii=False), limit)


def _fields(e: dict[str, Any], lim: Limits) -> str:
    return " ".join(
        f"{k}={value(v, lim.value, lim.items)}"
        for k, v in e.items()
        if k not in HEAD_KEYS and v is not None
    )


def _tool_call(e: dict[str, Any], lim: Limits) -> str:
    if "args" in e:
        args = e["args"] if isinstance(e["args"], dict) else {"args": e["args"]}
        shown = cut(
            ", ".join(f"{k}={value(v, lim.arg, lim.items)}" for k, v in args.items()), lim.args
        )
    elif "args_bytes" in e:
        shown = f"{e['args_bytes']} bytes of arguments"
    else:
        shown = cut(e.get("args_repr", ""), lim.args)
    text = f"{e.get('tool')}({shown}) {e.get('outcome')} {e.get('duration_ms', 0):.0f} ms"
    if e.get("job_id"):
        text += f" job {e['job_id']}"
    return text + (f": {e['error']}" if e.get("error") else "")


def _protocol_step(e: dict[str, Any], lim: Limits) -> str:
    return f"{e.get('step')} {e.get('outcome')}: {e.get('note', '')}"


def _job_finished_server(e: dict[str, Any], lim: Limits) -> str:
    text = f"job {e.get('job_id')} ({e.get('tool')}) {e.get('status')} in {e.get('duration_s')} s"
    return text + (f": {e['error']}" if e.get("error") else "")


DETAILS = {
    ("server", "tool_call"): _tool_call,
    ("launcher", "protocol_step"): _protocol_step,
    ("server", "job_finished"): _job_finished_server,
}


def event_line(e: dict[str, Any], lim: Limits = SHORT) -> str:
    """One event (normalized by spd_mcp.common.events) as one line of the stream."""
    source, kind = str(e.get("source")), str(e.get("kind"))
    details = DETAILS.get((source, kind), _fields)(e, lim)
    clock = str(e.get("ts") or "")[11:19] or "--:--:--"
    head = f"{clock} {source:<8} {kind}"
    return f"{head} {cut(details, lim.line - len(head) - 1)}".rstrip()


class LogSections:
    """The sections of a growing research_log.md, in turn (each opens with a dated heading)."""

    def __init__(self, path: Path) -> None:
        self.path, self.pos, self.buf = path, 0, ""
        self.lines: list[str] = []

    def _read(self) -> None:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8", errors="replace") as f:
            f.seek(self.pos)
            chunk = f.read()
            self.pos = f.tell()
        *complete, self.buf = (self.buf + chunk).split("\n")
        self.lines += complete

    def next(self) -> list[str] | None:
        """The oldest section not yet shown (its call has been answered, so it is whole)."""
        self._read()
        heads = [i for i, line in enumerate(self.lines) if LOG_HEADING.match(line)]
        if not heads:
            return None
        end = heads[1] if len(heads) > 1 else len(self.lines)
        section, self.lines = self.lines[:end], self.lines[end:]
        return render_section(section)

    def rest(self) -> list[str]:
        self._read()
        out: list[str] = []
        while (section := self.next()) is not None:
            out += section
        if any(line.strip() for line in self.lines):
            out += render_section(self.lines)
        self.lines = []
        return out


def render_section(lines: list[str]) -> list[str]:
    """A log section: its heading in the stream's format, its text whole beneath it."""
    out, body = [], []
    for line in lines:
        m = LOG_HEADING.match(line)
        if m:
            out.append(f"{m.group(2)} {'log':<8} ## {m.group(3) or ''}".rstrip())
        else:
            body.append(line)
    while body and not body[0].strip():
        body.pop(0)
    while body and not body[-1].strip():
        body.pop()
    return out + [(BODY + line).rstrip() for line in body]


class Stream:
    """Turns events (in file order) into the lines a person follows; see the module docstring."""

    def __init__(self, research_log: Path) -> None:
        self.log = LogSections(research_log)
        self.pending_step: dict[str, Any] | None = None
        self.failed_tool: str | None = None

    def lines(self, e: dict[str, Any]) -> list[str]:
        source, kind = e.get("source"), e.get("kind")
        if source == "server" and kind == "tool_call":
            self.failed_tool = None if e.get("outcome") == "ok" else str(e.get("tool"))
            if e.get("tool") in LOG_TOOLS and e.get("outcome") == "ok":
                section = self.log.next()
                if section is not None:
                    self.pending_step = None  # the section is that step's record
                    return section
            return [event_line(e)]
        if source == "launcher" and kind == "protocol_step":
            if e.get("step") != "log":
                out, self.pending_step = self.flush_step(), e
                return out
            out = self.flush_step()  # its log entry failed: the step's own note is its record
            return out if self.failed_tool == "update_research_log" else out + [event_line(e)]
        if source == "launcher" and kind == "tool_error" and e.get("tool_name") == self.failed_tool:
            return []  # the server's line for the same call said it
        return self.flush_step() + [event_line(e)]

    def flush_step(self) -> list[str]:
        step, self.pending_step = self.pending_step, None
        return [event_line(step)] if step is not None else []

    def finish(self) -> list[str]:
        """What is left when the job has ended: a step without a log entry, unshown log text."""
        return self.flush_step() + self.log.rest()
