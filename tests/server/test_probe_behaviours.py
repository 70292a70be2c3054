"""list_probe_prompts carries each probe's foil and the run's behaviour descriptions
(behaviours.json)."""

import dataclasses
from types import SimpleNamespace

import pytest
from mcp import Client

from spd_mcp.server.state import Behaviour, served_from_loaded
from tests.server.helpers import make_server, ok

pytestmark = pytest.mark.anyio


async def test_probe_foils_and_behaviours_reach_the_client(lm) -> None:
    loaded = SimpleNamespace(
        model=lm.model,
        tokenizer=lm.tokenizer,
        path=None,
        metrics={},
        target_spec=None,
        probes=[
            {"text": "the dogs near the cat", "target": "are", "mechanism": "agree", "foil": "is"}
        ],
        behaviours={"agree": {"description": "is or are", "names": ["agreement"]}},
    )
    served = served_from_loaded(loaded)
    assert served.behaviours == {"agree": Behaviour("is or are", ("agreement",))}
    async with Client(make_server(served)) as c:
        res = await ok(c, "list_probe_prompts")
    assert res["prompts"][0]["foil"] == "is"
    assert res["behaviours"] == {"agree": {"description": "is or are", "names": ["agreement"]}}


async def test_a_run_without_behaviours_lists_none(lm) -> None:
    async with Client(make_server(dataclasses.replace(lm, behaviours={}))) as c:
        res = await ok(c, "list_probe_prompts")
    assert res["behaviours"] == {}
