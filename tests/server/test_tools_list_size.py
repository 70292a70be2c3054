"""tools/list stays small enough for an agent's context: at most 40,000 bytes of JSON, measured on
what the real SDK client receives, and (slow) checked against the bytes the stdio server writes."""

import pytest
from jsonschema import Draft202012Validator
from mcp import Client

from bench.bench_tools_list import compact_bytes, sizes, wire_tools_list
from tests.server.helpers import make_server

MAX_BYTES = 40_000
pytestmark = pytest.mark.anyio


async def listed(run) -> dict:
    """The tools/list result as the client received it, in the server's wire form."""
    async with Client(make_server(run)) as c:
        tools = (await c.list_tools()).tools
    return {"tools": [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools]}


async def test_tools_list_fits_in_40_kb(lm) -> None:
    result = await listed(lm)
    parts = sizes(result)
    assert len(result["tools"]) >= 25
    assert parts["total"] <= MAX_BYTES, f"tools/list: {parts['total']} bytes > {MAX_BYTES}: {parts}"
    assert parts["output_field_descriptions"] == 0, "output schemas carry structure only"
    for tool in result["tools"]:  # compact, and still valid JSON Schema
        Draft202012Validator.check_schema(tool["inputSchema"])
        Draft202012Validator.check_schema(tool["outputSchema"])


@pytest.mark.slow
async def test_the_measure_is_what_stdio_carries(lm) -> None:
    sent, wire = wire_tools_list("lm")
    result = await listed(lm)
    assert sent == compact_bytes(result) <= MAX_BYTES
    assert wire == result
