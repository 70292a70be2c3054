"""Records tools write the workspace files they promise, and agent-chosen names cannot escape it."""

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from mcp import Client

from spd_mcp.contract.ids import validate_id
from spd_mcp.server import graph_render
from spd_mcp.server.store import Store
from spd_mcp.server.workspace import Workspace
from tests.server.helpers import err, make_server, ok

pytestmark = pytest.mark.anyio
SVG = "{http://www.w3.org/2000/svg}"


def graph_payload() -> dict:
    """A 3-token graph: embed -> 0.mlp.up -> 1.mlp.down -> output, with signed edges."""
    nodes = [
        {"key": "embed:0:0", "layer": "embed", "pos": 0, "c": 0},
        {"key": "embed:1:0", "layer": "embed", "pos": 1, "c": 0},
        {"key": "0.mlp.up:0:3", "layer": "0.mlp.up", "pos": 0, "c": 3, "ci": 0.9},
        {"key": "0.mlp.up:1:5", "layer": "0.mlp.up", "pos": 1, "c": 5, "ci": 0.05},
        {"key": "1.mlp.down:2:1", "layer": "1.mlp.down", "pos": 2, "c": 1, "ci": 0.7},
        {"key": "output:2:7", "layer": "output", "pos": 2, "c": 7, "label": "mat"},
    ]
    edges = [
        {"src": "embed:0:0", "tgt": "0.mlp.up:0:3", "value": 2.0},
        {"src": "embed:1:0", "tgt": "0.mlp.up:1:5", "value": -0.5},
        {"src": "0.mlp.up:0:3", "tgt": "1.mlp.down:2:1", "value": -1.0},
        {"src": "0.mlp.up:1:5", "tgt": "1.mlp.down:2:1", "value": 0.25},
        {"src": "1.mlp.down:2:1", "tgt": "output:2:7", "value": 0.5},
    ]
    return {
        "tokens": ["the", "cat", "<&>"],
        "layers": ["embed", "0.mlp.up", "1.mlp.down", "output"],
        "nodes": nodes,
        "edges": edges,
        "target": "output:2:7",
    }


async def store_graph(ws: Path) -> int:
    ws.mkdir(parents=True, exist_ok=True)
    store = await Store.open(ws / "store.sqlite")
    gid = await store.add_graph(
        graph_payload(), kind="attributions", params={"text": "the cat <&>"}
    )
    await store.close()
    return gid


async def test_research_log_hypotheses_summary(lm, tmp_path: Path) -> None:
    async with Client(make_server(lm, tmp_path)) as c:
        await ok(c, "update_research_log", {"heading": "first", "markdown": "Found **x**."})
        h1 = await ok(
            c,
            "record_hypothesis",
            {"hypothesis_id": "h1", "statement": "A copies B", "evidence": ["run_prompt: p=0.3"]},
        )
        h1b = await ok(
            c,
            "record_hypothesis",
            {"hypothesis_id": "h1", "statement": "A copies B", "status": "supported"},
        )
        await ok(c, "record_hypothesis", {"hypothesis_id": "h-2", "statement": "C"})
        s = await ok(
            c, "set_investigation_summary", {"title": "T", "summary": "S", "status": "completed"}
        )
    log = (tmp_path / "research_log.md").read_text()
    assert "first\n\nFound **x**." in log and "Hypothesis h1 (proposed -> supported)" in log
    assert h1["version"] == 1 and h1b["version"] == 2 and h1b["previous_status"] == "proposed"
    lines = [json.loads(x) for x in (tmp_path / "hypotheses.jsonl").read_text().splitlines()]
    assert [(h["id"], h["version"], h["status"]) for h in lines] == [
        ("h1", 1, "proposed"),
        ("h1", 2, "supported"),
        ("h-2", 1, "proposed"),
    ]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (
        summary["title"] == "T"
        and summary["status"] == "completed"
        and summary["updated_at"] == s["updated_at"]
    )


