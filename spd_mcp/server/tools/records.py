"""Records of the investigation: research log, hypotheses, explanations, summary, graph
artifacts."""

import json
from typing import Any

from mcp.server.mcpserver import Context

from spd_core.analysis.readout import top_promoted_token
from spd_core.analysis.validation import judge_claims
from spd_core.keys import parse_component_key
from spd_mcp.contract import records as contract
from spd_mcp.contract.records import (
    ExplanationInput,
    ExplanationResult,
    GraphArtifactInput,
    GraphArtifactResult,
    HypothesisInput,
    HypothesisResult,
    HypStatus,
    LogInput,
    LogResult,
    SummaryInput,
    SummaryResult,
)
from spd_mcp.server.graph_render import (
    GraphSelection,
    artifact_payload,
    markdown_snippet,
    render_svg,
    select,
)
from spd_mcp.server.schemas import StoredGraph
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import bind
from spd_mcp.server.workspace import (
    EXPLANATIONS,
    HYPOTHESES,
    RESEARCH_LOG,
    SUMMARY,
    Workspace,
    now_iso,
)

# --- update_research_log --------------------------------------------------------------------------


async def update_research_log(state: AppState, inp: LogInput, ctx: Context) -> LogResult:
    ws = state.require_workspace()
    head = await state.run_io(ws.append_log, inp.heading, inp.markdown)
    size = await state.run_io(ws.log_size)
    return LogResult(
        summary=f"Appended {len(inp.markdown)} characters under '{head}'.", path=RESEARCH_LOG,
        heading=head, log_bytes=size,
    )


# --- record_hypothesis ----------------------------------------------------------------------------


def _record_hypothesis(ws: Workspace, inp: HypothesisInput) -> tuple[int, HypStatus | None, int]:
    lines = ws.read_jsonl(HYPOTHESES)
    mine = [h for h in lines if h.get("id") == inp.hypothesis_id]
    version = len(mine) + 1
    previous: HypStatus | None = mine[-1].get("status") if mine else None
    ws.append_jsonl(HYPOTHESES, {
        "id": inp.hypothesis_id, "version": version, "statement": inp.statement,
        "status": inp.status, "evidence": list(inp.evidence), "ts": now_iso(),
    })
    change = f"{previous} -> {inp.status}" if previous else inp.status
    evidence = "".join(f"\n- {e}" for e in inp.evidence)
    ws.append_log(f"Hypothesis {inp.hypothesis_id} ({change})", f"{inp.statement}\n{evidence}\n")
    n = len({h.get("id") for h in lines} | {inp.hypothesis_id})
    return version, previous, n


async def record_hypothesis(
    state: AppState, inp: HypothesisInput, ctx: Context
) -> HypothesisResult:
    ws = state.require_workspace()
    version, previous, n = await state.run_io(_record_hypothesis, ws, inp)
    verb = "Added" if version == 1 else f"Updated (version {version})"
    return HypothesisResult(
        summary=f"{verb} hypothesis {inp.hypothesis_id}, status {inp.status}; "
        f"{n} hypotheses recorded.",
        hypothesis_id=inp.hypothesis_id, version=version, status=inp.status,
        previous_status=previous, n_hypotheses=n,
    )


# --- save_explanation -----------------------------------------------------------------------------


def _save_explanation(ws: Workspace, record: dict) -> int:
    index = len(ws.read_jsonl(EXPLANATIONS))
    ws.append_jsonl(EXPLANATIONS, record)
    return index


def _explained_keys(state: AppState, inp: ExplanationInput) -> list[str]:
    """The explanation's components as canonical keys; every bad one named in one error."""
    layer_c = state.layer_c()
    keys, problems = [], []
    for item in inp.components:
        try:
            keys.append(str(parse_component_key(item.component, layer_c)))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("; ".join(problems))
    return keys


async def _validations(
    state: AppState, inp: ExplanationInput, keys: list[str]
) -> list[dict[str, Any]]:
    """The validations the explanation cites; each must have measured exactly its components."""
    validations = [await state.store.get_validation(v) for v in inp.validation_ids]
    for vid, v in zip(inp.validation_ids, validations, strict=True):
        if sorted(v["components"]) != sorted(keys):
            raise ValueError(f"validation {vid} measured {sorted(v['components'])}, "
                             f"not this explanation's components "
                             f"{sorted(keys)}: validate exactly the set you explain")
    return validations


