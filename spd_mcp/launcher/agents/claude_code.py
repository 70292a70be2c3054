"""Run Claude Code headless and locked down (see sandbox.py), then read its stream-json back."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from spd_mcp.contract import SERVER_NAME, bare_tool_name, claude_tool_name
from spd_mcp.launcher.agents import AgentContext, AgentResult, flag_no_model_tool, is_model_tool
from spd_mcp.launcher.sandbox import SandboxPaths, claude_argv, claude_env
from spd_mcp.launcher.server_proc import die_with_parent

RESULT_STATUS = {
    "success": "completed",
    "error_max_turns": "max_turns",
    "error_max_budget_usd": "budget",
}
UNAVAILABLE = "No such tool available"


@dataclass
class StreamReport:
    """What a claude stream-json transcript says about the run."""

    init_problems: list[str] = field(default_factory=list)
    tool_calls: int = 0
    model_tool_calls: int = 0
    denials: list[dict[str, Any]] = field(default_factory=list)
    unavailable: list[dict[str, Any]] = field(default_factory=list)
    tool_errors: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None


def check_init(init: dict[str, Any] | None, expected_tools: Iterable[str]) -> list[str]:
    """Problems with the init message: our server connected, alone, with exactly our tools."""
    if init is None:
        return ["no init message in the stream (claude did not start a session)"]
    problems = []
    servers = {s.get("name"): s.get("status") for s in init.get("mcp_servers", [])}
    if servers.get(SERVER_NAME) != "connected":
        problems.append(f"server {SERVER_NAME!r} not connected: {servers}")
    others = sorted(set(servers) - {SERVER_NAME})
    if others:
        problems.append(f"other MCP servers loaded: {others}")
    tools = set(init.get("tools", []))
    expected = {claude_tool_name(t) for t in expected_tools}
    if tools != expected:
        problems.append(
            f"tools differ from the server's: extra {sorted(tools - expected)}, "
            f"missing {sorted(expected - tools)}"
        )
    return problems


def analyze_stream(
    messages: Iterable[dict[str, Any]], expected_tools: Iterable[str]
) -> StreamReport:
    report = StreamReport()
    names: dict[str, str] = {}
    init = None
    denied_ids: set[str] = set()
    for msg in messages:
        kind, sub = msg.get("type"), msg.get("subtype")
        if kind == "system" and sub == "init" and init is None:
            init = msg
        elif kind == "system" and sub == "permission_denied":
            _add_denial(
                report,
                denied_ids,
                msg.get("tool_name"),
                msg.get("tool_use_id"),
                msg.get("message", ""),
            )
        elif kind == "assistant":
            for block in _blocks(msg):
                if block.get("type") == "tool_use":
                    names[block.get("id", "")] = block.get("name", "")
                    report.tool_calls += 1
                    report.model_tool_calls += is_model_tool(bare_tool_name(block.get("name", "")))
        elif kind == "user":
            for block in _blocks(msg):
                if block.get("type") == "tool_result" and block.get("is_error"):
                    tid = block.get("tool_use_id", "")
                    entry = {
                        "tool_name": names.get(tid, "?"),
                        "tool_use_id": tid,
                        "message": _text(block.get("content"))[:500],
                    }
                    if tid in denied_ids:
                        continue
                    (
                        report.unavailable
                        if UNAVAILABLE in entry["message"]
                        else report.tool_errors
                    ).append(entry)
        elif kind == "result":
            report.result = msg
            for d in msg.get("permission_denials") or []:
                _add_denial(report, denied_ids, d.get("tool_name"), d.get("tool_use_id"), "")
    report.init_problems = check_init(init, expected_tools)
    return report


def _add_denial(report: StreamReport, seen: set[str], name: Any, tid: Any, message: str) -> None:
    if tid in seen:
        return
    seen.add(tid)
    report.denials.append({"tool_name": name, "tool_use_id": tid, "message": message})


def _blocks(msg: dict[str, Any]) -> list[dict[str, Any]]:
    content = (msg.get("message") or {}).get("content")
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return str(content)


def run_claude_code(ctx: AgentContext) -> AgentResult:
    spec = ctx.spec
    assert spec.claude_bin, "the claude_code agent needs the claude CLI's path in the spec"
    paths = SandboxPaths.inside(ctx.inv.root)
    paths.prepare()
    tool_names = [t.name for t in ctx.tools]
    argv = claude_argv(
        claude_bin=spec.claude_bin,
        kickoff=ctx.kickoff,
        system_prompt_file=ctx.inv.prompt,
        mcp_config_file=ctx.inv.mcp_config,
        tools=tool_names,
        max_turns=spec.max_turns,
        budget_usd=spec.budget_usd,
        model=spec.model,
    )
    ctx.events.emit(
        "agent_started",
        agent="claude_code",
        model=spec.model,
        tools=len(tool_names),
        max_turns=spec.max_turns,
        budget_usd=spec.budget_usd,
    )
    messages: list[dict[str, Any]] = []
    with (ctx.inv.root / "agent_stderr.log").open("ab") as err:
        proc = subprocess.Popen(
            argv,
            cwd=paths.cwd,
            env=claude_env(paths),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            bufsize=1,
            preexec_fn=die_with_parent,
        )
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if not line.strip():
                    continue
                ctx.transcript.write_line(line)
                try:
                    messages.append(json.loads(line))
                except json.JSONDecodeError:
                    messages.append({"type": "unparsed", "line": line[:1000]})
            rc = proc.wait(timeout=spec.agent_timeout_s)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return result_from_stream(ctx, analyze_stream(messages, tool_names), rc)


def result_from_stream(ctx: AgentContext, report: StreamReport, rc: int | None) -> AgentResult:
    """Events for every problem the stream shows, and the run's AgentResult."""
    for d in report.denials:
        ctx.events.emit("permission_denied", **d)
    for u in report.unavailable:
        ctx.events.emit("tool_unavailable", **u)
    for e in report.tool_errors:
        ctx.events.emit("tool_error", **e)
    res = report.result or {}
    result = AgentResult(
        status=RESULT_STATUS.get(res.get("subtype", ""), "failed"),
        turns=int(res.get("num_turns") or 0),
        cost_usd=res.get("total_cost_usd"),
        model_tool_calls=report.model_tool_calls,
        tool_calls=report.tool_calls,
        tool_errors=len(report.tool_errors),
        denials=report.denials + report.unavailable,
        final_text=str(res.get("result") or ""),
        returncode=rc,
    )
    if report.init_problems:
        result.status, result.error = "failed", "; ".join(report.init_problems)
    elif report.result is None:
        result.error = (
            f"claude exited with code {rc} without a result message (see agent_stderr.log)"
        )
    elif res.get("is_error") and result.status == "completed":
        result.status, result.error = "failed", str(res.get("result"))[:500]
    return flag_no_model_tool(result)
