"""get_model_info, run_prompt and list_probe_prompts through a real in-memory MCP client."""

import copy
import math

import pytest
import torch
from mcp import Client

from tests.server.helpers import err, make_server, ok
from tests.server.runs import lm_run, toy_run

pytestmark = pytest.mark.anyio


async def test_model_info_matches_the_component_model(lm) -> None:
    async with Client(make_server(lm)) as c:
        info = await ok(c, "get_model_info")
    expected = [(i.name, i.kind, i.d_in, i.d_out, i.C) for i in lm.model.layers.values()]
    assert [
        (r["layer"], r["kind"], r["d_in"], r["d_out"], r["C"]) for r in info["layers"]
    ] == expected
    assert info["n_components_total"] == sum(i.C for i in lm.model.layers.values())
    assert info["vocab_size"] == len(lm.tokenizer) and info["context_length"] == 64
    assert info["is_language_model"] and info["has_probe_suite"] and not info["has_harvest"]
    assert {r["layer"]: r["alive"] for r in info["layers"]}["0.mlp.up"] == 5
    assert info["metrics"]["recon_kl"]["stochastic"] == 0.01
    assert "tiny-llama" in info["summary"]


async def test_model_info_reports_each_layers_weight_delta_and_warns_unless_negligible(toy) -> None:
    async with Client(make_server(toy)) as c:
        info = await ok(c, "get_model_info")
    for row in info["layers"]:
        comp = toy.model.comp(row["layer"])
        with torch.no_grad():
            delta = comp.target_weight - sum(comp.component_weight(i) for i in range(comp.C))
        rel = float(delta.norm() / comp.target_weight.norm())
        assert row["delta_rel_norm"] == pytest.approx(rel, rel=1e-5)
        assert row["delta_mean_sq"] == pytest.approx(float(delta.pow(2).mean()), rel=1e-5)
    assert max(r["delta_rel_norm"] for r in info["layers"]) > 0.01  # untrained components
    assert info["weight_delta"].startswith("WARNING: the components do not sum to the weights")
    assert info["weight_delta"] in info["summary"]
    faithful = toy_run()
    faithful.model = copy.deepcopy(toy.model)
    with torch.no_grad():  # components that sum to the weights exactly: V U from each weight's SVD
        for layer in faithful.model.layers:
            comp = faithful.model.comp(layer)
            if comp.tied_to is not None:
                continue
            u, sv, vh = torch.linalg.svd(comp.target_weight, full_matrices=False)
            comp.V.zero_()[:, : sv.numel()] = vh.T * sv
            comp.U.zero_()[: sv.numel()] = u.T
    async with Client(make_server(faithful)) as c:
        info = await ok(c, "get_model_info")
    assert max(r["delta_rel_norm"] for r in info["layers"]) < 1e-5
    assert info["weight_delta"].startswith("The components sum to the weights")
    assert "WARNING" not in info["summary"]


async def test_run_prompt_probabilities_equal_a_direct_forward(lm) -> None:
    text = "the cat sat on the"
    async with Client(make_server(lm)) as c:
        res = await ok(c, "run_prompt", {"text": text, "top_k": 5, "all_positions": True})
    ids = lm.tokenizer.encode(text, add_special_tokens=False)
    assert res["token_ids"] == ids and res["tokens"] == ["the", "cat", "sat", "on", "the"]
    with torch.no_grad():
        probs = lm.model.target(torch.tensor([ids]), use_cache=False).logits[0].softmax(-1)
    assert [p["position"] for p in res["predictions"]] == list(range(len(ids)))
    for pred in res["predictions"]:
        ref_p, ref_i = probs[pred["position"]].topk(5)
        assert [t["token_id"] for t in pred["top"]] == ref_i.tolist()
        assert [t["prob"] for t in pred["top"]] == pytest.approx(ref_p.tolist(), abs=1e-6)
    nxt = res["next_token_probs"]
    assert nxt[-1] is None
    assert nxt[:-1] == pytest.approx(
        [probs[i, ids[i + 1]].item() for i in range(len(ids) - 1)], abs=1e-6
    )
    assert res["prompt_id"] >= 1


async def test_run_prompt_last_position_only_by_default(lm) -> None:
    async with Client(make_server(lm)) as c:
        res = await ok(c, "run_prompt", {"text": "the dog", "top_k": 3})
    assert [p["position"] for p in res["predictions"]] == [1]
    assert len(res["predictions"][0]["top"]) == 3
    assert sum(t["prob"] for t in res["predictions"][0]["top"]) <= 1.0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"text": "the", "features": [1.0]}, "exactly one of"),
        ({}, "exactly one of"),
        ({"features": [1.0, 2.0]}, "give 'text'"),
        ({"text": " ".join(["the"] * 65)}, "at most 64"),
        ({"text": "   "}, "0 tokens"),
        ({"text": "the", "top_k": 0}, "top_k"),
        ({"text": "the", "top_k": 101}, "top_k"),
        (
            {"text": "the", "topk": 3},
            "valid arguments: all_positions, edit_id, features, text, top_k",
        ),
    ],
)
async def test_run_prompt_errors_on_lm(lm, args, needle) -> None:
    async with Client(make_server(lm)) as c:
        assert needle in await err(c, "run_prompt", args)


