"""Records of the investigation: research log, hypotheses, explanations, summary, graph
artifacts."""

from typing import Annotated, Literal

from pydantic import Field

from spd_mcp.contract.ids import ID_SCHEMA, SafeId
from spd_mcp.contract.spec import ToolContract
from spd_mcp.contract.wire import Input, Wire

Claim = Literal["necessary", "sufficient", "specific"]  # what an explanation may assert of its set


class LogInput(Input):
    markdown: str = Field(min_length=1, max_length=50000)
    heading: str = Field("note", max_length=200)


class LogResult(Wire):
    summary: str
    path: str
    heading: str
    log_bytes: int


HypStatus = Literal["proposed", "supported", "refuted", "inconclusive"]


class HypothesisInput(Input):
    hypothesis_id: SafeId = Field(json_schema_extra=ID_SCHEMA)
    statement: str = Field(min_length=1, max_length=5000)
    status: HypStatus = "proposed"
    evidence: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list,
        max_length=50,
        description="tool results backing the status, e.g. 'ablate j4: p(Paris) 0.8->0.1'",
    )


class HypothesisResult(Wire):
    summary: str
    hypothesis_id: str
    version: int = Field(description="1 for a new hypothesis, +1 per update")
    status: HypStatus
    previous_status: HypStatus | None
    n_hypotheses: int


class ComponentRole(Input):
    component: str = Field(max_length=200)
    role: str = Field(min_length=1, max_length=1000)
    interpretation: str = Field("", max_length=2000)


class EvidenceItem(Input):
    kind: Literal[
        "ablation", "attribution", "activation_pattern", "steering", "edit", "correlation", "other"
    ]
    description: str = Field(min_length=1, max_length=2000)
    reference: str = Field("", max_length=200, description="a graph_id, job_id or artifact id")


class ExplanationInput(Input):
    subject_prompt: str = Field(min_length=1, max_length=5000)
    behaviour: str = Field(min_length=1, max_length=2000)
    explanation: str = Field(min_length=1, max_length=20000)
    components: list[ComponentRole] = Field(min_length=1, max_length=1000)
    evidence: list[EvidenceItem] = Field(default_factory=list, max_length=64)
    validation_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(
        default_factory=list,
        max_length=20,
        description="validate_claim results on exactly these components",
    )
    claims: list[Claim] = Field(
        default_factory=lambda: ["necessary", "specific"], min_length=1, max_length=3
    )
    confidence: Literal["high", "medium", "low"] | None = Field(
        None, description="ignored: set by the validations"
    )
    alternatives: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list, max_length=20
    )
    limitations: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list, max_length=20
    )


class ExplanationResult(Wire):
    summary: str
    explanation_index: int = Field(description="0-based line number in explanations.jsonl")
    components: list[str] = Field(description="the component keys, in canonical form")
    status: Literal["supported", "refuted", "inconclusive", "unvalidated"] = Field(
        description="from the cited validations: refuted if a claimed property fails, supported "
        "if all hold"
    )
    confidence: Literal["high", "medium", "low"]


class SummaryInput(Input):
    title: str = Field(min_length=1, max_length=200)
    summary: str = Field(min_length=1, max_length=20000)
    status: Literal["in_progress", "completed", "inconclusive"] = "in_progress"


class SummaryResult(Wire):
    summary: str
    path: str
    status: str
    updated_at: str


class GraphArtifactInput(Input):
    graph_id: int = Field(ge=1, le=2**53 - 1)
    artifact_id: SafeId | None = Field(
        None, description="default: graph_<graph_id>", json_schema_extra=ID_SCHEMA
    )
    min_ci: float = Field(0.0, ge=0, le=1)
    max_edges: int = Field(200, ge=1, le=5000)
    caption: str = Field("", max_length=500)


class GraphArtifactResult(Wire):
    summary: str
    artifact_id: str
    json_path: str
    svg_path: str
    n_nodes: int
    n_edges: int
    n_edges_total: int
    markdown: str = Field(description="paste into update_research_log to embed the drawing")


TOOLS = (
    ToolContract(
        name="update_research_log",
        group="records",
        title="Append to the research log",
        description=(
            "Append markdown to research_log.md under a timestamped heading. Example: "
            "update_research_log(heading='ablation', markdown='Removing 1.mlp.up:17 drops "
            "p(Paris) 0.81 -> 0.07.')."
        ),
        input_model=LogInput,
        result_model=LogResult,
        read_only=False,
    ),
    ToolContract(
        name="record_hypothesis",
        group="records",
        title="Record or update a hypothesis",
        description=(
            "Add or update a hypothesis in hypotheses.jsonl (noted in the log). Example: "
            "record_hypothesis(hypothesis_id='h1', statement='1.mlp.up:17 copies the subject', "
            "status='supported')."
        ),
        input_model=HypothesisInput,
        result_model=HypothesisResult,
        read_only=False,
    ),
    ToolContract(
        name="save_explanation",
        group="records",
        title="Save an explanation",
        description=(
            "Append an explanation to explanations.jsonl; its status and confidence follow from "
            "the cited validate_claim results. Example: save_explanation(subject_prompt='The "
            "capital of France is', behaviour='predicts Paris', explanation='...', "
            "components=[{'component': '1.mlp.up:17', 'role': 'recalls'}], validation_ids=[3])."
        ),
        input_model=ExplanationInput,
        result_model=ExplanationResult,
        read_only=False,
    ),
    ToolContract(
        name="set_investigation_summary",
        group="records",
        title="Set the investigation summary",
        description=(
            "Write summary.json, replacing the previous one; update it as you go. Example: "
            "set_investigation_summary(title='Capital recall', summary='...', "
            "status='completed')."
        ),
        input_model=SummaryInput,
        result_model=SummaryResult,
        read_only=False,
        destructive=True,
        idempotent=True,
    ),
    ToolContract(
        name="save_graph_artifact",
        group="records",
        title="Save a graph as an artifact",
        description=(
            "Save a stored graph as artifacts/<id>.json and .svg; returns markdown to embed in "
            "the log. Example: save_graph_artifact(graph_id=3, min_ci=0.1)."
        ),
        input_model=GraphArtifactInput,
        result_model=GraphArtifactResult,
        read_only=False,
        idempotent=True,
    ),
)
