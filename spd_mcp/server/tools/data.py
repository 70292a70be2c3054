"""Harvest-backed tools: get_component_info, get_activation_examples, search_dataset, get_dataset_attributions."""

from typing import Any, Literal

import torch
from mcp.server.mcpserver import Context
from pydantic import Field

from spd_core.analysis.readout import write_vector_logits
from spd_core.harvest_store import (
    HarvestStore,
    activation_examples,
    component_summary,
    dataset_attributions,
    harvest_path,
    search_texts,
)
from spd_core.keys import parse_component_key
from spd_mcp.server.schemas import Input, Wire
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import ToolSpec

COMPONENT = Field(description="component key '<layer>:<c>' (layers from get_model_info)", max_length=200,
                  examples=["0.mlp.up:3"])


def _store(state: AppState) -> HarvestStore:
    path = state.run.path
    if path is None or not harvest_path(path).is_file():
        where = str(path) if path is not None else "RUN"
        raise ValueError(
            f"run {state.run.name!r} has no harvest data (harvest.sqlite); it must be created first with "
            f"`spd-harvest {where} --texts FILE` (one text per line), then restart the server"
        )
    return HarvestStore(path)


def _token(state: AppState, token_id: int) -> str:
    return state.tok.display(token_id) if state.run.is_lm else str(token_id)


# --- get_component_info ----------------------------------------------------------------------------


class ComponentInfoInput(Input):
    component: str = COMPONENT
    top_k: int = Field(10, ge=1, le=50, description="how many tokens / co-firing components per list")
    order: Literal["pmi", "precision", "recall", "count"] = Field(
        "pmi", description="how to rank input/output tokens: pmi, precision (share of the token's occurrences on "
        "which it fires), recall (share of its firings on the token) or count",
    )
    min_count: int = Field(2, ge=1, le=10000, description="ignore tokens seen together with a firing fewer times")


class TokenStatRow(Wire):
    token: str
    token_id: int
    count: int = Field(description="firings on (input) or before (output) this token")
    recall: float = Field(description="share of the component's firings with this token, 0-1")
    precision: float = Field(description="share of this token's occurrences on which the component fires, 0-1")
    pmi: float = Field(description="pointwise mutual information in nats")


class TokenLogit(Wire):
    token: str
    token_id: int
    logit: float = Field(description="direct logit change per unit of inner activation")


class CoFiringRow(Wire):
    component: str
    count: int = Field(description="tokens on which both fire")
    jaccard: float = Field(description="count / tokens on which either fires, 0-1")


class ComponentInfo(Wire):
    summary: str
    component: str
    layer: str
    c: int
    read_norm: float = Field(description="norm of the read vector V[:, c]")
    write_norm: float = Field(description="norm of the write vector U[c]")
    has_harvest: bool
    n_firing: int | None = Field(description="harvested tokens with CI above the harvest threshold")
    density: float | None = Field(description="firing density: n_firing / harvested tokens, 0-1")
    mean_ci: float | None
    max_ci: float | None
    harvest_threshold: float | None
    input_tokens: list[TokenStatRow] = Field(description="tokens at which it fires")
    output_tokens: list[TokenStatRow] = Field(description="tokens that follow where it fires")
    promotes: list[TokenLogit] = Field(description="tokens its write vector raises through the unembedding")
    suppresses: list[TokenLogit] = Field(description="tokens its write vector lowers through the unembedding")
    readout_method: str = Field(description="how promotes/suppresses were computed, or why they are empty")
    cofiring: list[CoFiringRow]
    label: str | None


@torch.no_grad()
def _model_part(state: AppState, layer: str, c: int, top_k: int) -> dict[str, Any]:
    model = state.run.model
    comp = model.comp(layer)
    out: dict[str, Any] = {
        "read_norm": float(comp.V[:, c].detach().norm()), "write_norm": float(comp.U[c].detach().norm()),
    }
    r = write_vector_logits(model, layer, c)
    out["readout_method"], out["promotes"], out["suppresses"] = r.method, [], []
    if r.logits is not None and state.run.is_lm:
        k = min(top_k, r.logits.numel())
        hi, lo = r.logits.topk(k), (-r.logits).topk(k)
        out["promotes"] = [(int(i), float(v)) for v, i in zip(hi.values, hi.indices, strict=True)]
        out["suppresses"] = [(int(i), -float(v)) for v, i in zip(lo.values, lo.indices, strict=True)]
    return out


