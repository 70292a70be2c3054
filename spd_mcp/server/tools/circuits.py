"""Circuit tools: get_attributions (one-hop signed edges, multi-hop influence) and
optimize_circuit (a job).

Both store their graph (``schemas.StoredGraph``) so save_graph_artifact can draw it by graph_id.
"""

import re
from functools import partial
from typing import Any

from mcp.server.mcpserver import Context

from spd_core.analysis.attributions import EMBED, OUTPUT, AttributionGraph, attribution_graph
from spd_core.analysis.circuits import Circuit, CircuitConfig
from spd_core.analysis.circuits import optimize_circuit as core_optimize_circuit
from spd_core.analysis.influence import Influence, influence_on
from spd_core.analysis.regimes import REGIMES
from spd_core.keys import NodeKey, resolve_position
from spd_mcp.contract import circuits as contract
from spd_mcp.contract.circuits import (
    AttributionsInput,
    AttributionsResult,
    CircuitInput,
    CircuitNode,
    CircuitResult,
    EdgeRow,
    InfluenceRow,
    NodeRow,
)
from spd_mcp.contract.wire import JobView
from spd_mcp.server.inputs import (
    ModelInput,
    graph_node_key,
    model_input,
    require_lm,
    target_token,
    text_input,
    token_label,
)
from spd_mcp.server.schemas import GraphEdge, GraphNode, StoredGraph
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import bind
from spd_mcp.server.tools.jobs import run_as_job
from spd_mcp.server.tools.removal import optimize_removal_job
from spd_mcp.server.tools.shared_circuit import loss_summary, optimize_shared

STORED_EDGES = 20_000  # the largest edges (by |value|) kept with a stored graph
NODE_PATTERN = re.compile(r"^.+:-?\d+:\d+$")


def stored_graph(
    state: AppState, graph: AttributionGraph, mi: ModelInput, target: NodeKey | None,
    meta: dict[str, Any],
) -> StoredGraph:
    """The store's graph payload: every node, and the STORED_EDGES largest signed edges."""
    nodes = []
    for key, ci, act in zip(
        graph.nodes, graph.node_ci.tolist(), graph.node_acts.tolist(), strict=True
    ):
        pseudo = key.layer in (EMBED, OUTPUT)
        label = (
            mi.tokens[key.pos] if key.layer == EMBED
            else token_label(state, key.c) if key.layer == OUTPUT else None
        )
        nodes.append(GraphNode(
            key=str(key), layer=key.layer, pos=key.pos, c=key.c, ci=None if pseudo else ci,
            act=act, label=label,
        ))
    edges = [
        GraphEdge(src=str(s), tgt=str(t), value=v)
        for s, t, v in graph.top_edges(STORED_EDGES, signed=True)
    ]
    layers = list(dict.fromkeys(n.layer for n in graph.nodes))
    n_edges = int((graph.edges != 0).sum())
    return StoredGraph(
        tokens=mi.tokens, layers=layers, nodes=nodes, edges=edges,
        target=None if target is None else str(target),
        meta={
            **meta, "n_edges_nonzero": n_edges, "threshold": graph.threshold,
            "run": state.run.name,
        },
    )


# --- get_attributions -----------------------------------------------------------------------------


def _resolve_target(
    state: AppState, inp: AttributionsInput, mi: ModelInput
) -> tuple[list[tuple[int, int]] | None, NodeKey | None]:
    """(output nodes to add, explicit target node) from ``target`` and ``position``."""
    if inp.target is None:
        return None, None
    if NODE_PATTERN.match(inp.target.strip()):
        node = graph_node_key(state, inp.target, mi.seq)
        if node.layer == EMBED:
            raise ValueError(
                "an embed node has no incoming edges; valid targets are component or output nodes"
            )
        return ([(node.pos, node.c)] if node.layer == OUTPUT else None), node
    if not state.run.is_lm:
        raise ValueError(
            "toy models have no tokens: give the target as an output node 'output:0:<index>'"
        )
    tid = target_token(state, inp.target)
    pos = resolve_position(inp.position, mi.seq)
    return [(pos, tid)], NodeKey(OUTPUT, pos, tid)


