"""A stored attribution graph as an artifact: the kept nodes and edges as JSON, and an SVG drawing.

The drawing keeps only what carries the circuit: every component node, and the pseudo-nodes (input
tokens, output logits) that a kept edge touches. Layers that hold a kept node are rows (input at the
bottom), token positions that hold one are columns (the others are left out). Nodes sharing a layer
and a position are stacked in their cell, one line each, so no two labels can overlap: each node is
a dot and a label `<layer>:<c> ▸ token`, the token its write vector promotes most through the
unembedding (`—` where the layer has no direct path to the logits). An edge is blue when positive
and red when negative, its width proportional to |value|; a legend below says so.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from xml.sax.saxutils import escape as _escape

from spd_mcp.server.schemas import GraphEdge, GraphNode, StoredGraph

POSITIVE = "#2563eb"
NEGATIVE = "#dc2626"
FONT_PX = 12
CHAR_W = 7.0  # an upper bound on the mean advance of a 12 px sans-serif character
TITLE_CHAR_W = 9.2  # the same for the 15 px bold title
LINE_H = 24  # height of one stacked node
LEFT, TOP, CELL_PAD, DOT_R = 110, 64, 10, 5
LABEL_DX = DOT_R + 5
MAX_LABEL_CHARS = 30
MIN_WIDTH = 820
GUTTER = 70  # room left of a column's dots for the bows of edges inside the column
LEGEND_COL = 300
NO_DIRECT = "—"


@dataclass(frozen=True)
class GraphSelection:
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    n_nodes_total: int
    n_edges_total: int


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    def overlaps(self, other: "Box") -> bool:
        return (
            self.x < other.x + other.w
            and other.x < self.x + self.w
            and self.y < other.y + other.h
            and other.y < self.y + self.h
        )


@dataclass(frozen=True)
class Placed:
    node: GraphNode
    x: float  # dot centre
    y: float
    label: str
    box: Box  # the label's bounding box (estimated with CHAR_W)


@dataclass(frozen=True)
class Layout:
    width: int
    height: int
    rows: list[tuple[str, float, float]]  # (layer, top y, bottom y)
    columns: list[tuple[int, float, float]]  # (position, left x, right x)
    placed: dict[str, Placed]
    n_hidden_pseudo: int


def select(graph: StoredGraph, min_ci: float, max_edges: int) -> GraphSelection:
    """Nodes with CI ≥ min_ci (pseudo-nodes without CI always), then the top max_edges edges by
    |value|."""
    nodes = {n.key: n for n in graph.nodes if n.ci is None or n.ci >= min_ci}
    edges = [e for e in graph.edges if e.src in nodes and e.tgt in nodes]
    edges.sort(key=lambda e: abs(e.value), reverse=True)
    edges = edges[:max_edges]
    return GraphSelection(list(nodes.values()), edges, len(graph.nodes), len(graph.edges))


def component_key(node: GraphNode) -> str:
    return f"{node.layer}:{node.c}"


def artifact_payload(
    graph: StoredGraph,
    sel: GraphSelection,
    graph_id: int,
    artifact_id: str,
    caption: str,
    promotes: Mapping[str, str | None],
) -> dict[str, Any]:
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
        "promotes": dict(promotes),
        "n_nodes_total": sel.n_nodes_total,
        "n_edges_total": sel.n_edges_total,
        "meta": graph.meta,
    }


def node_label(node: GraphNode, promotes: Mapping[str, str | None]) -> str:
    """`<layer>:<c> ▸ token` for a component, `<layer> token` for an input or output pseudo-node."""
    if node.ci is None:
        shown = node.label if node.label is not None else str(node.c)
        text = f"{node.layer} {node_label_token(shown)}"
    else:
        top = promotes.get(component_key(node))
        text = f"{component_key(node)} ▸ {NO_DIRECT if top is None else node_label_token(top)}"
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "…"


def label_width(text: str) -> float:
    return len(text) * CHAR_W


def _drawn_nodes(graph: StoredGraph, sel: GraphSelection) -> list[GraphNode]:
    touched = {e.src for e in sel.edges} | {e.tgt for e in sel.edges}
    return [n for n in sel.nodes if n.ci is not None or n.key in touched or n.key == graph.target]


def layout(graph: StoredGraph, sel: GraphSelection, promotes: Mapping[str, str | None]) -> Layout:
    """Where every drawn node, its label, each row and each column go."""
    nodes = _drawn_nodes(graph, sel)
    layer_order = list(graph.layers) + sorted({n.layer for n in nodes} - set(graph.layers))
    rows = [layer for layer in layer_order if any(n.layer == layer for n in nodes)]
    positions = sorted({n.pos for n in nodes})
    cells: dict[tuple[str, int], list[GraphNode]] = {}
    for n in nodes:
        cells.setdefault((n.layer, n.pos), []).append(n)
    for members in cells.values():
        members.sort(key=lambda n: (-(n.ci if n.ci is not None else 2.0), n.c))
    labels = {n.key: node_label(n, promotes) for n in nodes}
    pos_of = {n.key: n.pos for n in nodes}
    bowed = {
        pos_of[e.src] for e in sel.edges if e.src in pos_of and pos_of.get(e.tgt) == pos_of[e.src]
    }
    gutter = {p: GUTTER if p in bowed else 0 for p in positions}
    col_w = {
        p: gutter[p]
        + 2 * CELL_PAD
        + LABEL_DX
        + max(label_width(labels[n.key]) for n in nodes if n.pos == p)
        for p in positions
    }
    col_w = {p: max(w, _token_header_width(graph, p)) for p, w in col_w.items()}
    row_h = {
        layer: 2 * CELL_PAD + LINE_H * max(len(m) for (lay, _), m in cells.items() if lay == layer)
        for layer in rows
    }
    columns, x = [], float(LEFT)
    for p in positions:
        columns.append((p, x, x + col_w[p]))
        x += col_w[p]
    row_spans, y = {}, float(TOP)
    for layer in reversed(rows):  # output at the top
        row_spans[layer] = (y, y + row_h[layer])
        y += row_h[layer]
    placed: dict[str, Placed] = {}
    for (layer, pos), members in cells.items():
        left = next(lx for p, lx, _ in columns if p == pos)
        top = row_spans[layer][0] + CELL_PAD
        for i, n in enumerate(members):
            cx, cy = left + gutter[pos] + CELL_PAD + DOT_R, top + i * LINE_H + LINE_H / 2
            text = labels[n.key]
            box = Box(cx + LABEL_DX - 2, cy - FONT_PX / 2 - 3, label_width(text) + 4, FONT_PX + 6)
            placed[n.key] = Placed(n, cx, cy, text, box)
    width = int(max(x + 20, MIN_WIDTH))
    partial = Layout(
        width,
        0,
        [(lay, *row_spans[lay]) for lay in reversed(rows)],
        columns,
        placed,
        len(sel.nodes) - len(nodes),
    )
    height = int(y + 56 + _legend_height(len(_legend_lines(width, partial, sel))))
    return replace(partial, height=height)


def render_svg(
    graph: StoredGraph, sel: GraphSelection, caption: str, promotes: Mapping[str, str | None]
) -> str:
    lay = layout(graph, sel, promotes)
    w, h = lay.width, lay.height
    grid_bottom = lay.rows[-1][2] if lay.rows else TOP
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
        f'font-family="DejaVu Sans, Arial, sans-serif" font-size="{FONT_PX}">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        '<text x="10" y="22" font-size="15" font-weight="bold">'
        f"{escape(_fit(caption or 'attribution graph', w - 20, TITLE_CHAR_W))}</text>",
        f'<text x="10" y="42" fill="#4b5563">{escape(_subtitle(graph, w))}</text>',
    ]
    for i, (layer, top, bottom) in enumerate(lay.rows):
        if i % 2 == 0:
            out.append(
                f'<rect x="{LEFT}" y="{top:.1f}" width="{w - LEFT - 10}" '
                f'height="{bottom - top:.1f}" '
                f'fill="#f8fafc"/>'
            )
        out.append(
            f'<text x="{LEFT - 8}" y="{(top + bottom) / 2 + 4:.1f}" text-anchor="end" '
            f'font-weight="bold">{escape(layer)}</text>'
        )
    for _, left, _ in lay.columns[1:]:
        out.append(
            f'<line x1="{left:.1f}" y1="{TOP}" x2="{left:.1f}" y2="{grid_bottom:.1f}" '
            f'stroke="#e5e7eb"/>'
        )
    max_abs = max((abs(e.value) for e in sel.edges), default=0.0) or 1.0
    for i, e in enumerate(sorted(sel.edges, key=lambda e: abs(e.value))):
        if e.src not in lay.placed or e.tgt not in lay.placed:
            continue
        a, b = lay.placed[e.src], lay.placed[e.tgt]
        colour = POSITIVE if e.value >= 0 else NEGATIVE
        sw = 1.0 + 5.0 * abs(e.value) / max_abs
        # inside one column: bow out to the left, further for longer edges, within the gutter
        bend = (
            0.0 if a.x != b.x else -min(GUTTER * 1.3, 24.0 + 0.2 * abs(a.y - b.y) + 4.0 * (i % 3))
        )
        out.append(
            f'<path d="M{a.x:.1f},{a.y:.1f} C{a.x + bend:.1f},{a.y:.1f} {b.x + bend:.1f},{b.y:.1f} '
            f'{b.x:.1f},{b.y:.1f}" fill="none" stroke="{colour}" stroke-width="{sw:.2f}" '
            f'stroke-opacity="0.75">'
            f"<title>{escape(f'{e.src} -> {e.tgt}: {e.value:.4g}')}</title></path>"
        )
    for p in lay.placed.values():
        n = p.node
        shade = 0.35 + 0.65 * (1.0 if n.ci is None else max(0.0, min(1.0, n.ci)))
        fill = "#6b7280" if n.ci is None else "#111827"
        title = (
            n.key
            + ("" if n.ci is None else f" ci={n.ci:.3g}")
            + (f" act={n.act:.3g}" if n.act is not None else "")
        )
        out.append(
            f'<g class="node" data-key="{escape(n.key)}"><title>{escape(title)}</title>'
            f'<circle cx="{p.x:.1f}" cy="{p.y:.1f}" r="{DOT_R}" fill="{fill}" '
            f'fill-opacity="{shade:.2f}"/>'
            f'<rect x="{p.box.x:.1f}" y="{p.box.y:.1f}" width="{p.box.w:.1f}" '
            f'height="{p.box.h:.1f}" '
            f'rx="3" fill="white" fill-opacity="0.85"/>'
            f'<text class="node-label" x="{p.x + LABEL_DX:.1f}" '
            f'y="{p.y + 4:.1f}">{escape(p.label)}</text></g>'
        )
    for pos, left, right in lay.columns:
        x = (left + right) / 2
        tok = node_label_token(graph.tokens[pos]) if pos < len(graph.tokens) else ""
        out.append(
            f'<text x="{x:.1f}" y="{grid_bottom + 18:.1f}" '
            f'text-anchor="middle">{escape(tok)}</text>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{grid_bottom + 33:.1f}" text-anchor="middle" fill="#6b7280">'
            f"pos {pos}</text>"
        )
    out += _legend(grid_bottom + 52, w, lay, sel, max_abs)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _legend_lines(width: int, lay: Layout, sel: GraphSelection) -> list[str]:
    note = (
        f"layer:c ▸ token: the token the component's write vector promotes most through the "
        f"unembedding "
        f"(direct path only); {NO_DIRECT}: the layer has no direct path to the logits (q, k, v, "
        f"up, gate)"
    )
    hidden = (
        f"; {lay.n_hidden_pseudo} input/output nodes without a kept edge not drawn"
        if lay.n_hidden_pseudo
        else ""
    )
    counts = (
        f"{len(lay.placed)} of {sel.n_nodes_total} nodes and {len(sel.edges)} of "
        f"{sel.n_edges_total} edges "
        f"drawn; only token positions holding a node are columns{hidden}"
    )
    return _wrap(note, width - 20) + _wrap(counts, width - 20)


def _legend_height(n_lines: int) -> int:
    return 18 * (3 + n_lines) + 16


def _legend(y0: float, width: int, lay: Layout, sel: GraphSelection, max_abs: float) -> list[str]:
    x, x2 = 10, 10 + LEGEND_COL
    rows = [
        (
            f'<line x1="{x}" y1="{y0}" x2="{x + 30}" y2="{y0}" stroke="{POSITIVE}" '
            f'stroke-width="3"/>'
            f'<line x1="{x2}" y1="{y0}" x2="{x2 + 30}" y2="{y0}" stroke="{NEGATIVE}" '
            f'stroke-width="3"/>',
            [(x + 36, "positive attribution"), (x2 + 36, "negative attribution")],
        ),
        (
            f'<line x1="{x}" y1="{y0 + 18}" x2="{x + 30}" y2="{y0 + 18}" stroke="#374151" '
            f'stroke-width="1"/>'
            f'<line x1="{x2}" y1="{y0 + 18}" x2="{x2 + 30}" y2="{y0 + 18}" stroke="#374151" '
            f'stroke-width="6"/>',
            [(x + 36, "|value| near 0"), (x2 + 36, f"|value| = {max_abs:.3g} (width ∝ |value|)")],
        ),
        (
            f'<circle cx="{x + 15}" cy="{y0 + 36}" r="{DOT_R}" fill="#111827"/>'
            f'<circle cx="{x2 + 15}" cy="{y0 + 36}" r="{DOT_R}" fill="#6b7280"/>',
            [(x + 36, "component (darker: higher CI)"), (x2 + 36, "input token / output logit")],
        ),
    ]
    rows += [("", [(x, line)]) for line in _legend_lines(width, lay, sel)]
    out = [f'<text x="{x}" y="{y0 - 20}" font-weight="bold">Legend</text>']
    for i, (shape, texts) in enumerate(rows):
        if shape:
            out.append(shape)
        for tx, text in texts:
            out.append(
                f'<text x="{tx}" y="{y0 + 18 * i + 4:.0f}" '
                f'fill="#374151">{escape(_fit(text, width - tx))}</text>'
            )
    return out


def _wrap(text: str, room: float) -> list[str]:
    n, lines, cur = max(20, int(room / CHAR_W)), [], ""
    for word in text.split():
        if cur and len(cur) + 1 + len(word) > n:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    return [*lines, cur] if cur else lines


def _fit(text: str, room: float, char_w: float = CHAR_W) -> str:
    n = int(room / char_w)
    return text if len(text) <= n else text[: n - 1] + "…"


def _token_header_width(graph: StoredGraph, pos: int) -> float:
    tok = node_label_token(graph.tokens[pos]) if pos < len(graph.tokens) else ""
    return label_width(tok) + 2 * CELL_PAD


def _subtitle(graph: StoredGraph, width: int) -> str:
    text = str(graph.meta.get("text") or " ".join(graph.tokens))
    target = f"target {graph.target}; " if graph.target else ""
    room = int((width - 20) / 6.4) - len(target) - 10
    shown = text if len(text) <= room else "…" + text[-(room - 1) :]
    return f"{target}prompt: {shown}"


def node_label_token(token: str) -> str:
    """A token as drawn: quotes only where spaces at its ends would otherwise be invisible."""
    t = repr(token)[1:-1]
    t = t if len(t) <= 16 else t[:15] + "…"
    return f"'{t}'" if t != t.strip() or not t else t


def escape(text: str) -> str:
    """XML text: control characters dropped, markup escaped."""
    return _escape("".join(ch for ch in text if ch >= " " or ch in "\t\n"), {'"': "&quot;"})


def markdown_snippet(artifact_id: str, caption: str) -> str:
    alt = caption or f"graph {artifact_id}"
    return f"![{alt}](artifacts/{artifact_id}.svg)\n\n[graph data](artifacts/{artifact_id}.json)\n"