async def get_component_info(state: AppState, inp: ComponentInfoInput, ctx: Context) -> ComponentInfo:
    key = parse_component_key(inp.component, state.layer_c())
    part = await state.device.call("get_component_info", lambda: _model_part(state, key.layer, key.c, inp.top_k))
    has = state.run.path is not None and harvest_path(state.run.path).is_file()
    s: dict[str, Any] = {}
    if has:
        s = await state.run_io(lambda: component_summary(_store(state), key.layer, key.c, inp.top_k, inp.order, inp.min_count))

    def rows(side: str) -> list[TokenStatRow]:
        return [TokenStatRow(token=_token(state, r["token_id"]), token_id=r["token_id"], count=r["count"],
                             recall=r["recall"], precision=r["precision"], pmi=r["pmi"]) for r in s.get(side, [])]

    promotes = [TokenLogit(token=_token(state, i), token_id=i, logit=v) for i, v in part["promotes"]]
    suppresses = [TokenLogit(token=_token(state, i), token_id=i, logit=v) for i, v in part["suppresses"]]
    ins, outs = rows("input_tokens"), rows("output_tokens")
    text = f"Component {key}: read norm {part['read_norm']:.3g}, write norm {part['write_norm']:.3g}. "
    if has:
        text += (f"Fires (CI > {s['threshold']}) on {s['density']:.2%} of {s['n_tokens']} harvested tokens, mean CI "
                 f"{s['mean_ci']:.3g}. ")
        if ins:
            text += "Top input tokens: " + ", ".join(f"{r.token!r}" for r in ins[:5]) + ". "
        if outs:
            text += "Top next tokens: " + ", ".join(f"{r.token!r}" for r in outs[:5]) + ". "
    else:
        text += "No harvest data for this run (run `spd-harvest RUN --texts FILE`): only model-derived fields. "
    if promotes:
        text += "Write vector promotes " + ", ".join(f"{t.token!r}" for t in promotes[:5]) + "."
    else:
        text += f"No direct logit readout ({part['readout_method']})."
    return ComponentInfo(
        summary=text, component=str(key), layer=key.layer, c=key.c, read_norm=part["read_norm"],
        write_norm=part["write_norm"], has_harvest=has, n_firing=s.get("n_firing"), density=s.get("density"),
        mean_ci=s.get("mean_ci"), max_ci=s.get("max_ci"), harvest_threshold=s.get("threshold"),
        input_tokens=ins, output_tokens=outs, promotes=promotes, suppresses=suppresses,
        readout_method=part["readout_method"],
        cofiring=[CoFiringRow(component=f"{r['layer']}:{r['c']}", count=r["count"], jaccard=r["jaccard"])
                  for r in s.get("cofiring", [])],
        label=s.get("label"),
    )


# --- get_activation_examples -----------------------------------------------------------------------


class ExamplesInput(Input):
    component: str = COMPONENT
    limit: int = Field(5, ge=1, le=50, description="examples per page")
    offset: int = Field(0, ge=0, le=100000, description="skip this many examples (largest CI first)")


class ActivationExample(Wire):
    text_id: int = Field(description="id of the harvested text")
    position: int = Field(description="token position of the peak CI in the text")
    max_ci: float
    window_start: int = Field(description="token position in the text of tokens[0]")
    tokens: list[str]
    token_ids: list[int]
    ci: list[float] = Field(description="the component's CI on each token of the window, 0-1")


class ExamplesResult(Wire):
    summary: str
    component: str
    total: int
    offset: int
    limit: int
    examples: list[ActivationExample]


async def get_activation_examples(state: AppState, inp: ExamplesInput, ctx: Context) -> ExamplesResult:
    key = parse_component_key(inp.component, state.layer_c())
    page = await state.run_io(lambda: activation_examples(_store(state), key.layer, key.c, inp.limit, inp.offset))
    examples = [
        ActivationExample(text_id=e["text_id"], position=e["pos"], max_ci=e["max_ci"], window_start=e["start"],
                          tokens=[_token(state, t) for t in e["token_ids"]], token_ids=e["token_ids"], ci=e["ci"])
        for e in page.items
    ]
    if not page.total:
        text = f"{key} never fires above the harvest threshold in the harvested texts."
    else:
        shown = "; ".join(
            "".join(f"[[{t}]]" if i + ex.window_start == ex.position else t for i, t in enumerate(ex.tokens)) + f" (CI {ex.max_ci:.2f})"
            for ex in examples[:3]
        )
        text = f"{page.total} top contexts stored for {key}; showing {len(examples)} from offset {page.offset}. Peak token in [[ ]]: {shown}"
    return ExamplesResult(summary=text, component=str(key), total=page.total, offset=page.offset, limit=page.limit,
                          examples=examples)


# --- search_dataset --------------------------------------------------------------------------------


class SearchInput(Input):
    query: str = Field(description="text to find (case-insensitive substring)", min_length=1, max_length=500,
                       examples=["capital of"])
    limit: int = Field(10, ge=1, le=100, description="matches per page")
    offset: int = Field(0, ge=0, le=1000000, description="skip this many matches")


