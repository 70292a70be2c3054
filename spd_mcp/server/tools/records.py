"""Records of the investigation: research log, hypotheses, explanations, summary, graph artifacts."""

import functools
import json
from typing import Annotated, Literal

from mcp.server.mcpserver import Context
from pydantic import AfterValidator, Field
from pydantic.config import JsonDict

from spd_core.analysis.readout import top_promoted_token
from spd_core.analysis.validation import Claim, judge_claims
from spd_core.keys import parse_component_key
from spd_mcp.server.graph_render import (
    GraphSelection,
    artifact_payload,
    markdown_snippet,
    render_svg,
    select,
)
from spd_mcp.server.schemas import Input, StoredGraph, Wire
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import ToolSpec
from spd_mcp.server.workspace import (
    EXPLANATIONS,
    HYPOTHESES,
    ID_PATTERN,
    ID_RULE,
    RESEARCH_LOG,
    SUMMARY,
    Workspace,
    now_iso,
    validate_id,
)

SafeId = Annotated[str, AfterValidator(functools.partial(validate_id, what="id"))]
_ID_SCHEMA: JsonDict = {"pattern": f"^{ID_PATTERN}$"}

# --- update_research_log ---------------------------------------------------------------------------


class LogInput(Input):
    markdown: str = Field(min_length=1, max_length=50000, description="markdown to append (findings, tables, artifact snippets)")
    heading: str = Field("note", max_length=200, description="short title of this entry; a UTC timestamp is prepended")


class LogResult(Wire):
    summary: str
    path: str
    heading: str
    log_bytes: int


async def update_research_log(state: AppState, inp: LogInput, ctx: Context) -> LogResult:
    ws = state.require_workspace()
    head = await state.run_io(ws.append_log, inp.heading, inp.markdown)
    size = await state.run_io(ws.log_size)
    return LogResult(summary=f"Appended {len(inp.markdown)} characters under '{head}'.", path=RESEARCH_LOG, heading=head, log_bytes=size)


# --- record_hypothesis -----------------------------------------------------------------------------

HypStatus = Literal["proposed", "supported", "refuted", "inconclusive"]


class HypothesisInput(Input):
    hypothesis_id: SafeId = Field(description=f"your id for the hypothesis; {ID_RULE}", json_schema_extra=_ID_SCHEMA, examples=["h1"])
    statement: str = Field(min_length=1, max_length=5000, description="the claim, falsifiable, in one or two sentences")
    status: HypStatus = Field("proposed", description="proposed, supported, refuted or inconclusive")
    evidence: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list, max_length=50,
        description="references to tool results backing the status, e.g. 'ablate j4: removing 1.mlp.up:17 drops p(Paris) 0.8->0.1'",
    )


class HypothesisResult(Wire):
    summary: str
    hypothesis_id: str
    version: int = Field(description="1 for a new hypothesis, +1 per update")
    status: HypStatus
    previous_status: HypStatus | None
    n_hypotheses: int


def _record_hypothesis(ws: Workspace, inp: HypothesisInput) -> tuple[int, HypStatus | None, int]:
    lines = ws.read_jsonl(HYPOTHESES)
    mine = [h for h in lines if h.get("id") == inp.hypothesis_id]
    version = len(mine) + 1
    previous: HypStatus | None = mine[-1].get("status") if mine else None
    ws.append_jsonl(HYPOTHESES, {
        "id": inp.hypothesis_id, "version": version, "statement": inp.statement, "status": inp.status,
        "evidence": list(inp.evidence), "ts": now_iso(),
    })
    change = f"{previous} -> {inp.status}" if previous else inp.status
    evidence = "".join(f"\n- {e}" for e in inp.evidence)
    ws.append_log(f"Hypothesis {inp.hypothesis_id} ({change})", f"{inp.statement}\n{evidence}\n")
    n = len({h.get("id") for h in lines} | {inp.hypothesis_id})
    return version, previous, n