async def test_toy_run_takes_a_feature_vector(toy) -> None:
    x = [1.0, 0.0, 0.5, 0.0, 0.25]
    async with Client(make_server(toy)) as c:
        res = await ok(c, "run_prompt", {"features": x, "top_k": 2})
        info = await ok(c, "get_model_info")
        assert "feature vector of length 5" in await err(c, "run_prompt", {"text": "hello"})
        assert "exactly 5" in await err(c, "run_prompt", {"features": [1.0, 2.0]})
    with torch.no_grad():
        ref = toy.model.target(torch.tensor([x]))[0].tolist()
    assert res["outputs"] == pytest.approx(ref, abs=1e-6)
    best = sorted(range(5), key=lambda i: -ref[i])[:2]
    assert [o["index"] for o in res["top_outputs"]] == best
    assert not info["is_language_model"] and info["input_dim"] == 5 and info["vocab_size"] is None


async def test_features_are_checked_alike_by_run_prompt_and_the_other_tools(lm, toy) -> None:
    """run_prompt and the tools that take text or features (get_ci here) share one check of a
    feature vector (inputs.checked_features): the same one-line error on either route."""
    async with Client(make_server(toy)) as c:
        short = [
            (await err(c, t, {"features": [1.0, 2.0]})).split(f"tool {t}: ")[1]
            for t in ("run_prompt", "get_ci")
        ]
        assert short[0] == short[1] and short[0].startswith("features has length 2")
        assert "this model takes exactly 5 values" in short[0]
    async with Client(make_server(lm)) as c:
        on_lm = [
            (await err(c, t, {"features": [1.0] * 5})).split(f"tool {t}: ")[1]
            for t in ("run_prompt", "get_ci")
        ]
        assert on_lm[0] == on_lm[1] == "this is a language model: give 'text', not 'features'"


async def test_non_finite_input_and_activation_are_named(toy) -> None:
    async with Client(make_server(toy)) as c:
        # JSON cannot carry NaN: the client sends null, which the input schema rejects by position.
        msg = await err(c, "run_prompt", {"features": [1.0, math.nan, 0, 0, 0]})
        assert "features.1" in msg and "valid number" in msg
    broken = toy_run()
    broken.model = copy.deepcopy(toy.model)
    with torch.no_grad():
        broken.model.target.linear1.weight[0, 0] = math.nan
    async with Client(make_server(broken)) as c:
        msg = await err(c, "run_prompt", {"features": [1.0, 1.0, 1.0, 1.0, 1.0]})
    assert "NaN first appeared in the output of layer linear1" in msg


@pytest.mark.parametrize(
    ("module", "value", "expected", "core_layer"),
    [  # weight[1, 3]: row 1 is the embedding of 'the' (token id 1), the prompt's first token
        (
            "model.layers.1.mlp.down_proj",
            math.nan,
            "NaN first appeared in the output of layer 1.mlp.down "
            "(module model.layers.1.mlp.down_proj)",
            "1.mlp.down",
        ),
        (
            "model.embed_tokens",
            math.inf,
            "Inf first appeared in the output of layer embed (module model.embed_tokens)",
            "model.embed_tokens",
        ),
    ],
)
async def test_run_prompt_names_where_a_nan_appeared_like_the_analyses(
    lm, module: str, value: float, expected: str, core_layer: str
) -> None:
    """run_prompt locates a NaN/Inf through the analyses' own search (analysis.health); get_ci,
    which raises the analyses' error, names the same place (a second route)."""
    broken = lm_run()
    broken.model = copy.deepcopy(lm.model)
    with torch.no_grad():
        broken.model.target.get_submodule(module).weight[1, 3] = value
    async with Client(make_server(broken)) as c:
        msg = await err(c, "run_prompt", {"text": "the cat sat on the"})
        ci = await err(c, "get_ci", {"text": "the cat sat on the"})
    assert msg.endswith(expected), msg
    assert f"first appeared in layer {core_layer!r} at position 0" in ci, ci


async def test_probe_prompts_filter_and_page(lm) -> None:
    async with Client(make_server(lm)) as c:
        all_ = await ok(c, "list_probe_prompts")
        page = await ok(c, "list_probe_prompts", {"mechanism": "copying", "offset": 1, "limit": 1})
        msg = await err(c, "list_probe_prompts", {"mechanism": "nope"})
    assert all_["total"] == 4 and all_["mechanisms"] == {"copying": 2, "ioi": 1, "recall": 1}
    assert page["total"] == 2 and [p["text"] for p in page["prompts"]] == ["the dog ran to the"]
    assert "valid: copying, ioi, recall" in msg


async def test_toy_run_has_no_probe_suite(toy) -> None:
    async with Client(make_server(toy)) as c:
        res = await ok(c, "list_probe_prompts")
    assert res["total"] == 0 and "no probe prompts" in res["summary"]
