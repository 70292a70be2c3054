"""get_ci, probe_component and find_components through a real in-memory MCP client, checked by a
second route."""

import pytest
import torch
from mcp import Client

from spd_core.analysis.ci import compute_ci
from tests.server.helpers import err, make_server, ok

pytestmark = pytest.mark.anyio
TEXT = "the cat sat on the"


async def test_get_ci_equals_probe_component_and_a_direct_pass(lm) -> None:
    async with Client(make_server(lm)) as c:
        res = await ok(
            c,
            "get_ci",
            {"text": TEXT, "position": -1, "threshold": 0.0, "top_k": 1000, "limit": 500},
        )
        probes = {
            e["component"]: await ok(
                c, "probe_component", {"text": TEXT, "component": e["component"]}
            )
            for e in res["entries"][:6]
        }
    assert res["positions"] == [4] and res["tokens"] == ["the", "cat", "sat", "on", "the"]
    for e in res["entries"][:6]:
        row = probes[e["component"]]["positions"][4]
        assert (row["ci"], row["inner_act"]) == pytest.approx((e["ci"], e["inner_act"]), abs=1e-6)
    ref = compute_ci(lm.model, torch.tensor([lm.tokenizer.encode(TEXT, add_special_tokens=False)]))
    expected = {
        f"{layer}:4:{c}" for layer, g in ref.ci.items() for c in (g[4] > 0).nonzero()[:, 0].tolist()
    }
    assert {e["node"] for e in res["entries"]} == expected and res["total"] == len(expected)
    assert res["l0"] == {layer: float((g[4] > 0).sum()) for layer, g in ref.ci.items()}
    for e in res["entries"]:
        layer, _, c = e["node"].rsplit(":", 2)
        assert e["ci"] == pytest.approx(float(ref.ci[layer][4, int(c)]), abs=1e-6)


async def test_get_ci_threshold_top_k_layers_and_paging(lm) -> None:
    async with Client(make_server(lm)) as c:
        full = await ok(c, "get_ci", {"text": TEXT, "threshold": 0.2, "top_k": 1000, "limit": 500})
        one = await ok(
            c,
            "get_ci",
            {"text": TEXT, "threshold": 0.2, "top_k": 1, "layers": ["0.mlp.up", "1.attn.q"]},
        )
        page = await ok(
            c, "get_ci", {"text": TEXT, "threshold": 0.2, "top_k": 1000, "offset": 2, "limit": 3}
        )
    assert all(e["ci"] > 0.2 for e in full["entries"]) and full["positions"] == list(range(5))
    assert page["entries"] == full["entries"][2:5] and page["total"] == full["total"]
    assert set(one["l0"]) == {"0.mlp.up", "1.attn.q"}
    for pos in range(5):
        for layer in ("0.mlp.up", "1.attn.q"):
            mine = [
                e
                for e in full["entries"]
                if e["position"] == pos and e["component"].startswith(layer + ":")
            ]
            top = [
                e
                for e in one["entries"]
                if e["position"] == pos and e["component"].startswith(layer + ":")
            ]
            assert top == mine[:1]  # the largest CI of that (position, layer)


@pytest.mark.parametrize(
    ("tool", "args", "needle"),
    [
        ("get_ci", {"text": TEXT, "layers": ["9.mlp.up"]}, "valid layers: 0.attn.q"),
        ("get_ci", {"text": TEXT, "position": 5}, "valid: -5..4"),
        (
            "get_ci",
            {"text": TEXT, "edit_id": "e7"},
            "unknown edit_id 'e7'; known edit ids: none yet",
        ),
        ("get_ci", {"features": [1.0]}, "give 'text'"),
        ("probe_component", {"text": TEXT, "component": "9.mlp.up:1"}, "valid layers"),
        ("probe_component", {"text": TEXT, "component": "0.mlp.up:8"}, "valid: 0..7"),
        ("probe_component", {"text": TEXT, "component": "0.mlp.up"}, "expected '<layer>:<c>'"),
        (
            "find_components",
            {"examples": [{"text": TEXT, "target_token": "mat cat"}]},
            "must be exactly one",
        ),
        (
            "find_components",
            {"examples": [{"text": TEXT, "target_token": "mat", "position": 9}]},
            "valid: -5..4",
        ),
    ],
)
async def test_component_tool_errors(lm, tool, args, needle) -> None:
    async with Client(make_server(lm)) as c:
        assert needle in await err(c, tool, args)


async def test_find_components_by_ci_equals_the_intersection_of_get_ci(lm) -> None:
    texts = [
        ("the cat sat on the", "mat"),
        ("the dog ran to the", "park"),
        ("Paris is the capital of", "France"),
    ]
    examples = [{"text": t, "target_token": tok} for t, tok in texts]
    async with Client(make_server(lm)) as c:
        found = await ok(
            c,
            "find_components",
            {
                "examples": examples,
                "method": "ci",
                "ci_threshold": 0.3,
                "min_frequency": 1.0,
                "limit": 1000,
            },
        )
        sets = []
        for t, _ in texts:
            res = await ok(
                c,
                "get_ci",
                {"text": t, "position": -1, "threshold": 0.3, "top_k": 1000, "limit": 500},
            )
            sets.append({e["component"] for e in res["entries"]})
    assert found["status"] == "done"
    result = found["result"]
    assert {r["component"] for r in result["components"]} == set.intersection(*sets)
    assert result["per_example_sizes"] == [len(s) for s in sets]
    assert all(r["frequency"] == 1.0 and r["count"] == 3 for r in result["components"])


async def test_find_components_by_circuit_runs_as_a_job(lm) -> None:
    args = {
        "examples": [
            {"text": "the cat sat on the", "target_token": "mat"},
            {"text": "the dog ran to the", "target_token": "park"},
        ],
        "steps": 3,
        "min_frequency": 0.5,
        "wait_s": 0,
    }
    async with Client(make_server(lm)) as c:
        started = await ok(c, "find_components", args)
        done = await ok(c, "get_job", {"job_id": started["job_id"], "wait_s": 30})
    assert started["status"] in ("queued", "running", "done") and done["status"] == "done"
    res = done["result"]
    assert res["n_examples"] == 2 and res["total"] == len(res["components"])
    assert all(r["frequency"] >= 0.5 for r in res["components"])


async def test_toy_component_tools_take_features(toy) -> None:
    x = [1.0, 0.0, 0.5, 0.0, 0.25]
    async with Client(make_server(toy)) as c:
        res = await ok(c, "get_ci", {"features": x, "threshold": 0.0, "top_k": 100})
        prof = await ok(c, "probe_component", {"features": x, "component": "linear1:2"})
        assert "needs a language model" in await err(
            c, "find_components", {"examples": [{"text": "a", "target_token": "b"}]}
        )
    ref = compute_ci(toy.model, torch.tensor([x]))
    assert res["positions"] == [0] and res["tokens"] == ["<input>"]
    assert prof["positions"][0]["ci"] == pytest.approx(float(ref.ci["linear1"][0, 2]), abs=1e-6)
    assert {e["node"] for e in res["entries"]} == {
        f"{layer}:0:{c}" for layer, g in ref.ci.items() for c in (g[0] > 0).nonzero()[:, 0].tolist()
    }