class SearchMatch(Wire):
    text_id: int
    char_offset: int = Field(description="character offset of the match in the text")
    snippet: str = Field(description="the match with up to 60 characters of context each side")
    snippet_offset: int = Field(description="character offset of the match in the snippet")


class SearchResult(Wire):
    summary: str
    total: int
    offset: int
    limit: int
    matches: list[SearchMatch]


async def search_dataset(state: AppState, inp: SearchInput, ctx: Context) -> SearchResult:
    page = await state.run_io(lambda: search_texts(_store(state), inp.query, inp.limit, inp.offset))
    matches = [SearchMatch(**m) for m in page.items]
    text = f"{page.total} occurrences of {inp.query!r} in the harvested texts; showing {len(matches)} from offset {inp.offset}."
    if matches:
        text += " First: " + repr(matches[0].snippet)
    return SearchResult(summary=text, total=page.total, offset=inp.offset, limit=inp.limit, matches=matches)


# --- get_dataset_attributions ----------------------------------------------------------------------


class DatasetAttrInput(Input):
    component: str = COMPONENT
    top_k: int = Field(10, ge=1, le=100, description="sources and targets to return")
    sign: Literal["abs", "positive", "negative"] = Field(
        "abs", description="rank by |value| (abs), largest positive, or most negative summed attribution"
    )


class AttrRow(Wire):
    component: str
    value: float = Field(description="raw signed sum over the corpus of gradient x activation one-hop edges")
    normalised: float = Field(description="value / total |value| flowing into the edge's target component")
    abs_value: float = Field(description="sum of |edge| over the corpus")
    count: int = Field(description="number of (text, position pair) edges summed")


class DatasetAttrResult(Wire):
    summary: str
    component: str
    sources: list[AttrRow] = Field(description="components that feed this one")
    targets: list[AttrRow] = Field(description="components this one feeds")


async def get_dataset_attributions(state: AppState, inp: DatasetAttrInput, ctx: Context) -> DatasetAttrResult:
    key = parse_component_key(inp.component, state.layer_c())
    res = await state.run_io(lambda: dataset_attributions(_store(state), key.layer, key.c, inp.top_k, inp.sign))

    def rows(items: list[dict[str, Any]]) -> list[AttrRow]:
        return [AttrRow(component=f"{r['layer']}:{r['c']}", value=r["value"], normalised=r["normalised"],
                        abs_value=r["abs_value"], count=r["count"]) for r in items]

    src, tgt = rows(res["sources"]), rows(res["targets"])

    def fmt(rs: list[AttrRow]) -> str:
        return ", ".join(f"{r.component} ({r.normalised:+.2f})" for r in rs[:5]) or "none"

    return DatasetAttrResult(
        summary=f"Across the harvested texts, {key} is fed most by {fmt(src)} and feeds {fmt(tgt)} "
        f"(ranked by {inp.sign}; normalised shares of the target's total input).",
        component=str(key), sources=src, targets=tgt,
    )


TOOLS = [
    ToolSpec(
        name="get_component_info",
        title="What is this component?",
        description=(
            "What is this component? Its vector norms, the tokens its write vector promotes and "
            "suppresses, and from the harvest: firing density, mean CI, top input and output "
            "tokens, co-firing components, label. Instant. Example: "
            "get_component_info(component='0.mlp.up:3')."
        ),
        input_model=ComponentInfoInput, result_model=ComponentInfo, handler=get_component_info,
        read_only=True, idempotent=True,
    ),
    ToolSpec(
        name="get_activation_examples",
        title="Where does it fire in the data?",
        description=(
            "Show me where this component fires in the data: harvested contexts, largest CI "
            "first, with the CI on every token. Needs harvest data. Instant. Example: "
            "get_activation_examples(component='0.mlp.up:3', limit=5)."
        ),
        input_model=ExamplesInput, result_model=ExamplesResult, handler=get_activation_examples,
        read_only=True, idempotent=True,
    ),
    ToolSpec(
        name="search_dataset",
        title="Search the run's texts",
        description=(
            "Where in the run's own data does this text occur? Case-insensitive substring search "
            "over the harvested texts. Instant. Example: search_dataset(query='capital of')."
        ),
        input_model=SearchInput, result_model=SearchResult, handler=search_dataset,
        read_only=True, idempotent=True,
    ),
    ToolSpec(
        name="get_dataset_attributions",
        title="What feeds this component across the data?",
        description=(
            "Across the data, what feeds this component and what does it feed? Top source and "
            "target components by summed attribution over the harvested texts. Needs harvest "
            "data. Instant. Example: get_dataset_attributions(component='1.mlp.down:2', "
            "sign='positive')."
        ),
        input_model=DatasetAttrInput, result_model=DatasetAttrResult, handler=get_dataset_attributions,
        read_only=True, idempotent=True,
    ),
]

