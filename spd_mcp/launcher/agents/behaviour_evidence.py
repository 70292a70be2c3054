"""Gather what `behaviour_choice.choose_behaviour` weighs, through an MCP session of the server.

Lists the tools (their descriptions and their arguments' are the background of general words),
calls list_probe_prompts (every page: probes, foils, behaviour descriptions), run_prompt on each
quoted phrase of two or more words and on it without its last word, and search_dataset on each
quoted single word. A call that fails leaves its piece of evidence out; the choice is then made
on the rest.
"""

from __future__ import annotations

from typing import Any

from mcp import Client

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
from spd_mcp.launcher.mcp_link import list_all_tools

PAGE = 200
SEARCH_LIMIT = 20


async def _call(client: Client, tool: str, args: dict[str, Any]) -> dict[str, Any] | None:
    try:
        res = await client.call_tool(tool, args)
    except Exception:  # a transport or protocol error: this piece of evidence is left out
        return None
    data = res.structured_content
    return data if not res.is_error and isinstance(data, dict) else None


async def _predict(client: Client, text: str, completes: str | None) -> Prediction | None:
    res = await _call(client, "run_prompt", {"text": text, "top_k": 5})
    positions = (res or {}).get("predictions") or []
    if not res or not positions:
        return None
    top = tuple((str(t["token"]), float(t["prob"])) for t in positions[-1].get("top") or [])
    return Prediction(text, top, tuple(str(t) for t in res.get("tokens") or []), completes)


async def gather_evidence(client: Client, question: str) -> Evidence:
    probes: list[Probe] = []
    behaviours: dict[str, Behaviour] = {}
    offset = 0
    while True:
        page = await _call(client, "list_probe_prompts", {"offset": offset, "limit": PAGE})
        if page is None:
            break
        probes += [Probe(str(p["text"]), str(p["target_token"]), str(p["mechanism"]), p.get("foil"))
                   for p in page.get("prompts") or []]
        for tag, b in (page.get("behaviours") or {}).items():
            behaviours[tag] = Behaviour(str(b["description"]), tuple(b.get("names") or ()))
        offset += PAGE
        if offset >= int(page.get("total") or 0):
            break
    predictions: list[Prediction] = []
    hits: dict[str, tuple[str, ...]] = {}
    for span in dict.fromkeys(" ".join(q.split()) for q in quoted_spans(question)):
        if len(words(span)) > 1:
            head, last = span.rsplit(" ", 1)
            for text, completes in ((span, None), (head, last)):
                if pred := await _predict(client, text, completes):
                    predictions.append(pred)
        elif words(span):
            found = await _call(client, "search_dataset", {"query": span, "limit": SEARCH_LIMIT})
            if found is not None:
                hits[span.lower()] = tuple(str(m["snippet"]) for m in found.get("matches") or [])
    try:
        background = tuple(" ".join([t.description, *_field_descriptions(t.input_schema)])
                           for t in await list_all_tools(client))
    except Exception:  # without a background every word counts as rare
        background = ()
    return Evidence(tuple(probes), behaviours, tuple(predictions), hits, background)


def _field_descriptions(schema: dict[str, Any]) -> list[str]:
    props = schema.get("properties") or {}
    return [str(p.get("description") or "") for p in props.values() if isinstance(p, dict)]


async def choose_behaviour_via_mcp(client: Client, question: str) -> BehaviourChoice:
    """The behaviour `question` is about, from evidence gathered through `client`."""
    return choose_behaviour(question, await gather_evidence(client, question))
