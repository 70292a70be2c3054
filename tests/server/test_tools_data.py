"""get_component_info, get_activation_examples, search_dataset, get_dataset_attributions through a
real client."""

import pytest
import torch
from mcp import Client

from spd_core.harvest_store import (
    HarvestStore,
    activation_examples,
    component_summary,
    dataset_attributions,
)
from tests.server.harvested import corpus, harvested_run
from tests.server.helpers import err, make_server, ok

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def served(lm, tmp_path_factory):
    return harvested_run(lm, tmp_path_factory.mktemp("run"))


async def test_component_info_matches_the_store_and_the_model(served) -> None:
    store = HarvestStore(served.path)
    c = max(range(8), key=lambda c: component_summary(store, "1.mlp.up", c)["n_firing"])
    live = component_summary(store, "1.mlp.up", c, top_k=5, min_count=1)
    assert live["n_firing"] > 0
    async with Client(make_server(served)) as client:
        info = await ok(
            client, "get_component_info", {"component": f"1.mlp.up:{c}", "min_count": 1, "top_k": 5}
        )
        down = await ok(client, "get_component_info", {"component": "1.mlp.down:3", "top_k": 5})
    assert info["has_harvest"] and info["density"] == pytest.approx(live["density"])
    assert info["n_firing"] == live["n_firing"] and info["mean_ci"] == pytest.approx(
        live["mean_ci"]
    )
    assert [r["token_id"] for r in info["input_tokens"]] == [
        r["token_id"] for r in live["input_tokens"]
    ]
    assert [r["pmi"] for r in info["input_tokens"]] == pytest.approx(
        [r["pmi"] for r in live["input_tokens"]]
    )
    assert all(r["token"] == served.tokenizer.decode([r["token_id"]]) for r in info["input_tokens"])
    assert (
        info["cofiring"] and info["promotes"] == [] and "residual stream" in info["readout_method"]
    )
    comp = served.model.comp("1.mlp.up")
    assert info["read_norm"] == pytest.approx(float(comp.V[:, c].detach().norm()), rel=1e-5)
    assert info["summary"].startswith(f"Component 1.mlp.up:{c}")
    # second route for the readout: lm_head applied to the final norm's gain times the write vector
    lm, u = served.model.target, served.model.comp("1.mlp.down").U[3].detach()
    with torch.no_grad():
        direct = lm.lm_head.weight @ (lm.model.norm.weight * u)
    top = direct.topk(5)
    assert down["write_norm"] == pytest.approx(float(u.norm()), rel=1e-5)
    assert [t["token_id"] for t in down["promotes"]] == top.indices.tolist()
    assert [t["logit"] for t in down["promotes"]] == pytest.approx(top.values.tolist(), rel=1e-4)
    assert [t["token_id"] for t in down["suppresses"]] == (-direct).topk(5).indices.tolist()


async def test_component_info_without_harvest_keeps_the_model_fields(lm) -> None:
    async with Client(make_server(lm)) as client:
        info = await ok(client, "get_component_info", {"component": "0.mlp.up:1"})
        assert not info["has_harvest"] and info["density"] is None and info["input_tokens"] == []
        assert info["promotes"] == [] and "residual stream" in info["readout_method"]
        assert "spd-harvest" in info["summary"]
        for tool, args in [
            ("get_activation_examples", {"component": "0.mlp.up:1"}),
            ("search_dataset", {"query": "cat"}),
            ("get_dataset_attributions", {"component": "0.mlp.up:1"}),
        ]:
            assert "spd-harvest" in await err(client, tool, args)


