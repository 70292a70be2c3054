"""Records of the investigation: research log, hypotheses, explanations, summary, graph
artifacts."""

from typing import Annotated, Literal

from pydantic import Field

from spd_mcp.contract.ids import ID_RULE, ID_SCHEMA, SafeId
from spd_mcp.contract.spec import ToolContract
from spd_mcp.contract.wire import Input, Wire

Claim = Literal["necessary", "sufficient", "specific"]  # what an explanation may assert of its set


class LogInput(Input):
    markdown: str = Field(
        min_length=1,
        max_length=50000,
        description="markdown to append (findings, tables, artifact snippets)",
    )
    heading: str = Field(
        "note",
        max_length=200,
        description="short title of this entry; a UTC timestamp is prepended",
    )


class LogResult(Wire):
    summary: str
    path: str
    heading: str
    log_bytes: int


HypStatus = Literal["proposed", "supported", "refuted", "inconclusive"]


class HypothesisInput(Input):
    hypothesis_id: SafeId = Field(
        description=f"your id for the hypothesis; {ID_RULE}",
        json_schema_extra=ID_SCHEMA,
        examples=["h1"],
    )
    statement: str = Field(
        min_length=1, max_length=5000, description="the claim, falsifiable, in one or two sentences"
    )
    status: HypStatus = Field(
        "proposed", description="proposed, supported, refuted or inconclusive"
    )
    evidence: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list,
        max_length=50,
        description="references to tool results backing the status, e.g. 'ablate j4: removing "
        "1.mlp.up:17 drops p(Paris) 0.8->0.1'",
    )


class HypothesisResult(Wire):
    summary: str
    hypothesis_id: str
    version: int = Field(description="1 for a new hypothesis, +1 per update")
    status: HypStatus
    previous_status: HypStatus | None
    n_hypotheses: int


class ComponentRole(Input):
    component: str = Field(
        max_length=200, description="component key '<layer>:<c>', e.g. '1.mlp.up:17'"
    )
    role: str = Field(min_length=1, max_length=1000, description="what it does in this behaviour")
    interpretation: str = Field(
        "", max_length=2000, description="what the component represents in general, if known"
    )


class EvidenceItem(Input):
    kind: Literal[
        "ablation", "attribution", "activation_pattern", "steering", "edit", "correlation", "other"
    ] = Field(description="what kind of experiment this evidence comes from")
    description: str = Field(
        min_length=1, max_length=2000, description="what was observed, with numbers"
    )
    reference: str = Field(
        "", max_length=200, description="a graph_id, job_id or artifact id this rests on"
    )


class ExplanationInput(Input):
    subject_prompt: str = Field(
        min_length=1, max_length=5000, description="the prompt whose behaviour is explained"
    )
    behaviour: str = Field(
        min_length=1,
        max_length=2000,
        description="the behaviour, e.g. 'predicts Paris after capital of France'",
    )
    explanation: str = Field(
        min_length=1, max_length=20000, description="the mechanism in plain words"
    )
    components: list[ComponentRole] = Field(
        min_length=1, max_length=1000, description="components involved, each with its role"
    )
    evidence: list[EvidenceItem] = Field(
        default_factory=list, max_length=64, description="experiments supporting it"
    )
    validation_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(
        default_factory=list,
        max_length=20,
        description="validate_claim results this rests on; each must have measured exactly these "
        "components",
    )
    claims: list[Claim] = Field(
        default_factory=lambda: ["necessary", "specific"],
        min_length=1,
        max_length=3,
        description="what the explanation asserts of the set: necessary, sufficient, specific",
    )
    confidence: Literal["high", "medium", "low"] | None = Field(
        None,
        description="ignored for the verdict: the stored confidence follows from the cited "
        "validations",
    )
    alternatives: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list, max_length=20, description="alternative explanations considered"
    )
    limitations: list[Annotated[str, Field(max_length=2000)]] = Field(
        default_factory=list, max_length=20, description="what the evidence does not show"
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
    title: str = Field(min_length=1, max_length=200, description="short title of the investigation")
    summary: str = Field(
        min_length=1, max_length=20000, description="what was found, in a paragraph or two"
    )
    status: Literal["in_progress", "completed", "inconclusive"] = Field(
        "in_progress", description="in_progress, completed or inconclusive"
    )


class SummaryResult(Wire):
    summary: str
    path: str
    status: str
    updated_at: str


class GraphArtifactInput(Input):
    graph_id: int = Field(
        ge=1,
        le=2**53 - 1,
        description="a graph_id returned by get_attributions or optimize_circuit",
    )
    artifact_id: SafeId | None = Field(
        None,
        description=f"file name stem; default 'graph_<graph_id>'. {ID_RULE}",
        json_schema_extra=ID_SCHEMA,
    )
    min_ci: float = Field(
        0.0, ge=0, le=1, description="keep only nodes with causal importance ≥ this"
    )
    max_edges: int = Field(
        200, ge=1, le=5000, description="keep at most this many edges, largest |value| first"
    )
    caption: str = Field(
        "", max_length=500, description="title drawn on the SVG and used as the image alt text"
    )


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
            "Append markdown to research_log.md under a timestamped heading: your running notes. "
            "Needs --workspace. Example: update_research_log(heading='ablation', "
            "markdown='Removing 1.mlp.up:17 drops p(Paris) 0.81 -> 0.07.')."
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
            "Add or update a hypothesis (status and evidence from tool results) in "
            "hypotheses.jsonl, noted in the research log. Needs --workspace. Example: "
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
            "Append an explanation (behaviour, components with roles, evidence, alternatives, "
            "limitations) to explanations.jsonl, resting on validate_claim results "
            "(validation_ids) "
            "of these components: its status and confidence follow from them (unvalidated without "
            "one). Needs --workspace. Example: save_explanation(subject_prompt='The capital of "
            "France "
            "is', behaviour='predicts Paris', explanation='...', components=[{'component': "
            "'1.mlp.up:17', 'role': 'recalls'}], validation_ids=[3], claims=['necessary'])."
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
            "Write summary.json (title, summary, status), replacing the previous one; update it "
            "as you go. Needs --workspace. Example: set_investigation_summary(title='Capital "
            "recall', summary='...', status='completed')."
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
            "Save a stored graph as artifacts/<id>.json and a drawing artifacts/<id>.svg; returns "
            "markdown to embed in the log. Needs --workspace. Example: "
            "save_graph_artifact(graph_id=3, min_ci=0.1)."
        ),
        input_model=GraphArtifactInput,
        result_model=GraphArtifactResult,
        read_only=False,
        idempotent=True,
    ),
)