async def save_explanation(
    state: AppState, inp: ExplanationInput, ctx: Context
) -> ExplanationResult:
    ws = state.require_workspace()
    keys = _explained_keys(state, inp)
    validations = await _validations(state, inp, keys)
    judged = judge_claims(inp.claims, validations)
    record = {**inp.model_dump(mode="json"), "ts": now_iso(), "agent": state.config.agent_id,
              "agent_confidence": inp.confidence, "confidence": judged.confidence,
              "status": judged.status, "verdict": judged.reasons,
              "validations": [{"validation_id": vid, **{k: v.get(k) for k in _VALIDATION_KEYS}}
                              for vid, v in zip(inp.validation_ids, validations, strict=True)]}
    for item, key in zip(record["components"], keys, strict=True):
        item["component"] = key
    index = await state.run_io(_save_explanation, ws, record)
    return ExplanationResult(
        summary=f"Saved explanation #{index} of '{inp.behaviour[:80]}' with {len(keys)} "
        f"components: {judged.status} "
        f"({'; '.join(judged.reasons)}), confidence {judged.confidence}.",
        explanation_index=index, components=keys, status=judged.status,
        confidence=judged.confidence,
    )


_VALIDATION_KEYS = ("behaviour", "necessity", "sufficiency", "specificity", "sufficient_alone",
                    "robust_to_adversary", "n_examples", "n_controls", "regimes", "summary")


# --- set_investigation_summary --------------------------------------------------------------------


async def set_investigation_summary(
    state: AppState, inp: SummaryInput, ctx: Context
) -> SummaryResult:
    ws = state.require_workspace()
    updated = now_iso()
    await state.run_io(ws.write_json, SUMMARY, {
        "title": inp.title, "summary": inp.summary, "status": inp.status, "updated_at": updated,
    })
    return SummaryResult(
        summary=f"summary.json now says '{inp.title}' ({inp.status}).", path=SUMMARY,
        status=inp.status, updated_at=updated,
    )


# --- save_graph_artifact --------------------------------------------------------------------------


def _write_artifact(ws: Workspace, artifact_id: str, payload: dict, svg: str) -> None:
    text = json.dumps(payload, indent=1, ensure_ascii=False, allow_nan=False)
    ws.write_artifacts(artifact_id, {".json": text, ".svg": svg})


def _promoted_tokens(state: AppState, sel: GraphSelection) -> dict[str, str | None]:
    """'<layer>:<c>' -> the token its write vector promotes most, for every component node
    drawn."""
    model = state.run.model
    keys = sorted(
        {(n.layer, n.c) for n in sel.nodes if n.ci is not None and n.layer in model.layers}
    )
    out: dict[str, str | None] = {}
    for layer, c in keys:
        top = top_promoted_token(model, layer, c) if state.run.is_lm else None
        out[f"{layer}:{c}"] = None if top is None else state.tok.display(top)
    return out


async def save_graph_artifact(
    state: AppState, inp: GraphArtifactInput, ctx: Context
) -> GraphArtifactResult:
    ws = state.require_workspace()
    graph = StoredGraph.model_validate(await state.store.get_graph(inp.graph_id))
    artifact_id = inp.artifact_id or f"graph_{inp.graph_id}"
    sel = select(graph, inp.min_ci, inp.max_edges)
    promotes = await state.device.call("save_graph_artifact", lambda: _promoted_tokens(state, sel))
    payload = artifact_payload(graph, sel, inp.graph_id, artifact_id, inp.caption, promotes)
    svg = render_svg(graph, sel, inp.caption or f"graph {inp.graph_id}", promotes)
    await state.run_io(_write_artifact, ws, artifact_id, payload, svg)
    return GraphArtifactResult(
        summary=f"Saved graph {inp.graph_id} as artifacts/{artifact_id}.json and .svg: "
        f"{len(sel.nodes)} nodes, "
        f"{len(sel.edges)} of {sel.n_edges_total} edges.",
        artifact_id=artifact_id, json_path=f"artifacts/{artifact_id}.json",
        svg_path=f"artifacts/{artifact_id}.svg",
        n_nodes=len(sel.nodes), n_edges=len(sel.edges), n_edges_total=sel.n_edges_total,
        markdown=markdown_snippet(artifact_id, inp.caption),
    )


_NEEDS_WS = " Needs the server to run with --workspace."


TOOLS = bind(
    contract.TOOLS, update_research_log=update_research_log, record_hypothesis=record_hypothesis,
    save_explanation=save_explanation, set_investigation_summary=set_investigation_summary,
    save_graph_artifact=save_graph_artifact,
)
