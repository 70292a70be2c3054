"""A stored attribution graph as an artifact: the kept nodes and edges as JSON, and an SVG drawing.

Layers are rows (input at the bottom), token positions are columns; an edge is blue when positive
and red when negative, its width proportional to |value|.
"""

from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape as _escape

from spd_mcp.server.schemas import GraphEdge, GraphNode, StoredGraph

POSITIVE = "#2563eb"
NEGATIVE = "#dc2626"
COL_W, ROW_H, LEFT, TOP, BOTTOM = 90, 56, 120, 44, 70


@dataclass(frozen=True)
class GraphSelection:
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    n_nodes_total: int
    n_edges_total: int


def select(graph: StoredGraph, min_ci: float, max_edges: int) -> GraphSelection:
    """Nodes with CI ≥ min_ci (pseudo-nodes without CI always), then the top max_edges edges by |value|."""
    nodes = {n.key: n for n in graph.nodes if n.ci is None or n.ci >= min_ci}
    edges = [e for e in graph.edges if e.src in nodes and e.tgt in nodes]
    edges.sort(key=lambda e: abs(e.value), reverse=True)
    edges = edges[:max_edges]
    return GraphSelection(list(nodes.values()), edges, len(graph.nodes), len(graph.edges))


def artifact_payload(graph: StoredGraph, sel: GraphSelection, graph_id: int, artifact_id: str, caption: str) -> dict[str, Any]:
    return {
        "type": "graph",
        "id": artifact_id,
        "graph_id": graph_id,
        "caption": caption,
        "tokens": graph.tokens,
        "layers": graph.layers,
        "target": graph.target,
        "nodes": [n.model_dump() for n in sel.nodes],
        "edges": [e.model_dump() for e in sel.edges],
        "n_nodes_total": sel.n_nodes_total,
        "n_edges_total": sel.n_edges_total,
        "meta": graph.meta,
    }


def render_svg(graph: StoredGraph, sel: GraphSelection, caption: str) -> str:
    rows = list(graph.layers) + sorted({n.layer for n in sel.nodes} - set(graph.layers))
    n_pos = max([len(graph.tokens), *(n.pos + 1 for n in sel.nodes)])
    width = LEFT + n_pos * COL_W + 20
    height = TOP + len(rows) * ROW_H + BOTTOM
    xy = _layout(sel.nodes, rows)
    max_abs = max((abs(e.value) for e in sel.edges), default=0.0) or 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="10" y="20" font-size="13" font-weight="bold">{escape(caption or "attribution graph")}</text>',
    ]
    for r, layer in enumerate(rows):
        y = _row_y(r, len(rows))
        out.append(f'<line x1="{LEFT - 6}" y1="{y}" x2="{width - 10}" y2="{y}" stroke="#eeeeee"/>')
        out.append(f'<text x="{LEFT - 10}" y="{y + 4}" text-anchor="end">{escape(layer)}</text>')
    for e in sel.edges:
        (x1, y1), (x2, y2) = xy[e.src], xy[e.tgt]
        colour = POSITIVE if e.value >= 0 else NEGATIVE
        w = 0.5 + 3.5 * abs(e.value) / max_abs
        out.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{colour}" '
            f'stroke-width="{w:.2f}" stroke-opacity="0.7"><title>{escape(f"{e.src} -> {e.tgt}: {e.value:.4g}")}</title></line>'
        )
    for n in sel.nodes:
        x, y = xy[n.key]
        label = n.key + ("" if n.ci is None else f" ci={n.ci:.3g}") + (f" {n.label}" if n.label else "")
        shade = 0.35 + 0.65 * (1.0 if n.ci is None else max(0.0, min(1.0, n.ci)))
        out.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" fill="#111827" fill-opacity="{shade:.2f}">'
            f"<title>{escape(label)}</title></circle>"
        )
    base = TOP + len(rows) * ROW_H + 16
    for pos, tok in enumerate(graph.tokens):
        x = LEFT + pos * COL_W + COL_W / 2
        out.append(f'<text x="{x:.1f}" y="{base}" text-anchor="middle">{escape(repr(tok)[1:-1][:14])}</text>')
        out.append(f'<text x="{x:.1f}" y="{base + 14}" text-anchor="middle" fill="#6b7280">{pos}</text>')
    out.append(
        f'<text x="10" y="{height - 8}" fill="#6b7280">{len(sel.nodes)} of {sel.n_nodes_total} nodes, '
        f"{len(sel.edges)} of {sel.n_edges_total} edges; blue positive, red negative, width ∝ |value|</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def escape(text: str) -> str:
    """XML text: control characters dropped, markup escaped."""
    return _escape("".join(ch for ch in text if ch >= " " or ch in "\t\n"))


def _row_y(r: int, n_rows: int) -> float:
    return TOP + (n_rows - 1 - r) * ROW_H + ROW_H / 2


def _layout(nodes: list[GraphNode], rows: list[str]) -> dict[str, tuple[float, float]]:
    cells: dict[tuple[str, int], list[GraphNode]] = {}
    for n in nodes:
        cells.setdefault((n.layer, n.pos), []).append(n)
    out: dict[str, tuple[float, float]] = {}
    for (layer, pos), members in cells.items():
        members.sort(key=lambda n: -(n.ci if n.ci is not None else 2.0))
        for i, n in enumerate(members):
            x = LEFT + pos * COL_W + (i + 1) * COL_W / (len(members) + 1)
            out[n.key] = (x, _row_y(rows.index(layer), len(rows)))
    return out


def markdown_snippet(artifact_id: str, caption: str) -> str:
    alt = caption or f"graph {artifact_id}"
    return f"![{alt}](artifacts/{artifact_id}.svg)\n\n[graph data](artifacts/{artifact_id}.json)\n"


