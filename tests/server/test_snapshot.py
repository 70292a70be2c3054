"""The tools/list contract (names, annotations, input and output schemas) is checked in.

When a change to it is deliberate, regenerate the snapshot with
    SPD_UPDATE_TOOLS_SNAPSHOT=1 python -m pytest tests/server/test_snapshot.py
and commit tests/server/tools_snapshot.json with the change.
"""

import json
import os
from pathlib import Path

import pytest
from mcp import Client

from tests.server.helpers import make_server

SNAPSHOT = Path(__file__).with_name("tools_snapshot.json")
pytestmark = pytest.mark.anyio


async def current_tools(run) -> list[dict]:
    async with Client(make_server(run)) as c:
        tools = (await c.list_tools()).tools
    return [
        {
            "name": t.name,
            "description": t.description,
            "annotations": t.annotations.model_dump(exclude_none=True) if t.annotations else None,
            "input_schema": t.input_schema,
            "output_schema": t.output_schema,
        }
        for t in sorted(tools, key=lambda t: t.name)
    ]


async def test_tools_list_matches_the_snapshot(lm) -> None:
    tools = await current_tools(lm)
    text = json.dumps(tools, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if os.environ.get("SPD_UPDATE_TOOLS_SNAPSHOT") == "1":
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.exists(), "no snapshot yet: run with SPD_UPDATE_TOOLS_SNAPSHOT=1 to create it"
    old = json.loads(SNAPSHOT.read_text())
    changed = sorted(
        {t["name"] for t in tools if t not in old} | {t["name"] for t in old if t not in tools}
    )
    assert old == tools, (
        f"the MCP tool contract changed for: {', '.join(changed)}. If this is deliberate, "
        "regenerate with "
        "SPD_UPDATE_TOOLS_SNAPSHOT=1 python -m pytest tests/server/test_snapshot.py and commit "
        "tests/server/tools_snapshot.json (agents and docs depend on these schemas)."
    )


async def test_every_tool_is_documented_for_an_agent(lm) -> None:
    """A description with an example call; a field described only where its name, type, bounds and
    default do not say enough, in a short note."""
    for t in await current_tools(lm):
        assert "Example: " in t["description"] and t["name"] + "(" in t["description"], t["name"]
        hints = t["annotations"]
        assert hints["read_only_hint"] is not None and (
            hints["read_only_hint"] or hints["destructive_hint"] is not None
        )
        assert t["input_schema"].get("additionalProperties") is False
        for name, prop in t["input_schema"].get("properties", {}).items():
            text = prop.get("description")
            assert text is None or 0 < len(text.strip()) <= 100, f"{t['name']}.{name}: {text!r}"
        assert "summary" in t["output_schema"]["properties"], t["name"]