async def test_explanation_checks_component_keys(lm, tmp_path: Path) -> None:
    base = {
        "subject_prompt": "the cat sat on the",
        "behaviour": "predicts mat",
        "explanation": "x",
        "confidence": "low",
        "evidence": [{"kind": "ablation", "description": "drop", "reference": "j1"}],
    }
    async with Client(make_server(lm, tmp_path)) as c:
        res = await ok(
            c,
            "save_explanation",
            {**base, "components": [{"component": " 0.mlp.up:7 ", "role": "r"}]},
        )
        bad_layer = await err(
            c,
            "save_explanation",
            {**base, "components": [{"component": "9.mlp.up:1", "role": "r"}]},
        )
        bad_c = await err(
            c,
            "save_explanation",
            {**base, "components": [{"component": "0.mlp.up:8", "role": "r"}]},
        )
        bad_form = await err(
            c, "save_explanation", {**base, "components": [{"component": "mlp", "role": "r"}]}
        )
        bad_conf = await err(
            c,
            "save_explanation",
            {
                **base,
                "confidence": "sure",
                "components": [{"component": "0.mlp.up:1", "role": "r"}],
            },
        )
    assert res["components"] == ["0.mlp.up:7"] and res["explanation_index"] == 0
    assert (
        "valid layers: 0.attn.q" in bad_layer
        and "valid: 0..7" in bad_c
        and "expected '<layer>:<c>'" in bad_form
    )
    assert "'high', 'medium' or 'low'" in bad_conf
    rows = (tmp_path / "explanations.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["components"][0]["component"] == "0.mlp.up:7"


async def test_records_need_a_workspace(lm) -> None:
    async with Client(make_server(lm)) as c:
        assert "--workspace" in await err(c, "update_research_log", {"markdown": "x"})


async def test_save_graph_artifact_renders_json_and_svg(lm, tmp_path: Path) -> None:
    gid = await store_graph(tmp_path)
    async with Client(make_server(lm, tmp_path)) as c:
        res = await ok(
            c,
            "save_graph_artifact",
            {"graph_id": gid, "min_ci": 0.1, "max_edges": 2, "caption": "cat <circuit>"},
        )
        missing = await err(c, "save_graph_artifact", {"graph_id": gid + 1})
    assert res["artifact_id"] == f"graph_{gid}" and f"artifacts/graph_{gid}.svg" in res["markdown"]
    data = json.loads((tmp_path / res["json_path"]).read_text())
    # 0.mlp.up:1:5 (ci 0.05) is dropped with its edges; of the rest the two largest |value| stay.
    assert {n["key"] for n in data["nodes"]} == {
        "embed:0:0",
        "embed:1:0",
        "0.mlp.up:0:3",
        "1.mlp.down:2:1",
        "output:2:7",
    }
    assert [(e["src"], e["value"]) for e in data["edges"]] == [
        ("embed:0:0", 2.0),
        ("0.mlp.up:0:3", -1.0),
    ]
    assert data["n_edges_total"] == 5 and res["n_edges"] == 2
    svg = ET.parse(tmp_path / res["svg_path"]).getroot()
    edges = [p for p in svg.iter(f"{SVG}path") if p.find(f"{SVG}title") is not None]
    assert [p.get("stroke") for p in edges] == [
        "#dc2626",
        "#2563eb",
    ]  # sign -> colour, thinnest drawn first
    widths = [float(p.get("stroke-width")) for p in edges]
    assert widths == [pytest.approx(1.0 + 5.0 * 0.5), pytest.approx(6.0)]  # width by |value|
    # Drawn: both components, the input token a kept edge touches, the target; embed:1:0 is left
    # out.
    labels = {
        g.get("data-key"): "".join(g.find(f"{SVG}text").itertext()) for g in svg.iter(f"{SVG}g")
    }
    assert labels.keys() == {"embed:0:0", "0.mlp.up:0:3", "1.mlp.down:2:1", "output:2:7"}
    # Each component is labelled with the token get_component_info says its write vector promotes
    # most.
    async with Client(make_server(lm, tmp_path)) as c:
        down = await ok(c, "get_component_info", {"component": "1.mlp.down:1", "top_k": 1})
    top = down["promotes"][0]["token"]
    assert data["promotes"] == {"0.mlp.up:3": None, "1.mlp.down:1": top}
    assert labels["1.mlp.down:2:1"] == f"1.mlp.down:1 ▸ {graph_render.node_label_token(top)}"
    assert labels["0.mlp.up:0:3"] == "0.mlp.up:3 ▸ —" and labels["output:2:7"] == "output mat"
    assert "unknown graph_id" in missing and f"stored graph ids: {gid}" in missing


@pytest.mark.parametrize(
    "bad", ["../evil", "/etc/passwd", "a/b", "..", "a\x00b", "", "x" * 65, "-lead", "a.b"]
)
async def test_agent_ids_cannot_escape(lm, tmp_path: Path, bad: str) -> None:
    gid = await store_graph(tmp_path)
    async with Client(make_server(lm, tmp_path)) as c:
        msg1 = await err(c, "save_graph_artifact", {"graph_id": gid, "artifact_id": bad})
        msg2 = await err(c, "record_hypothesis", {"hypothesis_id": bad, "statement": "s"})
    for msg in (msg1, msg2):
        assert "letters, digits, '_' or '-'" in msg
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "events.jsonl",
        "store.sqlite",
    ]


async def test_symlinked_artifact_is_refused(lm, tmp_path: Path) -> None:
    ws, outside = tmp_path / "ws", tmp_path / "outside.txt"
    outside.write_text("keep")
    gid = await store_graph(ws)
    (ws / "artifacts").mkdir()
    os.symlink(outside, ws / "artifacts" / "evil.svg")
    async with Client(make_server(lm, ws)) as c:
        assert "symbolic link" in await err(
            c, "save_graph_artifact", {"graph_id": gid, "artifact_id": "evil"}
        )
    assert outside.read_text() == "keep"
    assert sorted(p.name for p in (ws / "artifacts").iterdir()) == [
        "evil.svg"
    ]  # no .json left behind


def test_workspace_refuses_symlinked_fixed_files(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    target = tmp_path / "target.md"
    target.write_text("keep")
    os.symlink(target, ws.path("research_log.md"))
    with pytest.raises(ValueError, match="symbolic link"):
        ws.append_log("h", "text")
    assert target.read_text() == "keep"
    with pytest.raises(ValueError, match="valid: 1-64 characters"):
        validate_id("a/../b")
