"""get_attributions and optimize_circuit through a real client: numbers against the core, graphs in
the store."""

import json
from pathlib import Path

import pytest
import torch
from mcp import Client

from spd_core.analysis.attributions import attribution_graph_reference
from spd_core.analysis.influence import influence_on
from spd_core.keys import NodeKey
from tests.server.helpers import err, make_server, ok

pytestmark = pytest.mark.anyio
TEXT = "the cat sat on the"


def ids(lm, text: str = TEXT) -> torch.Tensor:
    return torch.tensor([lm.tokenizer.encode(text, add_special_tokens=False)])


async def test_attribution_edges_equal_the_per_node_reference(lm, tmp_path: Path) -> None:
    mat = lm.tokenizer.convert_tokens_to_ids("mat")
    async with Client(make_server(lm, tmp_path)) as c:
        res = await ok(
            c,
            "get_attributions",
            {"text": TEXT, "target": "mat", "threshold": 0.1, "top_k": 20, "multi_hop": True},
        )
        art = await ok(c, "save_graph_artifact", {"graph_id": res["graph_id"], "max_edges": 5000})
    ref = attribution_graph_reference(lm.model, ids(lm), threshold=0.1, outputs=[(-1, mat)])
    index = ref.index()
    assert res["target"] == f"output:4:{mat}" and res["n_nodes"] == len(ref.nodes)
    assert res["n_edges"] == int((ref.edges != 0).sum())
    for e in res["edges"]:
        src, tgt = (
            NodeKey(*[int(p) if i else p for i, p in enumerate(k.rsplit(":", 2))])
            for k in (e["src"], e["tgt"])
        )
        assert e["value"] == pytest.approx(float(ref.edges[index[tgt], index[src]]), abs=1e-4)
    values = [abs(e["value"]) for e in res["edges"]]
    assert values == sorted(values, reverse=True) and len(values) == min(20, res["n_edges"])
    assert res["nodes"][0]["node"] == f"output:4:{mat}" and res["nodes"][0]["label"] == "mat"
    assert res["nodes"][0]["ci"] == pytest.approx(float(ref.probs[4, mat]), abs=1e-6)
    infl = influence_on(ref, NodeKey("output", 4, mat))
    assert [(r["node"], pytest.approx(r["influence"], abs=1e-4)) for r in res["influence"]] == [
        (str(n), v) for n, v in infl.top(20)
    ]
    saved = json.loads((tmp_path / art["json_path"]).read_text())
    assert len(saved["nodes"]) == len(ref.nodes) and saved["n_edges_total"] == res["n_edges"]
    assert saved["target"] == res["target"] and saved["tokens"] == [
        "the",
        "cat",
        "sat",
        "on",
        "the",
    ]


async def test_attributions_default_targets_and_component_target(lm) -> None:
    async with Client(make_server(lm)) as c:
        default = await ok(c, "get_attributions", {"text": TEXT, "top_k": 5, "node_limit": 1000})
        comp = next(n["node"] for n in default["nodes"] if n["node"].startswith("1.mlp."))
        by_node = await ok(
            c,
            "get_attributions",
            {"text": TEXT, "target": comp, "multi_hop": True, "signed": False},
        )
    outputs = [n for n in default["nodes"] if n["node"].startswith("output:")]
    assert len(outputs) == 3 and default["target"] == max(outputs, key=lambda n: n["ci"])["node"]
    assert by_node["target"] == comp
    abs_vals = [e["abs_value"] for e in by_node["edges"]]
    assert abs_vals == sorted(abs_vals, reverse=True)
    assert all(e["abs_value"] >= abs(e["value"]) - 1e-6 for e in by_node["edges"])