async def test_examples_search_and_attributions_page_like_the_store(served) -> None:
    store = HarvestStore(served.path)
    key = next(
        (lay, c)
        for lay in store.layers
        for c in range(8)
        if activation_examples(store, lay, c).total >= 3
    )
    comp = f"{key[0]}:{key[1]}"
    texts = corpus()
    async with Client(make_server(served)) as client:
        page = await ok(
            client, "get_activation_examples", {"component": comp, "limit": 2, "offset": 1}
        )
        ref = activation_examples(store, *key, limit=2, offset=1)
        assert page["total"] == ref.total and [e["text_id"] for e in page["examples"]] == [
            e["text_id"] for e in ref.items
        ]
        for e in page["examples"]:
            ids = served.tokenizer.encode(texts[e["text_id"]], add_special_tokens=False)
            assert e["token_ids"] == ids[e["window_start"] : e["window_start"] + len(e["ci"])]
            assert max(e["ci"]) == pytest.approx(e["max_ci"], abs=1e-4)
        found = await ok(client, "search_dataset", {"query": "capital OF", "limit": 5})
        assert found["total"] == sum(t.lower().count("capital of") for t in texts) >= 1
        assert found["matches"][0]["text_id"] == 0 and found["matches"][0]["char_offset"] == texts[
            0
        ].index("capital")
        tgt = store._rows(
            "SELECT tgt_layer, tgt_c FROM attributions ORDER BY abs(value) DESC LIMIT 1"
        )[0]
        attr = await ok(
            client, "get_dataset_attributions", {"component": f"{tgt[0]}:{tgt[1]}", "top_k": 3}
        )
        ref_attr = dataset_attributions(store, *tgt, top_k=3)
        assert [r["component"] for r in attr["sources"]] == [
            f"{r['layer']}:{r['c']}" for r in ref_attr["sources"]
        ]
        assert [r["value"] for r in attr["sources"]] == pytest.approx(
            [r["value"] for r in ref_attr["sources"]]
        )
        assert attr["sources"] and sum(abs(r["normalised"]) for r in attr["sources"]) <= 1 + 1e-9
        assert (await ok(client, "get_component_info", {"component": "0.mlp.up:1"}))[
            "label"
        ] == "test label"


@pytest.mark.parametrize(
    ("tool", "args", "needle"),
    [
        ("get_component_info", {"component": "9.mlp.up:1"}, "valid layers"),
        ("get_activation_examples", {"component": "0.mlp.up:8"}, "valid: 0..7"),
        ("get_dataset_attributions", {"component": "0.mlp.up"}, "expected '<layer>:<c>'"),
        ("search_dataset", {"query": ""}, "at least 1 character"),
        ("get_dataset_attributions", {"component": "0.mlp.up:1", "sign": "both"}, "abs"),
    ],
)
async def test_errors_say_what_is_valid(served, tool, args, needle) -> None:
    async with Client(make_server(served)) as client:
        assert needle in await err(client, tool, args)


async def test_alive_counts_come_from_the_harvest_and_match_live_ci(served) -> None:
    """alive per layer = components with CI above the harvest threshold on some harvested token;
    checked by a second route: get_ci on every harvested text at that threshold, live."""
    store = HarvestStore(served.path)
    threshold = store.meta["config"]["threshold"]
    seen: set[tuple[str, int]] = set()
    async with Client(make_server(served)) as c:
        info = await ok(c, "get_model_info")
        for text in corpus():
            page = await ok(
                c, "get_ci", {"text": text, "threshold": threshold, "top_k": 1000, "limit": 500}
            )
            assert page["total"] <= 500
            seen |= {tuple(e["component"].rsplit(":", 1)) for e in page["entries"]}  # type: ignore[misc]
    live = {layer: sum(1 for (lay, _) in seen if lay == layer) for layer in store.layers}
    assert {r["layer"]: r["alive"] for r in info["layers"]} == live
    assert sum(live.values()) > 0 and info["alive_source"].startswith(
        f"harvest: components with CI > {threshold}"
    )
    assert f"Alive: {sum(live.values())} of {info['n_components_total']}" in info["summary"]


async def test_alive_is_said_to_be_unmeasured_without_harvest_or_metric(toy) -> None:
    async with Client(make_server(toy)) as c:
        info = await ok(c, "get_model_info")
    assert all(r["alive"] is None for r in info["layers"]) and info["alive_source"].startswith(
        "not measured"
    )
