"""Circuit tools: get_attributions (one-hop signed edges, multi-hop influence) and optimize_circuit
(a job: one prompt, or one circuit shared by several prompts of a behaviour, validated on held-out
ones)."""

from typing import Literal

from pydantic import Field

from spd_mcp.contract.components import ExampleInput, TextOrFeatures
from spd_mcp.contract.spec import ToolContract
from spd_mcp.contract.validation import ClaimExample, ControlPrompt, ValidationResult
from spd_mcp.contract.wire import JobView, LongInput, Wire


class AttributionsInput(TextOrFeatures):
    target: str | None = Field(
        None,
        max_length=200,
        description=(
            "an output token at position, or a node key; default: the 3 likeliest next tokens"
        ),
    )
    position: int = Field(-1, ge=-100000, le=100000)
    threshold: float = Field(0.1, ge=0.0, le=1.0, description="CI above this makes a node")
    signed: bool = Field(True, description="false: rank edges by the sum of |grad x act| terms")
    top_k: int = Field(30, ge=1, le=500)
    multi_hop: bool = False
    node_limit: int = Field(40, ge=1, le=1000)
    edit_id: str | None = Field(None, max_length=64)


class NodeRow(Wire):
    node: str = Field(
        description="'<layer>:<pos>:<c>'; layer 'embed' (c=0) or 'output' (c=token id) for "
        "pseudo-nodes"
    )
    ci: float | None = Field(
        description="causal importance; for output nodes the token's probability; None for embed"
    )
    act: float = Field(description="inner activation, embedding norm, or logit")
    label: str | None = Field(description="the token of an embed or output node")


class EdgeRow(Wire):
    src: str
    tgt: str
    value: float = Field(
        description="signed attribution: gradient of tgt x activation of src (one hop)"
    )
    abs_value: float = Field(
        description="sum of |grad x act| terms (equals |value| except for embedding sources)"
    )


class InfluenceRow(Wire):
    node: str
    influence: float = Field(
        description="signed influence on the target through all paths (rows normalised to total "
        "|1|)"
    )
    direct: float = Field(description="the one-hop part")


class AttributionsResult(Wire):
    summary: str
    graph_id: int = Field(description="pass to save_graph_artifact to save and draw this graph")
    tokens: list[str]
    target: str | None = Field(
        description="the target node of multi_hop (and of the explained prediction)"
    )
    n_nodes: int
    n_edges: int = Field(description="non-zero edges in the graph")
    nodes: list[NodeRow]
    edges: list[EdgeRow] = Field(description="top_k edges, largest first")
    influence: list[InfluenceRow] | None = Field(
        description="with multi_hop: the top_k nodes by |influence| on the target"
    )


class LossSummary(Wire):
    first: float
    final: float
    min: float
    steps: int
    converged: bool = Field(
        description="one prompt: the last tenth of the trace varies by < 1%; several: the set of "
        "components did not change over the last tenth of the steps"
    )
    trace: list[float] = Field(description="at most 20 evenly spaced values of the loss")


class RegimeRow(Wire):
    mean_prob: float = Field(description="mean over prompts of p(target) at the prompt's position")
    accuracy: float = Field(
        description="share of prompts (and samples) where the target is strictly the most likely"
    )
    probs: list[float] = Field(description="per prompt, in order")
    correct: list[float] = Field(
        description="per prompt: share of samples with the target on top (0/1 if deterministic)"
    )


class RegimeBrief(Wire):
    mean_prob: float
    accuracy: float


class SharedComponent(Wire):
    component: str = Field(description="'<layer>:<c>'")
    gate: float = Field(
        description="optimised gate in (0, 1]: the component keeps at least gate x its CI"
    )


class SharedCircuitResult(Wire):
    summary: str
    circuit_id: int = Field(description="the stored circuit")
    mechanism: str | None = Field(description="the probe mechanism the prompts came from, if any")
    mask: str = Field(description="the masks it was optimised under")
    n_prompts: int = Field(description="prompts it was optimised on")
    n_candidates: int = Field(
        description="components with CI > 0 somewhere on them (the rest never enter)"
    )
    total: int = Field(description="components in the circuit")
    limit: int
    components: list[SharedComponent] = Field(description="largest gate first")
    l0: dict[str, int] = Field(description="circuit components per layer")
    regimes: dict[str, RegimeRow] = Field(
        description="the circuit on its own prompts: target (the model), stochastic (circuit in "
        "[CI, 1], the rest and the delta uniform in [0, 1]), adversarial (the same ranges, worst "
        "case), ci (circuit at its CI, rest "
        "off), alone (circuit at 1, rest off, no delta)"
    )
    full: dict[str, RegimeBrief] = Field(
        description="the same regimes with every component kept: the ceiling"
    )
    heldout: dict[str, RegimeRow] | None = Field(
        description="the circuit's regimes on the held-out prompts"
    )
    validation: ValidationResult | None = Field(
        description="the circuit validated on held-out prompts (as validate_claim; cite its "
        "validation_id)"
    )
    loss: LossSummary


