"""Component tools: get_ci (which components matter here), probe_component (where one fires), find_components."""

from typing import Literal

from mcp.server.mcpserver import Context
from pydantic import Field, model_validator

from spd_core.analysis.ci import component_profile, compute_ci
from spd_core.analysis.circuits import CircuitConfig
from spd_core.analysis.finder import Example
from spd_core.analysis.finder import find_components as core_find_components
from spd_core.keys import parse_component_key, resolve_position
from spd_mcp.server.inputs import ModelInput, model_input, require_lm, target_token, text_input
from spd_mcp.server.schemas import Input, JobView, LongInput, Wire
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import ToolSpec
from spd_mcp.server.tools.jobs import run_as_job

TEXT_DESC = "language models: the text to analyse (no special tokens are added)"
FEATURES_DESC = "toy models only: the input feature vector (length input_dim from get_model_info)"
EDIT_DESC = "run under this edit (an edit_id from edit_component); omit for the base model"


class TextOrFeatures(Input):
    text: str | None = Field(None, max_length=20000, description=TEXT_DESC, examples=["The cat sat on the"])
    features: list[float] | None = Field(None, max_length=4096, description=FEATURES_DESC)

    @model_validator(mode="after")
    def _one_input(self) -> "TextOrFeatures":
        if (self.text is None) == (self.features is None):
            raise ValueError("give exactly one of 'text' (language models) or 'features' (toy models)")
        return self


# --- get_ci ----------------------------------------------------------------------------------------


class GetCIInput(TextOrFeatures):
    layers: list[str] | None = Field(None, max_length=200, description="only these layers (names from get_model_info); default all")
    position: int | None = Field(
        None, ge=-100000, le=100000, description="only this token position (0-based; negative counts from the end); default every position"
    )
    threshold: float = Field(0.1, ge=0.0, le=1.0, description="report components with CI above this (CI is in [0, 1])")
    top_k: int = Field(10, ge=1, le=1000, description="at most this many components per (position, layer), largest CI first")
    edit_id: str | None = Field(None, max_length=64, description=EDIT_DESC)
    offset: int = Field(0, ge=0, le=1_000_000, description="skip this many entries of the (position, layer, CI) ordered list")
    limit: int = Field(60, ge=1, le=500, description="return at most this many entries")


class CIEntry(Wire):
    node: str = Field(description="'<layer>:<pos>:<c>'")
    component: str = Field(description="'<layer>:<c>'")
    position: int
    token: str = Field(description="the input token at this position")
    ci: float = Field(description="causal importance in [0, 1]")
    inner_act: float = Field(description="the component's inner activation (input · read vector V[:, c])")


class CIResult(Wire):
    summary: str
    tokens: list[str]
    token_ids: list[int]
    positions: list[int] = Field(description="the positions reported")
    l0: dict[str, float] = Field(
        description="per layer, the number of components with CI > threshold, averaged over the reported positions"
    )
    total: int = Field(description="entries above threshold (after top_k per position and layer)")
    offset: int
    limit: int
    entries: list[CIEntry] = Field(description="ordered by position, then network layer order, then CI (largest first)")


def _compute_get_ci(state: AppState, inp: GetCIInput, mi: ModelInput) -> CIResult:
    model = state.run.model
    res = compute_ci(model, mi.x, state.edits.edit(inp.edit_id))
    layers = list(res.ci)
    if inp.layers is not None:
        unknown = [name for name in inp.layers if name not in res.ci]
        if unknown:
            raise ValueError(f"unknown layer(s) {', '.join(map(repr, unknown))}; valid layers: {', '.join(res.ci)}")
        layers = [name for name in layers if name in set(inp.layers)]
    seq = next(iter(res.ci.values())).shape[0]
    positions = list(range(seq))
    if inp.position is not None:
        positions = [resolve_position(inp.position, seq)]
    entries: list[CIEntry] = []
    l0: dict[str, float] = {}
    for pos in positions:
        for layer in layers:
            g, acts = res.ci[layer][pos], res.inner_acts[layer][pos]
            above = (g > inp.threshold).nonzero()[:, 0]
            order = above[g[above].argsort(descending=True)][: inp.top_k]
            for c in order.tolist():
                entries.append(CIEntry(
                    node=f"{layer}:{pos}:{c}", component=f"{layer}:{c}", position=pos, token=mi.tokens[pos],
                    ci=float(g[c]), inner_act=float(acts[c]),
                ))
    for layer in layers:
        g = res.ci[layer][positions]
        l0[layer] = float((g > inp.threshold).sum(-1).float().mean())
    page = entries[inp.offset : inp.offset + inp.limit]
    busiest = sorted(l0.items(), key=lambda kv: -kv[1])[:3]
    where = f"position {positions[0]} ({mi.tokens[positions[0]]!r})" if len(positions) == 1 else f"{len(positions)} positions"
    top = sorted(entries, key=lambda e: -e.ci)[:3]
    summary = (
        f"At {where}, {len(entries)} (position, component) entries have CI > {inp.threshold:g} in {len(layers)} layers"
        + ("; busiest layers by L0: " + ", ".join(f"{k} ({v:.1f})" for k, v in busiest) if busiest else "")
        + ("; largest CI: " + ", ".join(f"{e.node} ({e.ci:.2f})" for e in top) if top else "")
        + (f". Showing {len(page)} from offset {inp.offset}." if len(page) < len(entries) else ".")
    )
    return CIResult(
        summary=summary, tokens=mi.tokens, token_ids=mi.token_ids, positions=positions, l0=l0, total=len(entries),
        offset=inp.offset, limit=inp.limit, entries=page,
    )