def _compute_attributions(
    state: AppState, inp: AttributionsInput, mi: ModelInput
) -> tuple[AttributionGraph, Any]:
    outputs, target = _resolve_target(state, inp, mi)
    edit = state.edits.edit(inp.edit_id)
    graph = attribution_graph(state.run.model, mi.x, inp.threshold, outputs=outputs, edit=edit)
    index = graph.index()
    if target is None:
        outs = [n for n in graph.nodes if n.layer == OUTPUT]
        target = max(outs, key=lambda n: float(graph.node_ci[index[n]]))
    if target not in index:
        raise ValueError(
            f"target node {target} is not in the graph: its CI is not above threshold "
            f"{inp.threshold:g}; "
            "lower the threshold or pick a node get_ci reports"
        )
    influence = influence_on(graph, target) if inp.multi_hop else None
    return graph, (target, influence)


def _attributions_result(
    inp: AttributionsInput, mi: ModelInput, graph: AttributionGraph, stored: StoredGraph,
    graph_id: int, target: NodeKey, influence: Influence | None,
) -> AttributionsResult:
    """The wire result of a stored attribution graph: its top nodes, edges and influences."""
    by_key = {n.key: n for n in stored.nodes}
    order = sorted(
        stored.nodes, key=lambda n: (n.layer != OUTPUT, -(n.ci if n.ci is not None else -1.0))
    )
    nodes = [NodeRow(node=n.key, ci=n.ci if n.layer != OUTPUT else _prob(graph, n.key),
                     act=n.act or 0.0, label=n.label)
             for n in order[: inp.node_limit]]
    abs_vals = graph.edges_abs
    index = graph.index()
    edges = [
        EdgeRow(src=str(s), tgt=str(t), value=float(graph.edges[index[t], index[s]]),
                abs_value=float(abs_vals[index[t], index[s]]))
        for s, t, _ in graph.top_edges(inp.top_k, signed=inp.signed)
    ]
    infl = None
    if influence is not None:
        infl = [
            InfluenceRow(node=str(n), influence=v, direct=float(influence.direct[index[n]]))
            for n, v in influence.top(inp.top_k)
        ]
    tgt_label = by_key[str(target)].label if str(target) in by_key else None
    strongest = ", ".join(f"{e.src} -> {e.tgt} ({e.value:+.3g})" for e in edges[:3])
    summary = (
        f"Attribution graph {graph_id} of {mi.seq} tokens: {len(graph.nodes)} nodes "
        f"(CI > {inp.threshold:g}) and "
        f"{stored.meta['n_edges_nonzero']} non-zero edges; target {target}"
        + (f" ({tgt_label!r})" if tgt_label else "")
        + (f". Strongest edges: {strongest}" if strongest else "")
        + (
            ". Largest influences on the target: "
            + ", ".join(f"{r.node} ({r.influence:+.3f})" for r in infl[:3])
            if infl else ""
        )
        + ". Save it with save_graph_artifact(graph_id=" + str(graph_id) + ")."
    )
    return AttributionsResult(
        summary=summary, graph_id=graph_id, tokens=mi.tokens, target=str(target),
        n_nodes=len(graph.nodes),
        n_edges=stored.meta["n_edges_nonzero"], nodes=nodes, edges=edges, influence=infl,
    )


async def get_attributions(
    state: AppState, inp: AttributionsInput, ctx: Context
) -> AttributionsResult:
    mi = model_input(state, inp.text, inp.features)
    state.edits.edit(inp.edit_id)
    graph, (target, influence) = await state.device.call(
        "get_attributions", lambda: _compute_attributions(state, inp, mi)
    )
    stored = stored_graph(
        state, graph, mi, target,
        {"tool": "get_attributions", "text": mi.text, "edit_id": inp.edit_id},
    )
    prompt_id = await state.store.add_prompt(mi.text, mi.token_ids) if mi.text is not None else None
    graph_id = await state.store.add_graph(
        stored.model_dump(mode="json"), "attributions", prompt_id, inp.model_dump(mode="json")
    )
    return _attributions_result(inp, mi, graph, stored, graph_id, target, influence)


def _prob(graph: AttributionGraph, key: str) -> float:
    return float(graph.node_ci[[str(n) for n in graph.nodes].index(key)])


# --- optimize_circuit -----------------------------------------------------------------------------


