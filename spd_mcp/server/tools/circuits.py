"""Circuit tools: get_attributions (one-hop signed edges, multi-hop influence) and optimize_circuit (a job).

Both store their graph (``schemas.StoredGraph``) so save_graph_artifact can draw it by graph_id.
"""

import re
from typing import Any, Literal

from mcp.server.mcpserver import Context
from pydantic import Field

from spd_core.analysis.attributions import EMBED, OUTPUT, AttributionGraph, attribution_graph
from spd_core.analysis.circuits import Circuit, CircuitConfig
from spd_core.analysis.circuits import optimize_circuit as core_optimize_circuit
from spd_core.analysis.influence import influence_on
from spd_core.keys import NodeKey, resolve_position
from spd_mcp.server.inputs import (
    ModelInput,
    graph_node_key,
    model_input,
    require_lm,
    target_token,
    text_input,
    token_label,
)
from spd_mcp.server.schemas import GraphEdge, GraphNode, JobView, LongInput, StoredGraph, Wire
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import ToolSpec
from spd_mcp.server.tools.components import EDIT_DESC, ExampleInput, TextOrFeatures
from spd_mcp.server.tools.jobs import run_as_job
from spd_mcp.server.tools.shared_circuit import LossSummary, loss_summary, optimize_shared
from spd_mcp.server.tools.validation import ClaimExample, ControlPrompt

STORED_EDGES = 20_000  # the largest edges (by |value|) kept with a stored graph
NODE_PATTERN = re.compile(r"^.+:-?\d+:\d+$")


def stored_graph(
    state: AppState, graph: AttributionGraph, mi: ModelInput, target: NodeKey | None, meta: dict[str, Any]
) -> StoredGraph:
    """The store's graph payload: every node, and the STORED_EDGES largest signed edges."""
    nodes = []
    for key, ci, act in zip(graph.nodes, graph.node_ci.tolist(), graph.node_acts.tolist(), strict=True):
        pseudo = key.layer in (EMBED, OUTPUT)
        label = mi.tokens[key.pos] if key.layer == EMBED else token_label(state, key.c) if key.layer == OUTPUT else None
        nodes.append(GraphNode(
            key=str(key), layer=key.layer, pos=key.pos, c=key.c, ci=None if pseudo else ci, act=act, label=label,
        ))
    edges = [GraphEdge(src=str(s), tgt=str(t), value=v) for s, t, v in graph.top_edges(STORED_EDGES, signed=True)]
    layers = list(dict.fromkeys(n.layer for n in graph.nodes))
    n_edges = int((graph.edges != 0).sum())
    return StoredGraph(
        tokens=mi.tokens, layers=layers, nodes=nodes, edges=edges, target=None if target is None else str(target),
        meta={**meta, "n_edges_nonzero": n_edges, "threshold": graph.threshold, "run": state.run.name},
    )


# --- get_attributions ------------------------------------------------------------------------------


class AttributionsInput(TextOrFeatures):
    target: str | None = Field(
        None, max_length=200,
        description="what to explain: an output token string (exactly one token, at 'position'), or a node key "
        "'<layer>:<pos>:<c>' (component node, or 'output:<pos>:<token id>'); default: the 3 most likely next "
        "tokens at the last position",
    )
    position: int = Field(-1, ge=-100000, le=100000, description="position of a target token (negative counts from the end)")
    threshold: float = Field(0.1, ge=0.0, le=1.0, description="component nodes are those with CI above this")
    signed: bool = Field(
        True, description="rank edges by |signed value| (true) or by the sum of |grad x act| terms (false: "
        "no cancellation inside embedding sources)"
    )
    top_k: int = Field(30, ge=1, le=500, description="how many edges (largest first) to return")
    multi_hop: bool = Field(False, description="also return each node's sign-preserving influence on the target through all paths")
    node_limit: int = Field(40, ge=1, le=1000, description="return at most this many nodes (outputs first, then largest CI)")
    edit_id: str | None = Field(None, max_length=64, description=EDIT_DESC)


class NodeRow(Wire):
    node: str = Field(description="'<layer>:<pos>:<c>'; layer 'embed' (c=0) or 'output' (c=token id) for pseudo-nodes")
    ci: float | None = Field(description="causal importance; for output nodes the token's probability; None for embed")
    act: float = Field(description="inner activation, embedding norm, or logit")
    label: str | None = Field(description="the token of an embed or output node")


class EdgeRow(Wire):
    src: str
    tgt: str
    value: float = Field(description="signed attribution: gradient of tgt x activation of src (one hop)")
    abs_value: float = Field(description="sum of |grad x act| terms (equals |value| except for embedding sources)")