@pytest.mark.parametrize(
    ("tool", "args", "needle"),
    [
        ("get_attributions", {"text": TEXT, "target": "mat cat"}, "must be exactly one"),
        ("get_attributions", {"text": TEXT, "target": "mat", "position": 7}, "valid: -5..4"),
        ("get_attributions", {"text": TEXT, "target": "9.mlp.up:0:1"}, "valid layers"),
        ("get_attributions", {"text": TEXT, "target": "0.mlp.up:0:8"}, "valid: 0..7"),
        ("get_attributions", {"text": TEXT, "target": "embed:0:0"}, "valid targets"),
        ("get_attributions", {"text": TEXT, "edit_id": "nope"}, "unknown edit_id"),
        ("optimize_circuit", {"text": TEXT, "target_token": "mat cat"}, "must be exactly one"),
        ("optimize_circuit", {"text": TEXT, "target_token": "mat", "position": -6}, "valid: -5..4"),
        ("optimize_circuit", {"text": TEXT, "target_token": "mat", "loss": "mse"}, "'ce' or 'kl'"),
        ("save_graph_artifact", {"graph_id": 99}, "unknown graph_id 99"),
    ],
)
async def test_circuit_tool_errors(lm, tmp_path: Path, tool, args, needle) -> None:
    async with Client(make_server(lm, tmp_path)) as c:
        assert needle in await err(c, tool, args)


async def test_optimize_circuit_regimes_graph_and_run_prompt_agree(lm, tmp_path: Path) -> None:
    mat = lm.tokenizer.convert_tokens_to_ids("mat")
    async with Client(make_server(lm, tmp_path)) as c:
        view = await ok(
            c,
            "optimize_circuit",
            {"text": TEXT, "target_token": "mat", "steps": 20, "sparsity": 0.5},
        )
        prompt = await ok(c, "run_prompt", {"text": TEXT, "top_k": 100})
        art = await ok(
            c, "save_graph_artifact", {"graph_id": view["result"]["graph_id"], "max_edges": 5000}
        )
    assert view["status"] == "done"
    res = view["result"]
    p_ref = next(t["prob"] for t in prompt["predictions"][-1]["top"] if t["token_id"] == mat)
    assert res["probs"]["unmasked"] == pytest.approx(p_ref, abs=1e-5)
    assert res["probs"]["target"] == pytest.approx(p_ref, abs=1e-5)
    assert set(res["probs"]) == {"target", "ci", "stochastic", "adversarial", "unmasked"}
    assert res["target_token_id"] == mat and res["position"] == 4
    assert sum(res["l0"].values()) == res["total"] == len(res["nodes"])
    cis = [n["ci"] for n in res["nodes"]]
    assert cis == sorted(cis, reverse=True) and all(0 < v <= 1 for v in cis)
    assert res["loss"]["steps"] == 20 and len(res["loss"]["trace"]) == 20
    assert res["loss"]["min"] <= res["loss"]["first"]
    saved = json.loads((tmp_path / art["json_path"]).read_text())
    circuit_nodes = {n["node"] for n in res["nodes"]}
    graph_components = {n["key"] for n in saved["nodes"] if n["layer"] not in ("embed", "output")}
    assert graph_components == circuit_nodes
    assert saved["target"] == f"output:4:{mat}"


async def test_optimize_circuit_becomes_a_job_and_can_be_cancelled(lm) -> None:
    async with Client(make_server(lm)) as c:
        started = await ok(
            c,
            "optimize_circuit",
            {"text": TEXT, "target_token": "mat", "steps": 5000, "wait_s": 0.3},
        )
        assert started["status"] == "running" and started["result"] is None
        cancelled = await ok(c, "cancel_job", {"job_id": started["job_id"]})
        final = await ok(c, "get_job", {"job_id": started["job_id"], "wait_s": 10})
    assert final["status"] == "cancelled" and 0 < final["step"] < 5000, (cancelled, final)


async def test_toy_attributions_take_features(toy) -> None:
    x = [1.0, 0.0, 0.5, 0.0, 0.25]
    async with Client(make_server(toy)) as c:
        res = await ok(
            c,
            "get_attributions",
            {"features": x, "threshold": 0.0, "target": "output:0:1", "multi_hop": True},
        )
        assert "needs a language model" in await err(
            c, "optimize_circuit", {"text": "a", "target_token": "b"}
        )
        assert "output node" in await err(c, "get_attributions", {"features": x, "target": "b"})
    ref = attribution_graph_reference(toy.model, torch.tensor([x]), threshold=0.0, outputs=[(0, 1)])
    assert res["target"] == "output:0:1" and res["n_nodes"] == len(ref.nodes)
    assert res["n_edges"] == int((ref.edges != 0).sum())