async def record_hypothesis(state: AppState, inp: HypothesisInput, ctx: Context) -> HypothesisResult:
    ws = state.require_workspace()
    version, previous, n = await state.run_io(_record_hypothesis, ws, inp)
    verb = "Added" if version == 1 else f"Updated (version {version})"
    return HypothesisResult(
        summary=f"{verb} hypothesis {inp.hypothesis_id}, status {inp.status}; {n} hypotheses recorded.",
        hypothesis_id=inp.hypothesis_id, version=version, status=inp.status, previous_status=previous, n_hypotheses=n,
    )


# --- save_explanation ------------------------------------------------------------------------------


class ComponentRole(Input):
    component: str = Field(max_length=200, description="component key '<layer>:<c>', e.g. '1.mlp.up:17'")
    role: str = Field(min_length=1, max_length=1000, description="what it does in this behaviour")
    interpretation: str = Field("", max_length=2000, description="what the component represents in general, if known")


class EvidenceItem(Input):
    kind: Literal["ablation", "attribution", "activation_pattern", "steering", "edit", "correlation", "other"] = Field(
        description="what kind of experiment this evidence comes from"
    )
    description: str = Field(min_length=1, max_length=2000, description="what was observed, with numbers")
    reference: str = Field("", max_length=200, description="a graph_id, job_id or artifact id this rests on")


class ExplanationInput(Input):
    subject_prompt: str = Field(min_length=1, max_length=5000, description="the prompt whose behaviour is explained")
    behaviour: str = Field(min_length=1, max_length=2000, description="the behaviour, e.g. 'predicts Paris after capital of France'")
    explanation: str = Field(min_length=1, max_length=20000, description="the mechanism in plain words")
    components: list[ComponentRole] = Field(min_length=1, max_length=64, description="components involved, each with its role")
    evidence: list[EvidenceItem] = Field(default_factory=list, max_length=64, description="experiments supporting it")
    validation_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(
        default_factory=list, max_length=20,
        description="validate_claim results this rests on; each must have measured exactly these components",
    )
    claims: list[Claim] = Field(
        default_factory=lambda: ["necessary", "specific"], min_length=1, max_length=3,
        description="what the explanation asserts of the set: necessary, sufficient, specific",
    )
    confidence: Literal["high", "medium", "low"] | None = Field(
        None, description="ignored for the verdict: the stored confidence follows from the cited validations"
    )
    alternatives: list[Annotated[str, Field(max_length=2000)]] = Field(default_factory=list, max_length=20, description="alternative explanations considered")
    limitations: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list, max_length=20, description="what the evidence does not show"
    )


class ExplanationResult(Wire):
    summary: str
    explanation_index: int = Field(description="0-based line number in explanations.jsonl")
    components: list[str] = Field(description="the component keys, in canonical form")
    status: Literal["supported", "refuted", "inconclusive", "unvalidated"] = Field(
        description="from the cited validations: refuted if a claimed property fails, supported if all hold"
    )
    confidence: Literal["high", "medium", "low"]


def _save_explanation(ws: Workspace, record: dict) -> int:
    index = len(ws.read_jsonl(EXPLANATIONS))
    ws.append_jsonl(EXPLANATIONS, record)
    return index


