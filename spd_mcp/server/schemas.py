"""Graphs in the store (written by attribution and circuit tools, read by save_graph_artifact)."""

from typing import Any

from pydantic import Field

from spd_mcp.contract.wire import Wire


class GraphNode(Wire):
    key: str = Field(description="'<layer>:<pos>:<c>'; pseudo-nodes use layer 'embed' or 'output'")
    layer: str
    pos: int
    c: int = Field(description="component index (token id for embed/output pseudo-nodes)")
    ci: float | None = Field(default=None, description="causal importance; None for pseudo-nodes")
    act: float | None = None
    label: str | None = None


class GraphEdge(Wire):
    src: str
    tgt: str
    value: float = Field(description="signed attribution (gradient x activation)")


class StoredGraph(Wire):
    """The payload a graph is stored with (``Store.add_graph``)."""

    tokens: list[str]
    layers: list[str] = Field(description="row order from input to output")
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    target: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
