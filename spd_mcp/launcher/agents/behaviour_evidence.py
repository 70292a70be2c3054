"""Gather what `behaviour_choice.choose_behaviour` weighs, through the server's MCP tools.

Calls list_probe_prompts (every page, unless the caller has the probes already: probes, foils,
behaviour descriptions), run_prompt on each quoted phrase of two or more words and on it without
its last word, and search_dataset on each quoted single word. The tools' descriptions, with their
arguments' and their results' (from the contract), are the background of general words. A call
that fails leaves its piece of evidence out; the choice is then made on the rest.

`call(tool, args)` returns a tool's structured result and raises when the call fails: the
built-in agent passes its own recorded `call`; `choose_behaviour_via_mcp` adapts an MCP client.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from mcp import Client

from spd_mcp.contract import BY_NAME
from spd_mcp.contract.data import SearchResult
from spd_mcp.contract.model import ProbeList, RunPromptResult
from spd_mcp.contract.wire import Wire
from spd_mcp.launcher.agents.behaviour_choice import (
    Behaviour,
    BehaviourChoice,
    Evidence,
    Prediction,
    Probe,
    choose_behaviour,
    quoted_spans,
    words,
)
from spd_mcp.launcher.mcp_link import ToolInfo, list_all_tools

Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
PAGE = 200
W = TypeVar("W", bound=Wire)
SEARCH_LIMIT = 20


class ToolFailed(RuntimeError):
    """A tool answered with an error or without a structured result."""


def client_call(client: Client) -> Call:
    async def call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
        res = await client.call_tool(tool, args)
        data = res.structured_content
        if res.is_error or not isinstance(data, dict):
            raise ToolFailed(f"{tool} returned an error or no structured result")
        return data

    return call


async def _try(call: Call, model: type[W], tool: str, args: dict[str, Any]) -> W | None:
    """The tool's result as its contract model, or None when the call fails or the result does not
    fit the model."""
    try:
        return model.model_validate(await call(tool, args))
    except Exception:  # any failure of one call: its piece of evidence is left out
        return None


async def _probes(
    call: Call, have: Sequence[Mapping[str, Any]] | None
) -> tuple[list[Mapping[str, Any]], dict[str, Behaviour]]:
    rows: list[Mapping[str, Any]] = list(have or [])
    behaviours: dict[str, Behaviour] = {}
    offset = 0
    while True:
        page = await _try(
            call,
            ProbeList,
            "list_probe_prompts",
            {"offset": offset, "limit": 1 if have is not None else PAGE},
        )
        if page is None:
            break
        for tag, b in page.behaviours.items():
            behaviours[tag] = Behaviour(b.description, tuple(b.names))
        if have is not None:
            break
        rows += [p.model_dump() for p in page.prompts]
        offset += PAGE
        if offset >= page.total:
            break
    return rows, behaviours


async def _predict(call: Call, text: str, completes: str | None) -> Prediction | None:
    res = await _try(call, RunPromptResult, "run_prompt", {"text": text, "top_k": 5})
    if res is None or not res.predictions:
        return None
    top = tuple((t.token, t.prob) for t in res.predictions[-1].top)
    return Prediction(text, top, tuple(res.tokens), completes)


def _background(tools: Sequence[ToolInfo]) -> tuple[str, ...]:
    def fields(schema: dict[str, Any]) -> list[str]:
        props = schema.get("properties") or {}
        return [str(p.get("description") or "") for p in props.values() if isinstance(p, dict)]

    return tuple(
        " ".join([t.description, *fields(t.input_schema), *_result_notes(t.name)]) for t in tools
    )


def _result_notes(tool: str) -> list[str]:
    """A tool's result field descriptions, from the contract (tools/list leaves them out)."""
    entry = BY_NAME.get(tool)
    if entry is None:
        return []
    out: list[str] = []

    def walk(schema: Any) -> None:
        if isinstance(schema, dict):
            for key, value in schema.items():
                if key == "description" and isinstance(value, str):
                    out.append(value)
                else:
                    walk(value)
        elif isinstance(schema, list):
            for s in schema:
                walk(s)

    for model in (entry.result_model, *entry.job_results):
        walk(model.model_json_schema())
    return out


async def gather_evidence(
    call: Call,
    question: str,
    probes: Sequence[Mapping[str, Any]] | None = None,
    tools: Sequence[ToolInfo] = (),
) -> Evidence:
    """The evidence for `question`; `probes`: list_probe_prompts rows the caller already has."""
    rows, behaviours = await _probes(call, probes)
    predictions: list[Prediction] = []
    hits: dict[str, tuple[str, ...]] = {}
    for span in dict.fromkeys(" ".join(q.split()) for q in quoted_spans(question)):
        if len(words(span)) > 1:
            head, last = span.rsplit(" ", 1)
            for text, completes in ((span, None), (head, last)):
                if pred := await _predict(call, text, completes):
                    predictions.append(pred)
        elif words(span):
            found = await _try(
                call, SearchResult, "search_dataset", {"query": span, "limit": SEARCH_LIMIT}
            )
            if found is not None:
                hits[span.lower()] = tuple(m.snippet for m in found.matches)
    parsed = tuple(
        Probe(
            str(p.get("text") or ""),
            str(p.get("target_token") or ""),
            str(p.get("mechanism") or ""),
            p.get("foil"),
        )
        for p in rows
    )
    return Evidence(parsed, behaviours, tuple(predictions), hits, _background(tools))


async def pick_behaviour(
    call: Call,
    question: str,
    probes: Sequence[Mapping[str, Any]] | None = None,
    tools: Sequence[ToolInfo] = (),
) -> BehaviourChoice:
    """The behaviour `question` is about (or None), from evidence gathered through `call`."""
    return choose_behaviour(question, await gather_evidence(call, question, probes, tools))


async def choose_behaviour_via_mcp(client: Client, question: str) -> BehaviourChoice:
    """The behaviour `question` is about, from evidence gathered through an MCP client."""
    return await pick_behaviour(client_call(client), question, tools=await list_all_tools(client))