async def save_explanation(state: AppState, inp: ExplanationInput, ctx: Context) -> ExplanationResult:
    ws = state.require_workspace()
    layer_c = state.layer_c()
    keys, problems = [], []
    for item in inp.components:
        try:
            keys.append(str(parse_component_key(item.component, layer_c)))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("; ".join(problems))
    validations = [await state.store.get_validation(v) for v in inp.validation_ids]
    for vid, v in zip(inp.validation_ids, validations, strict=True):
        if sorted(v["components"]) != sorted(keys):
            raise ValueError(f"validation {vid} measured {sorted(v['components'])}, not this explanation's components "
                             f"{sorted(keys)}: validate exactly the set you explain")
    judged = judge_claims(inp.claims, validations)
    record = {**inp.model_dump(mode="json"), "ts": now_iso(), "agent": state.config.agent_id,
              "agent_confidence": inp.confidence, "confidence": judged.confidence, "status": judged.status,
              "verdict": judged.reasons,
              "validations": [{"validation_id": vid, **{k: v.get(k) for k in _VALIDATION_KEYS}}
                              for vid, v in zip(inp.validation_ids, validations, strict=True)]}
    for item, key in zip(record["components"], keys, strict=True):
        item["component"] = key
    index = await state.run_io(_save_explanation, ws, record)
    return ExplanationResult(
        summary=f"Saved explanation #{index} of '{inp.behaviour[:80]}' with {len(keys)} components: {judged.status} "
        f"({'; '.join(judged.reasons)}), confidence {judged.confidence}.",
        explanation_index=index, components=keys, status=judged.status, confidence=judged.confidence,
    )


_VALIDATION_KEYS = ("behaviour", "necessity", "sufficiency", "specificity", "sufficient_alone", "robust_to_adversary",
                    "n_examples", "n_controls", "regimes", "summary")


# --- set_investigation_summary ---------------------------------------------------------------------


class SummaryInput(Input):
    title: str = Field(min_length=1, max_length=200, description="short title of the investigation")
    summary: str = Field(min_length=1, max_length=20000, description="what was found, in a paragraph or two")
    status: Literal["in_progress", "completed", "inconclusive"] = Field("in_progress", description="in_progress, completed or inconclusive")


class SummaryResult(Wire):
    summary: str
    path: str
    status: str
    updated_at: str


async def set_investigation_summary(state: AppState, inp: SummaryInput, ctx: Context) -> SummaryResult:
    ws = state.require_workspace()
    updated = now_iso()
    await state.run_io(ws.write_json, SUMMARY, {"title": inp.title, "summary": inp.summary, "status": inp.status, "updated_at": updated})
    return SummaryResult(summary=f"summary.json now says '{inp.title}' ({inp.status}).", path=SUMMARY, status=inp.status, updated_at=updated)


# --- save_graph_artifact ---------------------------------------------------------------------------


class GraphArtifactInput(Input):
    graph_id: int = Field(ge=1, le=2**53 - 1, description="a graph_id returned by get_attributions or optimize_circuit")
    artifact_id: SafeId | None = Field(None, description=f"file name stem; default 'graph_<graph_id>'. {ID_RULE}", json_schema_extra=_ID_SCHEMA)
    min_ci: float = Field(0.0, ge=0, le=1, description="keep only nodes with causal importance ≥ this")
    max_edges: int = Field(200, ge=1, le=5000, description="keep at most this many edges, largest |value| first")
    caption: str = Field("", max_length=500, description="title drawn on the SVG and used as the image alt text")


class GraphArtifactResult(Wire):
    summary: str
    artifact_id: str
    json_path: str
    svg_path: str
    n_nodes: int
    n_edges: int
    n_edges_total: int
    markdown: str = Field(description="paste into update_research_log to embed the drawing")


def _write_artifact(ws: Workspace, artifact_id: str, payload: dict, svg: str) -> None:
    text = json.dumps(payload, indent=1, ensure_ascii=False, allow_nan=False)
    ws.write_artifacts(artifact_id, {".json": text, ".svg": svg})


def _promoted_tokens(state: AppState, sel: GraphSelection) -> dict[str, str | None]:
    """'<layer>:<c>' -> the token its write vector promotes most, for every component node drawn."""
    model = state.run.model
    keys = sorted({(n.layer, n.c) for n in sel.nodes if n.ci is not None and n.layer in model.layers})
    out: dict[str, str | None] = {}
    for layer, c in keys:
        top = top_promoted_token(model, layer, c) if state.run.is_lm else None
        out[f"{layer}:{c}"] = None if top is None else state.tok.display(top)
    return out


