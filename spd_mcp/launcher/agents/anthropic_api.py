"""A tool-use loop over the Anthropic Messages API whose tools are the MCP server's tools.

Each turn: one Messages request (system prompt, the conversation, every tool from `tools/list`),
then every `tool_use` in the answer is called through an MCP client on the same server and sent
back as a `tool_result`. Stops at end_turn, at `max_turns`, or when the spent dollars (from the
reported token usage) reach the budget. Overload (529 / overloaded_error), rate limits and
connection errors are retried with exponential backoff.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anthropic
import anyio

from spd_mcp.launcher.agents import AgentContext, AgentResult, flag_no_model_tool, is_model_tool
from spd_mcp.launcher.mcp_link import connect, result_text

MAX_TOKENS = 8192
RETRIES = 6
BACKOFF_BASE_S = 2.0
BACKOFF_MAX_S = 60.0
# Dollars per million tokens (input, output) by model family; unknown models are priced as opus.
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "opus": (5.0, 25.0),
    "sonnet": (3.0, 15.0),
    "haiku": (1.0, 5.0),
}


def price(model: str) -> tuple[float, float]:
    for family, p in PRICES_PER_MTOK.items():
        if family in model:
            return p
    return PRICES_PER_MTOK["opus"]


def usage_cost(model: str, usage: Any) -> float:
    p_in, p_out = price(model)
    tokens_in = (
        (getattr(usage, "input_tokens", 0) or 0)
        + (getattr(usage, "cache_creation_input_tokens", 0) or 0)
        + 0.1 * (getattr(usage, "cache_read_input_tokens", 0) or 0)
    )
    return (tokens_in * p_in + (getattr(usage, "output_tokens", 0) or 0) * p_out) / 1e6


def describe(exc: BaseException) -> str:
    """`Type: message` of the first leaf exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def retryable(exc: BaseException) -> bool:
    if isinstance(exc, anthropic.APIConnectionError | anthropic.RateLimitError):
        return True
    if isinstance(exc, anthropic.APIStatusError):
        status: int = exc.status_code
        return status in (429, 500, 502, 503, 529) or "overloaded" in str(exc)
    return False


async def create_with_retry(
    client: anthropic.AsyncAnthropic,
    request: dict[str, Any],
    on_retry: Callable[[int, BaseException, float], None],
    retries: int = RETRIES,
    base_s: float = BACKOFF_BASE_S,
) -> Any:
    for attempt in range(retries + 1):
        try:
            return await client.messages.create(**request)
        except Exception as exc:
            if attempt == retries or not retryable(exc):
                raise
            delay = min(BACKOFF_MAX_S, base_s * 2**attempt)
            on_retry(attempt + 1, exc, delay)
            await anyio.sleep(delay)
    raise AssertionError("unreachable")


def run_anthropic_api(ctx: AgentContext, *, backoff_base_s: float = BACKOFF_BASE_S) -> AgentResult:
    ctx.events.emit(
        "agent_started",
        agent="anthropic_api",
        model=ctx.spec.model,
        tools=len(ctx.tools),
        max_turns=ctx.spec.max_turns,
        budget_usd=ctx.spec.budget_usd,
    )
    return anyio.run(_loop, ctx, backoff_base_s)


async def _loop(ctx: AgentContext, backoff_base_s: float) -> AgentResult:
    spec = ctx.spec
    tools = [
        {
            "name": t.name,
            "description": t.description[:10_000] or t.name,
            "input_schema": t.input_schema or {"type": "object"},
        }
        for t in ctx.tools
    ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": ctx.kickoff}]
    result = AgentResult(status="completed", cost_usd=0.0)
    ctx.transcript.write(
        {
            "type": "system",
            "subtype": "init",
            "model": spec.model,
            "tools": [t["name"] for t in tools],
            "t": time.time(),
        }
    )

    def on_retry(attempt: int, exc: BaseException, delay: float) -> None:
        ctx.transcript.write(
            {
                "type": "retry",
                "attempt": attempt,
                "delay_s": delay,
                "error": f"{type(exc).__name__}: {exc}"[:500],
                "t": time.time(),
            }
        )

    client = anthropic.AsyncAnthropic(max_retries=0)
    try:
        async with connect(ctx.url, ctx.token) as mcp:
            while True:
                if result.turns >= spec.max_turns:
                    result.status = "max_turns"
                    break
                if (result.cost_usd or 0.0) >= spec.budget_usd:
                    result.status = "budget"
                    break
                request = {
                    "model": spec.model,
                    "max_tokens": MAX_TOKENS,
                    "system": ctx.system_prompt,
                    "messages": messages,
                    "tools": tools,
                }
                msg = await create_with_retry(client, request, on_retry, base_s=backoff_base_s)
                result.turns += 1
                result.cost_usd = (result.cost_usd or 0.0) + usage_cost(spec.model, msg.usage)
                content = [b.model_dump(exclude_none=True) for b in msg.content]
                ctx.transcript.write(
                    {
                        "type": "assistant",
                        "turn": result.turns,
                        "message": msg.model_dump(),
                        "cost_usd": result.cost_usd,
                        "t": time.time(),
                    }
                )
                messages.append({"role": "assistant", "content": content})
                calls = [b for b in msg.content if b.type == "tool_use"]
                result.final_text = "\n".join(b.text for b in msg.content if b.type == "text")
                if msg.stop_reason != "tool_use" or not calls:
                    break
                tool_results = []
                for call in calls:
                    tool_results.append(await _call(ctx, mcp, call, result))
                messages.append({"role": "user", "content": tool_results})
                ctx.transcript.write(
                    {
                        "type": "user",
                        "turn": result.turns,
                        "message": {"role": "user", "content": tool_results},
                        "t": time.time(),
                    }
                )
    except Exception as exc:
        result.status, result.error = "failed", describe(exc)[:1000]
    finally:
        await client.close()
    return flag_no_model_tool(result)


async def _call(ctx: AgentContext, mcp: Any, call: Any, result: AgentResult) -> dict[str, Any]:
    names = {t.name for t in ctx.tools}
    result.tool_calls += 1
    if call.name not in names:
        text = f"No such tool available: {call.name}. Available tools: {', '.join(sorted(names))}"
        entry = {"tool_name": call.name, "tool_use_id": call.id, "message": text}
        result.denials.append(entry)
        ctx.events.emit("tool_unavailable", **entry)
        return {"type": "tool_result", "tool_use_id": call.id, "content": text, "is_error": True}
    result.model_tool_calls += is_model_tool(call.name)
    try:
        res = await mcp.call_tool(call.name, call.input or {})
        text, is_error = result_text(res), bool(res.is_error)
    except Exception as exc:
        text, is_error = f"MCP call failed: {type(exc).__name__}: {exc}", True
    if is_error:
        result.tool_errors += 1
        ctx.events.emit("tool_error", tool_name=call.name, tool_use_id=call.id, message=text[:500])
    return {"type": "tool_result", "tool_use_id": call.id, "content": text, "is_error": is_error}