class CircuitInput(LongInput):
    text: str | None = Field(None, max_length=20000)
    target_token: str | None = Field(None, max_length=200)
    position: int = Field(-1, ge=-100000, le=100000)
    prompts: list[ExampleInput] | None = Field(None, min_length=1, max_length=64)
    heldout_prompts: list[ClaimExample] | None = Field(
        None, max_length=200, description="with prompts: validate on these"
    )
    control_prompts: list[ControlPrompt] | None = Field(
        None, max_length=200, description="other behaviours, for specificity"
    )
    mechanism: str | None = Field(None, max_length=200)
    n_prompts: int = Field(16, ge=1, le=200)
    n_heldout: int = Field(32, ge=0, le=200, description="held-out probes to validate on (0: none)")
    steps: int = Field(200, ge=1, le=5000)
    sparsity: float | None = Field(
        None, ge=0.0, le=100.0, description="default 0.1 for one prompt, 0.003 for several"
    )
    loss: Literal["ce", "kl"] = "ce"
    mask: Literal["ci", "stochastic"] | None = Field(
        None, description="default 'ci' for one prompt, 'stochastic' for several"
    )
    adversarial_steps: int = Field(
        0, ge=0, le=100, description="PGD steps on the free masks per step"
    )
    lr: float = Field(0.1, gt=0.0, le=10.0)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    edit_id: str | None = Field(None, max_length=64)
    limit: int = Field(100, ge=1, le=1000)
    remove: bool = Field(
        False,
        description="with mechanism: a set whose removal breaks it, spares 1.5x n_prompts others",
    )
    exclude: list[str] = Field(default_factory=list, max_length=200, description="never used")


class CircuitNode(Wire):
    node: str = Field(description="'<layer>:<pos>:<c>'")
    token: str = Field(description="the input token at the node's position")
    ci: float = Field(description="optimised CI in (0, 1]")


class CircuitResult(Wire):
    summary: str
    graph_id: int = Field(
        description="the circuit's attribution graph (nodes = circuit); pass to save_graph_artifact"
    )
    target_token: str
    target_token_id: int
    position: int
    total: int = Field(description="circuit nodes")
    limit: int
    nodes: list[CircuitNode] = Field(description="largest CI first")
    l0: dict[str, int] = Field(description="circuit nodes per layer")
    probs: dict[str, float] = Field(
        description="probability of the target token under each regime: target, ci, stochastic, "
        "adversarial, unmasked"
    )
    loss: LossSummary


class RemovalResult(Wire):
    summary: str
    mechanism: str
    components: list[str] = Field(description="the set, the most surely removed first")
    n_examples: int
    n_controls: int
    kept_behaviour: float = Field(
        description="training number: mean share of p(target) kept with the set removed "
        "(deterministic) on the behaviour's probes it was optimised on (0: all broken)"
    )
    kept_others: float = Field(description="the same on the other behaviours' probes (1: spared)")
    loss: LossSummary
    validation: ValidationResult | None = Field(
        description="necessity and specificity on held-out probes, none of them optimised on"
    )


TOOLS = (
    ToolContract(
        name="get_attributions",
        group="circuits and attributions",
        title="Attribution graph of an input",
        description=(
            "How components feed each other and the output here: stores the one-hop attribution "
            "graph (gradient x activation); returns graph_id, nodes, top edges and, with "
            "multi_hop, each node's influence on the target. Example: "
            "get_attributions(text='Paris is the capital of', target=' France')."
        ),
        input_model=AttributionsInput,
        result_model=AttributionsResult,
        read_only=False,
    ),
    ToolContract(
        name="optimize_circuit",
        group="circuits and attributions",
        job_results=(CircuitResult, SharedCircuitResult, RemovalResult),
        title="Smallest circuit for a prediction",
        description=(
            "A job: the smallest component set that keeps a prediction, with the target's "
            "probability in every regime. One prompt (text, target_token): nodes and a graph_id. "
            "Several ('prompts' or a probe 'mechanism'): one set, validated on held-out prompts; "
            "remove=true: the set whose removal breaks the mechanism and spares the others. "
            "Example: optimize_circuit(mechanism='induction')."
        ),
        input_model=CircuitInput,
        result_model=JobView,
        read_only=False,
    ),
)