async def save_graph_artifact(state: AppState, inp: GraphArtifactInput, ctx: Context) -> GraphArtifactResult:
    ws = state.require_workspace()
    graph = StoredGraph.model_validate(await state.store.get_graph(inp.graph_id))
    artifact_id = inp.artifact_id or f"graph_{inp.graph_id}"
    sel = select(graph, inp.min_ci, inp.max_edges)
    promotes = await state.device.call("save_graph_artifact", lambda: _promoted_tokens(state, sel))
    payload = artifact_payload(graph, sel, inp.graph_id, artifact_id, inp.caption, promotes)
    svg = render_svg(graph, sel, inp.caption or f"graph {inp.graph_id}", promotes)
    await state.run_io(_write_artifact, ws, artifact_id, payload, svg)
    return GraphArtifactResult(
        summary=f"Saved graph {inp.graph_id} as artifacts/{artifact_id}.json and .svg: {len(sel.nodes)} nodes, "
        f"{len(sel.edges)} of {sel.n_edges_total} edges.",
        artifact_id=artifact_id, json_path=f"artifacts/{artifact_id}.json", svg_path=f"artifacts/{artifact_id}.svg",
        n_nodes=len(sel.nodes), n_edges=len(sel.edges), n_edges_total=sel.n_edges_total,
        markdown=markdown_snippet(artifact_id, inp.caption),
    )


_NEEDS_WS = " Needs the server to run with --workspace."
TOOLS = [
    ToolSpec(
        name="update_research_log",
        title="Append to the research log",
        description=(
            "Append markdown to research_log.md under a timestamped heading: your running notes. "
            "Needs --workspace. Example: update_research_log(heading='ablation', "
            "markdown='Removing 1.mlp.up:17 drops p(Paris) 0.81 -> 0.07.')."
        ),
        input_model=LogInput, result_model=LogResult, handler=update_research_log, read_only=False,
    ),
    ToolSpec(
        name="record_hypothesis",
        title="Record or update a hypothesis",
        description=(
            "Add or update a hypothesis (status and evidence from tool results) in "
            "hypotheses.jsonl, noted in the research log. Needs --workspace. Example: "
            "record_hypothesis(hypothesis_id='h1', statement='1.mlp.up:17 copies the subject', "
            "status='supported')."
        ),
        input_model=HypothesisInput, result_model=HypothesisResult, handler=record_hypothesis, read_only=False,
    ),
    ToolSpec(
        name="save_explanation",
        title="Save an explanation",
        description=(
            "Append an explanation (behaviour, components with roles, evidence, alternatives, "
            "limitations) to explanations.jsonl, resting on validate_claim results (validation_ids) "
            "of these components: its status and confidence follow from them (unvalidated without "
            "one). Needs --workspace. Example: save_explanation(subject_prompt='The capital of France "
            "is', behaviour='predicts Paris', explanation='...', components=[{'component': "
            "'1.mlp.up:17', 'role': 'recalls'}], validation_ids=[3], claims=['necessary'])."
        ),
        input_model=ExplanationInput, result_model=ExplanationResult, handler=save_explanation, read_only=False,
    ),
    ToolSpec(
        name="set_investigation_summary",
        title="Set the investigation summary",
        description=(
            "Write summary.json (title, summary, status), replacing the previous one; update it "
            "as you go. Needs --workspace. Example: set_investigation_summary(title='Capital "
            "recall', summary='...', status='completed')."
        ),
        input_model=SummaryInput, result_model=SummaryResult, handler=set_investigation_summary,
        read_only=False, destructive=True, idempotent=True,
    ),
    ToolSpec(
        name="save_graph_artifact",
        title="Save a graph as an artifact",
        description=(
            "Save a stored graph as artifacts/<id>.json and a drawing artifacts/<id>.svg; returns "
            "markdown to embed in the log. Needs --workspace. Example: "
            "save_graph_artifact(graph_id=3, min_ci=0.1)."
        ),
        input_model=GraphArtifactInput, result_model=GraphArtifactResult, handler=save_graph_artifact,
        read_only=False, idempotent=True,
    ),
]