async def get_ci(state: AppState, inp: GetCIInput, ctx: Context) -> CIResult:
    mi = model_input(state, inp.text, inp.features)
    state.edits.edit(inp.edit_id)  # unknown ids fail before any compute
    return await state.device.call("get_ci", lambda: _compute_get_ci(state, inp, mi))


# --- probe_component -------------------------------------------------------------------------------


class ProbeComponentInput(TextOrFeatures):
    component: str = Field(max_length=200, description="component key '<layer>:<c>', e.g. '0.mlp.up:3'")
    edit_id: str | None = Field(None, max_length=64, description=EDIT_DESC)
    offset: int = Field(0, ge=0, le=100_000, description="skip this many positions")
    limit: int = Field(200, ge=1, le=1000, description="return at most this many positions")


class TokenFiring(Wire):
    position: int
    token: str
    ci: float = Field(description="causal importance in [0, 1]")
    inner_act: float


class ProbeComponentResult(Wire):
    summary: str
    component: str
    max_ci: float
    argmax_ci: int = Field(description="position of the largest CI")
    max_abs_act: float
    argmax_abs_act: int
    total: int = Field(description="number of positions")
    offset: int
    limit: int
    positions: list[TokenFiring]


async def probe_component(state: AppState, inp: ProbeComponentInput, ctx: Context) -> ProbeComponentResult:
    key = parse_component_key(inp.component, state.layer_c())
    mi = model_input(state, inp.text, inp.features)
    edit = state.edits.edit(inp.edit_id)
    prof = await state.device.call(
        "probe_component", lambda: component_profile(state.run.model, mi.x, key.layer, key.c, edit)
    )
    rows = [
        TokenFiring(position=p, token=mi.tokens[p], ci=float(prof.ci[p]), inner_act=float(prof.inner_acts[p]))
        for p in range(prof.ci.shape[0])
    ]
    page = rows[inp.offset : inp.offset + inp.limit]
    firing = [r.position for r in rows if r.ci > 0.1]
    return ProbeComponentResult(
        summary=(
            f"{key} peaks at CI {prof.max_ci:.3f} at position {prof.argmax_ci} ({mi.tokens[prof.argmax_ci]!r}); "
            f"CI > 0.1 at {len(firing)} of {len(rows)} positions; largest |inner activation| {prof.max_abs_act:.3g} "
            f"at position {prof.argmax_abs_act}."
        ),
        component=str(key), max_ci=prof.max_ci, argmax_ci=prof.argmax_ci, max_abs_act=prof.max_abs_act,
        argmax_abs_act=prof.argmax_abs_act, total=len(rows), offset=inp.offset, limit=inp.limit, positions=page,
    )


# --- find_components -------------------------------------------------------------------------------


class ExampleInput(Input):
    text: str = Field(max_length=20000, description="the prompt", examples=["Paris is the capital of"])
    target_token: str = Field(max_length=200, description="the token the model should predict; must be exactly one token")
    position: int = Field(-1, ge=-100000, le=100000, description="position whose prediction it is (default: the last)")