class InfluenceRow(Wire):
    node: str
    influence: float = Field(description="signed influence on the target through all paths (rows normalised to total |1|)")
    direct: float = Field(description="the one-hop part")


class AttributionsResult(Wire):
    summary: str
    graph_id: int = Field(description="pass to save_graph_artifact to save and draw this graph")
    tokens: list[str]
    target: str | None = Field(description="the target node of multi_hop (and of the explained prediction)")
    n_nodes: int
    n_edges: int = Field(description="non-zero edges in the graph")
    nodes: list[NodeRow]
    edges: list[EdgeRow] = Field(description="top_k edges, largest first")
    influence: list[InfluenceRow] | None = Field(description="with multi_hop: the top_k nodes by |influence| on the target")


def _resolve_target(
    state: AppState, inp: AttributionsInput, mi: ModelInput
) -> tuple[list[tuple[int, int]] | None, NodeKey | None]:
    """(output nodes to add, explicit target node) from ``target`` and ``position``."""
    if inp.target is None:
        return None, None
    if NODE_PATTERN.match(inp.target.strip()):
        node = graph_node_key(state, inp.target, mi.seq)
        if node.layer == EMBED:
            raise ValueError("an embed node has no incoming edges; valid targets are component or output nodes")
        return ([(node.pos, node.c)] if node.layer == OUTPUT else None), node
    if not state.run.is_lm:
        raise ValueError("toy models have no tokens: give the target as an output node 'output:0:<index>'")
    tid = target_token(state, inp.target)
    pos = resolve_position(inp.position, mi.seq)
    return [(pos, tid)], NodeKey(OUTPUT, pos, tid)


def _compute_attributions(state: AppState, inp: AttributionsInput, mi: ModelInput) -> tuple[AttributionGraph, Any]:
    outputs, target = _resolve_target(state, inp, mi)
    edit = state.edits.edit(inp.edit_id)
    graph = attribution_graph(state.run.model, mi.x, inp.threshold, outputs=outputs, edit=edit)
    index = graph.index()
    if target is None:
        outs = [n for n in graph.nodes if n.layer == OUTPUT]
        target = max(outs, key=lambda n: float(graph.node_ci[index[n]]))
    if target not in index:
        raise ValueError(
            f"target node {target} is not in the graph: its CI is not above threshold {inp.threshold:g}; "
            "lower the threshold or pick a node get_ci reports"
        )
    influence = influence_on(graph, target) if inp.multi_hop else None
    return graph, (target, influence)


async def get_attributions(state: AppState, inp: AttributionsInput, ctx: Context) -> AttributionsResult:
    mi = model_input(state, inp.text, inp.features)
    state.edits.edit(inp.edit_id)
    graph, (target, influence) = await state.device.call("get_attributions", lambda: _compute_attributions(state, inp, mi))
    stored = stored_graph(state, graph, mi, target, {"tool": "get_attributions", "text": mi.text, "edit_id": inp.edit_id})
    prompt_id = await state.store.add_prompt(mi.text, mi.token_ids) if mi.text is not None else None
    graph_id = await state.store.add_graph(stored.model_dump(mode="json"), "attributions", prompt_id, inp.model_dump(mode="json"))
    by_key = {n.key: n for n in stored.nodes}
    order = sorted(stored.nodes, key=lambda n: (n.layer != OUTPUT, -(n.ci if n.ci is not None else -1.0)))
    nodes = [NodeRow(node=n.key, ci=n.ci if n.layer != OUTPUT else _prob(graph, n.key), act=n.act or 0.0, label=n.label)
             for n in order[: inp.node_limit]]
    abs_vals = graph.edges_abs
    index = graph.index()
    edges = [
        EdgeRow(src=str(s), tgt=str(t), value=float(graph.edges[index[t], index[s]]), abs_value=float(abs_vals[index[t], index[s]]))
        for s, t, _ in graph.top_edges(inp.top_k, signed=inp.signed)
    ]
    infl = None
    if influence is not None:
        infl = [InfluenceRow(node=str(n), influence=v, direct=float(influence.direct[index[n]])) for n, v in influence.top(inp.top_k)]
    tgt_label = by_key[str(target)].label if str(target) in by_key else None
    strongest = ", ".join(f"{e.src} -> {e.tgt} ({e.value:+.3g})" for e in edges[:3])
    summary = (
        f"Attribution graph {graph_id} of {mi.seq} tokens: {len(graph.nodes)} nodes (CI > {inp.threshold:g}) and "
        f"{stored.meta['n_edges_nonzero']} non-zero edges; target {target}"
        + (f" ({tgt_label!r})" if tgt_label else "")
        + (f". Strongest edges: {strongest}" if strongest else "")
        + (". Largest influences on the target: " + ", ".join(f"{r.node} ({r.influence:+.3f})" for r in infl[:3]) if infl else "")
        + ". Save it with save_graph_artifact(graph_id=" + str(graph_id) + ")."
    )
    return AttributionsResult(
        summary=summary, graph_id=graph_id, tokens=mi.tokens, target=str(target), n_nodes=len(graph.nodes),
        n_edges=stored.meta["n_edges_nonzero"], nodes=nodes, edges=edges, influence=infl,
    )