def _circuit_work(
    state: AppState, inp: CircuitInput, mi: ModelInput, tid: int, progress: Any
) -> tuple[Circuit, AttributionGraph]:
    model, edit = state.run.model, state.edits.edit(inp.edit_id)
    config = CircuitConfig(
        steps=inp.steps, lr=inp.lr, sparsity=0.1 if inp.sparsity is None else inp.sparsity,
        loss=inp.loss, mask=inp.mask or "ci", adversarial_steps=inp.adversarial_steps,
        seed=inp.seed,
    )
    circuit = core_optimize_circuit(
        model, mi.x, tid, inp.position, config,
        progress=lambda s, n, v: progress(s, n + 1, f"step {s}/{n}, loss {v:.4g}"), edit=edit,
    )
    progress(inp.steps, inp.steps + 1, "attribution graph of the circuit")
    graph = attribution_graph(
        model, mi.x, 0.0, outputs=[(circuit.position, tid)], ci=circuit.ci, edit=edit
    )
    return circuit, graph


def _one_form(inp: CircuitInput) -> None:
    forms = [name for name in ("text", "prompts", "mechanism") if getattr(inp, name) is not None]
    if len(forms) != 1:
        raise ValueError(
            "give exactly one of 'text' (with 'target_token': one prediction), 'prompts' (several "
            "prompts of one behaviour) or 'mechanism' (a probe mechanism of the run); got "
            f"{', '.join(forms) or 'none'}"
        )


async def _circuit_result(
    state: AppState, inp: CircuitInput, mi: ModelInput, tid: int, pos: int,
    raw: tuple[Circuit, AttributionGraph],
) -> CircuitResult:
    """The wire result of a one-prompt circuit; its graph and the circuit stored."""
    circuit, graph = raw
    target = NodeKey(OUTPUT, pos, tid)
    stored = stored_graph(
        state, graph, mi, target,
        {"tool": "optimize_circuit", "text": mi.text, "edit_id": inp.edit_id},
    )
    prompt_id = await state.store.add_prompt(mi.text or "", mi.token_ids)
    params = inp.model_dump(mode="json")
    graph_id = await state.store.add_graph(
        stored.model_dump(mode="json"), "circuit", prompt_id, params
    )
    nodes = [CircuitNode(node=str(k), token=mi.tokens[k.pos], ci=v) for k, v in circuit.nodes]
    loss = loss_summary(circuit.loss_trace, circuit.converged)
    probs = {r: float(circuit.probs[r]) for r in REGIMES}
    await state.store.add_circuit(
        {"nodes": [[n.node, n.ci] for n in nodes], "probs": probs, "l0": circuit.l0},
        params, graph_id, prompt_id,
    )
    label = state.tok.display(tid)
    return CircuitResult(
        summary=(
            f"A circuit of {len(nodes)} nodes keeps {label!r} at position {pos}: "
            f"p = {probs['ci']:.3f} under CI masks, "
            f"{probs['stochastic']:.3f} stochastic, {probs['adversarial']:.3f} adversarial, "
            f"vs {probs['target']:.3f} "
            f"in the target model. Loss {loss.first:.4g} -> {loss.final:.4g} in {loss.steps} steps"
            f"{' (converged)' if loss.converged else ' (not converged: try more steps)'}. "
            f"Graph {graph_id}."
        ),
        graph_id=graph_id, target_token=label, target_token_id=tid, position=pos, total=len(nodes),
        limit=inp.limit, nodes=nodes[: inp.limit], l0=circuit.l0, probs=probs, loss=loss,
    )


async def optimize_circuit(state: AppState, inp: CircuitInput, ctx: Context) -> JobView:
    require_lm(state, "optimize_circuit")
    _one_form(inp)
    if inp.remove:
        return await optimize_removal_job(state, inp, ctx)
    if inp.text is None:
        return await optimize_shared(state, inp, ctx)
    if inp.target_token is None:
        raise ValueError(
            "'text' needs 'target_token': the predicted token to keep (exactly one token)"
        )
    mi = text_input(state, inp.text)
    tid = target_token(state, inp.target_token)
    pos = resolve_position(inp.position, mi.seq)
    state.edits.edit(inp.edit_id)
    return await run_as_job(
        state, ctx, "optimize_circuit", partial(_circuit_work, state, inp, mi, tid),
        partial(_circuit_result, state, inp, mi, tid, pos), inp.wait_s,
        inp.model_dump(mode="json"),
    )


TOOLS = bind(
    contract.TOOLS, get_attributions=get_attributions, optimize_circuit=optimize_circuit,
)
