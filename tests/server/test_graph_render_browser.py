"""The circuit drawing as Chromium lays it out: every node's label measured with getBBox(), none
empty, no two overlapping, and a PNG export no wider than 1600 px in which all of them show."""

import itertools
import json
import os
import re
from pathlib import Path

from spd_mcp.server.graph_render import GraphSelection, layout, render_svg
from tests.server.test_graph_render import crowded_graph
from tests.support.chromium import Chromium, png_size

# Test-only page: measures every label after layout, writes the boxes into the DOM for --dump-dom.
MEASURE = """<!DOCTYPE html><html><body style="margin:0">%s<pre id="boxes"></pre><script>
const out = [];
for (const g of document.querySelectorAll('g.node')) {
  const t = g.querySelector('text.node-label'); const b = t.getBBox();
  out.push({key: g.dataset.key, text: t.textContent, x: b.x, y: b.y, w: b.width, h: b.height});
}
document.getElementById('boxes').textContent = JSON.stringify(out);
</script></body></html>"""


def measured_labels(chromium: Chromium, svg: str, folder: Path) -> list[dict]:
    """Every node label of ``svg`` as Chromium lays it out: key, text and bounding box."""
    page = folder / "measure.html"
    page.write_text(MEASURE % svg)
    dom = chromium.dump_dom(page.as_uri())
    m = re.search(r'<pre id="boxes">(.*?)</pre>', dom, re.S)
    assert m, "the measuring script wrote nothing"
    return json.loads(m.group(1))


def overlapping(boxes: list[dict]) -> list[tuple[str, str]]:
    return [
        (a["key"], b["key"])
        for a, b in itertools.combinations(boxes, 2)
        if a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    ]


def test_labels_measured_in_chromium_are_present_and_do_not_overlap(
    chromium: Chromium, tmp_path: Path
) -> None:
    graph, promotes = crowded_graph()
    sel = GraphSelection(graph.nodes, graph.edges, len(graph.nodes), len(graph.edges))
    svg = render_svg(graph, sel, "crowded circuit", promotes)
    lay = layout(graph, sel, promotes)
    boxes = measured_labels(chromium, svg, tmp_path)
    assert {b["key"] for b in boxes} == set(lay.placed) and len(boxes) == len(lay.placed)
    assert all(b["text"].strip() and b["w"] > 0 for b in boxes)
    assert not overlapping(boxes)
    # The estimate the layout reserves for each label holds what Chromium drew.
    for b in boxes:
        est = lay.placed[b["key"]].box
        assert b["x"] >= est.x - 0.5 and b["x"] + b["w"] <= est.x + est.w + 0.5, (b, est)
    svg_file = tmp_path / "crowded.svg"
    svg_file.write_text(svg)
    keep = Path(os.environ.get("SPD_MCP_SCREENSHOT_DIR") or tmp_path)
    png = keep / "circuit_crowded.png"
    width, height = chromium.screenshot(svg_file.as_uri(), png, lay.width, lay.height)
    assert (width, height) == (lay.width, lay.height) and width <= 1600


def test_committed_pictures_are_at_most_1600_px_wide() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs"
    sizes = {p.name: png_size(p) for p in docs.glob("*.png")}
    assert {"circuit_demo.png", "report_investigation.png", "report_swarm.png"} <= sizes.keys()
    assert all(w <= 1600 for w, _ in sizes.values()), sizes