def _prob(graph: AttributionGraph, key: str) -> float:
    return float(graph.node_ci[[str(n) for n in graph.nodes].index(key)])


# --- optimize_circuit ------------------------------------------------------------------------------

REGIME_NAMES = ("target", "ci", "stochastic", "adversarial", "unmasked")


class CircuitInput(LongInput):
    text: str | None = Field(
        None, max_length=20000,
        description="one prompt (with target_token); or give 'prompts' or 'mechanism' instead",
        examples=["Paris is the capital of"],
    )
    target_token: str | None = Field(
        None, max_length=200,
        description="with 'text': the predicted token to keep; exactly one token",
    )
    position: int = Field(
        -1, ge=-100000, le=100000,
        description="with 'text': position whose prediction it is (default: the last)",
    )
    prompts: list[ExampleInput] | None = Field(
        None, min_length=1, max_length=64,
        description="several prompts {text, target_token, position?} of one behaviour: one circuit "
        "of components that holds across them",
    )
    heldout_prompts: list[ClaimExample] | None = Field(
        None, max_length=200,
        description="with 'prompts': more prompts {text, target_token, foil?} of the behaviour, "
        "not optimised on (copies of 'prompts' are skipped), to validate the circuit on",
    )
    control_prompts: list[ControlPrompt] | None = Field(
        None, max_length=200,
        description="with 'prompts': prompts of other behaviours, to validate specificity on",
    )
    mechanism: str | None = Field(
        None, max_length=200,
        description="a probe mechanism of the run (list_probe_prompts): optimise on its first "
        "n_prompts probes, validate on others of its probes and on other mechanisms' probes",
    )
    n_prompts: int = Field(16, ge=1, le=64, description="with 'mechanism': probes to optimise on")
    n_heldout: int = Field(
        32, ge=0, le=200,
        description="with 'mechanism': held-out probes (a seeded sample of the rest) to validate "
        "on, and as many of the other mechanisms' for specificity (0: no validation)",
    )
    steps: int = Field(200, ge=1, le=5000, description="optimisation steps (one masked forward and backward each)")
    sparsity: float | None = Field(
        None, ge=0.0, le=100.0,
        description="weight of the sparsity term (default 0.1 for one prompt; 0.003 for several, "
        "where it sums over components)",
    )
    loss: Literal["ce", "kl"] = Field("ce", description="'ce': cross-entropy of the target token; 'kl': KL(target model ‖ circuit) at the position")
    mask: Literal["ci", "stochastic"] | None = Field(
        None,
        description="train under CI masks, or under stochastic masks in [CI, 1] with the rest free "
        "in [0, 1] (default: 'ci' for one prompt, 'stochastic' for several; CI-mask optima are "
        "where shortcuts live)",
    )
    adversarial_steps: int = Field(0, ge=0, le=100, description="PGD steps of an adversary on the free masks each step (0: none)")
    lr: float = Field(
        0.1, gt=0.0, le=10.0, description="learning rate (AdamW) on the pre-sigmoid CI or the gates"
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="random seed")
    edit_id: str | None = Field(None, max_length=64, description=EDIT_DESC)
    limit: int = Field(
        100, ge=1, le=1000, description="return at most this many circuit nodes or components"
    )


class CircuitNode(Wire):
    node: str = Field(description="'<layer>:<pos>:<c>'")
    token: str = Field(description="the input token at the node's position")
    ci: float = Field(description="optimised CI in (0, 1]")


class CircuitResult(Wire):
    summary: str
    graph_id: int = Field(description="the circuit's attribution graph (nodes = circuit); pass to save_graph_artifact")
    target_token: str
    target_token_id: int
    position: int
    total: int = Field(description="circuit nodes")
    limit: int
    nodes: list[CircuitNode] = Field(description="largest CI first")
    l0: dict[str, int] = Field(description="circuit nodes per layer")
    probs: dict[str, float] = Field(
        description="probability of the target token under each regime: target, ci, stochastic, adversarial, unmasked"
    )
    loss: LossSummary


