"""The circuit drawing: only positions holding nodes, every drawn node labelled, no two labels
overlap,
edges coloured by sign and sized by |value|, and a width that exports to PNG at <= 1600 px."""

import itertools
import xml.etree.ElementTree as ET

from spd_mcp.server.graph_render import GraphSelection, Layout, layout, render_svg
from spd_mcp.server.schemas import GraphEdge, GraphNode, StoredGraph

SVG = "{http://www.w3.org/2000/svg}"


def crowded_graph() -> tuple[StoredGraph, dict[str, str | None]]:
    """40 tokens; 14 1.mlp.down components at the last position (the pile-up the old drawing made),
    a few components at positions 3 and 17, input tokens everywhere, edges between them."""
    tokens = [f"tok{i}" for i in range(39)] + [" so"]
    nodes = [
        GraphNode(key=f"embed:{p}:0", layer="embed", pos=p, c=0, label=tokens[p]) for p in range(40)
    ]
    comps = [("0.mlp.up", 3, c) for c in (4, 9)] + [("0.attn.o", 17, 2)]
    comps += [("1.mlp.down", 39, c) for c in range(14)]
    nodes += [
        GraphNode(key=f"{lay}:{p}:{c}", layer=lay, pos=p, c=c, ci=0.2 + 0.05 * c)
        for lay, p, c in comps
    ]
    nodes.append(GraphNode(key="output:39:6", layer="output", pos=39, c=6, label="he"))
    edges = [
        GraphEdge(src="embed:3:0", tgt="0.mlp.up:3:4", value=1.5),
        GraphEdge(src="0.mlp.up:3:9", tgt="1.mlp.down:39:0", value=-0.7),
        GraphEdge(src="0.attn.o:17:2", tgt="1.mlp.down:39:5", value=0.4),
    ]
    edges += [
        GraphEdge(src=f"1.mlp.down:39:{c}", tgt="output:39:6", value=(-1) ** c * 0.1 * (c + 1))
        for c in range(14)
    ]
    graph = StoredGraph(
        tokens=tokens,
        layers=["embed", "0.attn.o", "0.mlp.up", "1.mlp.down", "output"],
        nodes=nodes,
        edges=edges,
        target="output:39:6",
        meta={"text": " ".join(tokens)},
    )
    promotes: dict[str, str | None] = {f"1.mlp.down:{c}": f" w{c}" for c in range(14)}
    promotes |= {"0.mlp.up:4": None, "0.mlp.up:9": None, "0.attn.o:2": "the"}
    return graph, promotes


def draw() -> tuple[StoredGraph, GraphSelection, Layout, ET.Element]:
    graph, promotes = crowded_graph()
    sel = GraphSelection(graph.nodes, graph.edges, len(graph.nodes), len(graph.edges))
    return (
        graph,
        sel,
        layout(graph, sel, promotes),
        ET.fromstring(render_svg(graph, sel, "crowded", promotes)),
    )


def test_only_positions_holding_nodes_are_columns_and_width_fits_1600() -> None:
    _, _, lay, svg = draw()
    assert [p for p, _, _ in lay.columns] == [
        3,
        17,
        39,
    ]  # embed:3 is touched by an edge, the other inputs not
    assert lay.n_hidden_pseudo == 39
    assert lay.width <= 1600 and int(svg.get("width")) == lay.width


def test_every_node_has_a_label_and_no_two_labels_overlap() -> None:
    graph, sel, lay, svg = draw()
    drawn = {
        g.get("data-key"): "".join(g.find(f"{SVG}text").itertext()) for g in svg.iter(f"{SVG}g")
    }
    expected = {n.key for n in sel.nodes if n.ci is not None} | {"embed:3:0", "output:39:6"}
    assert drawn.keys() == expected == lay.placed.keys()
    assert all(text.strip() for text in drawn.values())
    assert drawn["1.mlp.down:39:13"] == "1.mlp.down:13 ▸ ' w13'"  # a leading space is made visible
    assert (
        drawn["0.mlp.up:3:4"] == "0.mlp.up:4 ▸ —" and drawn["0.attn.o:17:2"] == "0.attn.o:2 ▸ the"
    )
    boxes = {k: p.box for k, p in lay.placed.items()}
    clashes = [(a, b) for a, b in itertools.combinations(boxes, 2) if boxes[a].overlaps(boxes[b])]
    assert not clashes
    # each label box lies inside its column and row, right of its dot
    for p in lay.placed.values():
        left, right = next((lx, rx) for pos, lx, rx in lay.columns if pos == p.node.pos)
        top, bottom = next((t, b) for layer, t, b in lay.rows if layer == p.node.layer)
        assert (
            left <= p.x < p.box.x
            and p.box.x + p.box.w <= right
            and top <= p.box.y < p.box.y + p.box.h <= bottom
        )


def test_edges_coloured_by_sign_and_sized_by_value() -> None:
    _, sel, _, svg = draw()
    paths = [p for p in svg.iter(f"{SVG}path") if p.find(f"{SVG}title") is not None]
    assert len(paths) == len(sel.edges)
    max_abs = max(abs(e.value) for e in sel.edges)
    for p in paths:
        value = float(p.find(f"{SVG}title").text.rsplit(": ", 1)[1])
        assert p.get("stroke") == ("#2563eb" if value >= 0 else "#dc2626")
        assert float(p.get("stroke-width")) == round(1.0 + 5.0 * abs(value) / max_abs, 2)
    legend = " ".join("".join(t.itertext()) for t in svg.iter(f"{SVG}text"))
    assert (
        "Legend" in legend and "positive attribution" in legend and "negative attribution" in legend
    )