class FindComponentsInput(LongInput):
    examples: list[ExampleInput] = Field(
        min_length=1, max_length=64, description="several prompts showing the same kind of prediction"
    )
    min_frequency: float = Field(0.7, gt=0.0, le=1.0, description="report components needed in at least this fraction of examples")
    method: Literal["circuit", "ci"] = Field(
        "circuit", description="'circuit': needed = in the optimised circuit of the prediction (slower, sharper); "
        "'ci': needed = natural CI above ci_threshold"
    )
    scope: Literal["position", "any"] = Field("position", description="count components at the prediction position, or at any position")
    ci_threshold: float = Field(0.0, ge=0.0, lt=1.0, description="a component counts when its CI is above this")
    steps: int = Field(100, ge=1, le=2000, description="circuit optimisation steps per example (method 'circuit')")
    sparsity: float = Field(0.1, ge=0.0, le=100.0, description="circuit sparsity coefficient (method 'circuit')")
    edit_id: str | None = Field(None, max_length=64, description=EDIT_DESC)
    limit: int = Field(100, ge=1, le=1000, description="return at most this many components")


class FoundRow(Wire):
    component: str
    frequency: float = Field(description="fraction of examples needing it, in [0, 1]")
    count: int


class FindComponentsResult(Wire):
    summary: str
    n_examples: int
    total: int
    offset: int
    limit: int
    components: list[FoundRow] = Field(description="most frequent first")
    per_example_sizes: list[int] = Field(description="number of needed components in each example")


async def find_components(state: AppState, inp: FindComponentsInput, ctx: Context) -> JobView:
    require_lm(state, "find_components")
    examples = [
        Example(text_input(state, e.text).x, target_token(state, e.target_token), e.position) for e in inp.examples
    ]
    for e, ex in zip(inp.examples, examples, strict=True):
        resolve_position(e.position, ex.tokens.shape[1])
    edit = state.edits.edit(inp.edit_id)
    config = CircuitConfig(steps=inp.steps, sparsity=inp.sparsity)

    def work(progress) -> object:
        return core_find_components(
            state.run.model, examples, inp.min_frequency, inp.method, inp.scope, inp.ci_threshold, config,
            progress=lambda i, n, size: progress(i, n, f"example {i}/{n}: {size:g} components needed"), edit=edit,
        )

    async def finish(raw) -> FindComponentsResult:
        rows = [FoundRow(component=str(f.key), frequency=f.frequency, count=f.count) for f in raw.components]
        page = rows[: inp.limit]
        return FindComponentsResult(
            summary=(
                f"{len(rows)} components are needed in ≥ {inp.min_frequency:.0%} of {raw.n_examples} examples "
                f"(method {inp.method}, scope {inp.scope})"
                + (": " + ", ".join(f"{r.component} ({r.frequency:.0%})" for r in page[:8]) if page else "")
                + "."
            ),
            n_examples=raw.n_examples, total=len(rows), offset=0, limit=inp.limit, components=page,
            per_example_sizes=[len(s) for s in raw.per_example],
        )

    return await run_as_job(state, ctx, "find_components", work, finish, inp.wait_s, inp.model_dump(mode="json"))


TOOLS = [
    ToolSpec(
        name="get_ci",
        title="Causal importance of components on an input",
        description=(
            "Which components matter on this input? Per position and layer, the components with "
            "causal importance (CI, 0-1) above 'threshold', and L0 per layer. Well under a "
            "second. Example: get_ci(text='The cat sat on the', position=-1, top_k=5)."
        ),
        input_model=GetCIInput, result_model=CIResult, handler=get_ci, read_only=True, idempotent=True,
    ),
    ToolSpec(
        name="probe_component",
        title="Where one component fires on a text",
        description=(
            "Where does this component fire on my text? Its CI and inner activation on every "
            "token. Well under a second. Example: probe_component(text='The cat sat on the mat', "
            "component='0.mlp.up:3')."
        ),
        input_model=ProbeComponentInput, result_model=ProbeComponentResult, handler=probe_component,
        read_only=True, idempotent=True,
    ),
    ToolSpec(
        name="find_components",
        title="Components consistently needed for a kind of prediction",
        description=(
            "Which components are consistently needed for this kind of prediction? Finds the "
            "components needed for each example (method 'circuit': optimised; 'ci': CI above "
            "ci_threshold) and returns those needed in at least min_frequency of them. A job. "
            "Language models only. Example: find_components(examples=[{'text': 'Paris is the "
            "capital of', 'target_token': ' France'}], min_frequency=0.5, method='ci')."
        ),
        input_model=FindComponentsInput, result_model=JobView, handler=find_components, read_only=True,
        idempotent=True,
    ),
]