def _circuit_work(state: AppState, inp: CircuitInput, mi: ModelInput, tid: int, progress: Any) -> tuple[Circuit, AttributionGraph]:
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
    graph = attribution_graph(model, mi.x, 0.0, outputs=[(circuit.position, tid)], ci=circuit.ci, edit=edit)
    return circuit, graph


async def optimize_circuit(state: AppState, inp: CircuitInput, ctx: Context) -> JobView:
    require_lm(state, "optimize_circuit")
    forms = [name for name in ("text", "prompts", "mechanism") if getattr(inp, name) is not None]
    if len(forms) != 1:
        raise ValueError(
            "give exactly one of 'text' (with 'target_token': one prediction), 'prompts' (several "
            "prompts of one behaviour) or 'mechanism' (a probe mechanism of the run); got "
            f"{', '.join(forms) or 'none'}"
        )
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

    async def finish(raw: tuple[Circuit, AttributionGraph]) -> CircuitResult:
        circuit, graph = raw
        target = NodeKey(OUTPUT, pos, tid)
        stored = stored_graph(state, graph, mi, target, {"tool": "optimize_circuit", "text": mi.text, "edit_id": inp.edit_id})
        prompt_id = await state.store.add_prompt(mi.text or "", mi.token_ids)
        params = inp.model_dump(mode="json")
        graph_id = await state.store.add_graph(stored.model_dump(mode="json"), "circuit", prompt_id, params)
        nodes = [CircuitNode(node=str(k), token=mi.tokens[k.pos], ci=v) for k, v in circuit.nodes]
        loss = loss_summary(circuit.loss_trace, circuit.converged)
        probs = {r: float(circuit.probs[r]) for r in REGIME_NAMES}
        await state.store.add_circuit(
            {"nodes": [[n.node, n.ci] for n in nodes], "probs": probs, "l0": circuit.l0}, params, graph_id, prompt_id
        )
        label = state.tok.display(tid)
        return CircuitResult(
            summary=(
                f"A circuit of {len(nodes)} nodes keeps {label!r} at position {pos}: p = {probs['ci']:.3f} under CI masks, "
                f"{probs['stochastic']:.3f} stochastic, {probs['adversarial']:.3f} adversarial, vs {probs['target']:.3f} "
                f"in the target model. Loss {loss.first:.4g} -> {loss.final:.4g} in {loss.steps} steps"
                f"{' (converged)' if loss.converged else ' (not converged: try more steps)'}. Graph {graph_id}."
            ),
            graph_id=graph_id, target_token=label, target_token_id=tid, position=pos, total=len(nodes),
            limit=inp.limit, nodes=nodes[: inp.limit], l0=circuit.l0, probs=probs, loss=loss,
        )

    return await run_as_job(
        state, ctx, "optimize_circuit", lambda progress: _circuit_work(state, inp, mi, tid, progress), finish,
        inp.wait_s, inp.model_dump(mode="json"),
    )


TOOLS = [
    ToolSpec(
        name="get_attributions",
        title="Attribution graph of an input",
        description=(
            "How do components feed each other and the output on this input? Builds and stores "
            "the one-hop attribution graph (gradient x activation, signed) over components with "
            "CI above 'threshold', embeddings and outputs; with multi_hop, each node's influence "
            "on the target through all paths. About a second. Example: "
            "get_attributions(text='Paris is the capital of', target=' France', top_k=20)."
        ),
        input_model=AttributionsInput, result_model=AttributionsResult, handler=get_attributions, read_only=False,
    ),
    ToolSpec(
        name="optimize_circuit",
        title="Smallest circuit for a prediction",
        description=(
            "What is the smallest set of components that still makes this prediction, or this kind "
            "of prediction? One prompt (text, target_token): a sparse circuit of (position, "
            "component) nodes, the target's probability under every regime and a stored graph_id. "
            "Several prompts of one behaviour ('prompts', or a probe 'mechanism'): one component set "
            "shared by all, optimised under stochastic masks by default, with every regime's "
            "numbers and a held-out validation (validation_id). A job ('steps' passes; a minute "
            "with validation). Language models only. Example: optimize_circuit(text='Paris is the "
            "capital of', target_token=' France', steps=200); optimize_circuit(mechanism='induction')."
        ),
        input_model=CircuitInput, result_model=JobView, handler=optimize_circuit, read_only=False,
    ),
]
