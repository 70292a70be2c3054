"""Harvest-backed tools: get_component_info, get_activation_examples, search_dataset,
get_dataset_attributions."""

from typing import Any

import torch
from mcp.server.mcpserver import Context

from spd_core.analysis.readout import write_vector_logits
from spd_core.harvest_store import (
    HarvestStore,
    activation_examples,
    component_summary,
    dataset_attributions,
    harvest_path,
    search_texts,
)
from spd_core.keys import ComponentKey, parse_component_key
from spd_mcp.contract import data as contract
from spd_mcp.contract.data import (
    ActivationExample,
    AttrRow,
    CoFiringRow,
    ComponentInfo,
    ComponentInfoInput,
    DatasetAttrInput,
    DatasetAttrResult,
    ExamplesInput,
    ExamplesResult,
    SearchInput,
    SearchMatch,
    SearchResult,
    TokenLogit,
    TokenStatRow,
)
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import bind


def _store(state: AppState) -> HarvestStore:
    path = state.run.path
    if path is None or not harvest_path(path).is_file():
        where = str(path) if path is not None else "RUN"
        raise ValueError(
            f"run {state.run.name!r} has no harvest data (harvest.sqlite); "
            f"it must be created first with "
            f"`spd-harvest {where} --texts FILE` (one text per line), then restart the server"
        )
    return HarvestStore(path)


def _token(state: AppState, token_id: int) -> str:
    return state.tok.display(token_id) if state.run.is_lm else str(token_id)


# --- get_component_info ---------------------------------------------------------------------------


@torch.no_grad()
def _model_part(state: AppState, layer: str, c: int, top_k: int) -> dict[str, Any]:
    model = state.run.model
    comp = model.comp(layer)
    out: dict[str, Any] = {
        "read_norm": float(comp.V[:, c].detach().norm()),
        "write_norm": float(comp.U[c].detach().norm()),
    }
    r = write_vector_logits(model, layer, c)
    out["readout_method"], out["promotes"], out["suppresses"] = r.method, [], []
    if r.logits is not None and state.run.is_lm:
        k = min(top_k, r.logits.numel())
        hi, lo = r.logits.topk(k), (-r.logits).topk(k)
        out["promotes"] = [(int(i), float(v)) for v, i in zip(hi.values, hi.indices, strict=True)]
        out["suppresses"] = [
            (int(i), -float(v)) for v, i in zip(lo.values, lo.indices, strict=True)
        ]
    return out


def _stat_rows(state: AppState, s: dict[str, Any], side: str) -> list[TokenStatRow]:
    return [TokenStatRow(token=_token(state, r["token_id"]), token_id=r["token_id"],
                         count=r["count"], recall=r["recall"], precision=r["precision"],
                         pmi=r["pmi"]) for r in s.get(side, [])]


def _info_text(
    key: ComponentKey, part: dict[str, Any], s: dict[str, Any] | None, ins: list[TokenStatRow],
    outs: list[TokenStatRow], promotes: list[TokenLogit],
) -> str:
    """get_component_info's summary; ``s`` is the harvest's summary, None without a harvest."""
    text = (
        f"Component {key}: read norm {part['read_norm']:.3g}, "
        f"write norm {part['write_norm']:.3g}. "
    )
    if s is not None:
        text += (f"Fires (CI > {s['threshold']}) on {s['density']:.2%} of {s['n_tokens']} "
                 f"harvested tokens, mean CI "
                 f"{s['mean_ci']:.3g}. ")
        if ins:
            text += "Top input tokens: " + ", ".join(f"{r.token!r}" for r in ins[:5]) + ". "
        if outs:
            text += "Top next tokens: " + ", ".join(f"{r.token!r}" for r in outs[:5]) + ". "
    else:
        text += (
            "No harvest data for this run (run `spd-harvest RUN --texts FILE`): "
            "only model-derived fields. "
        )
    if promotes:
        text += "Write vector promotes " + ", ".join(f"{t.token!r}" for t in promotes[:5]) + "."
    else:
        text += f"No direct logit readout ({part['readout_method']})."
    return text


async def get_component_info(
    state: AppState, inp: ComponentInfoInput, ctx: Context
) -> ComponentInfo:
    key = parse_component_key(inp.component, state.layer_c())
    part = await state.device.call(
        "get_component_info", lambda: _model_part(state, key.layer, key.c, inp.top_k)
    )
    has = state.run.path is not None and harvest_path(state.run.path).is_file()
    s: dict[str, Any] = {}
    if has:
        s = await state.run_io(lambda: component_summary(
            _store(state), key.layer, key.c, inp.top_k, inp.order, inp.min_count
        ))
    promotes = [TokenLogit(token=_token(state, i), token_id=i, logit=v)
                for i, v in part["promotes"]]
    suppresses = [TokenLogit(token=_token(state, i), token_id=i, logit=v)
                  for i, v in part["suppresses"]]
    ins, outs = _stat_rows(state, s, "input_tokens"), _stat_rows(state, s, "output_tokens")
    return ComponentInfo(
        summary=_info_text(key, part, s if has else None, ins, outs, promotes), component=str(key),
        layer=key.layer, c=key.c, read_norm=part["read_norm"],
        write_norm=part["write_norm"], has_harvest=has, n_firing=s.get("n_firing"),
        density=s.get("density"),
        mean_ci=s.get("mean_ci"), max_ci=s.get("max_ci"), harvest_threshold=s.get("threshold"),
        input_tokens=ins, output_tokens=outs, promotes=promotes, suppresses=suppresses,
        readout_method=part["readout_method"],
        cofiring=[CoFiringRow(component=f"{r['layer']}:{r['c']}", count=r["count"],
                              jaccard=r["jaccard"])
                  for r in s.get("cofiring", [])],
        label=s.get("label"),
    )


# --- get_activation_examples ----------------------------------------------------------------------


async def get_activation_examples(
    state: AppState, inp: ExamplesInput, ctx: Context
) -> ExamplesResult:
    key = parse_component_key(inp.component, state.layer_c())
    page = await state.run_io(
        lambda: activation_examples(_store(state), key.layer, key.c, inp.limit, inp.offset)
    )
    examples = [
        ActivationExample(text_id=e["text_id"], position=e["pos"], max_ci=e["max_ci"],
                          window_start=e["start"],
                          tokens=[_token(state, t) for t in e["token_ids"]],
                          token_ids=e["token_ids"], ci=e["ci"])
        for e in page.items
    ]
    if not page.total:
        text = f"{key} never fires above the harvest threshold in the harvested texts."
    else:
        shown = "; ".join(
            "".join(
                f"[[{t}]]" if i + ex.window_start == ex.position else t
                for i, t in enumerate(ex.tokens)
            ) + f" (CI {ex.max_ci:.2f})"
            for ex in examples[:3]
        )
        text = (
            f"{page.total} top contexts stored for {key}; showing {len(examples)} from offset "
            f"{page.offset}. Peak token in [[ ]]: {shown}"
        )
    return ExamplesResult(summary=text, component=str(key), total=page.total, offset=page.offset,
                          limit=page.limit, examples=examples)


# --- search_dataset -------------------------------------------------------------------------------


async def search_dataset(state: AppState, inp: SearchInput, ctx: Context) -> SearchResult:
    page = await state.run_io(lambda: search_texts(_store(state), inp.query, inp.limit, inp.offset))
    matches = [SearchMatch(**m) for m in page.items]
    text = (
        f"{page.total} occurrences of {inp.query!r} in the harvested texts; "
        f"showing {len(matches)} from offset {inp.offset}."
    )
    if matches:
        text += " First: " + repr(matches[0].snippet)
    return SearchResult(
        summary=text, total=page.total, offset=inp.offset, limit=inp.limit, matches=matches
    )


# --- get_dataset_attributions ---------------------------------------------------------------------


async def get_dataset_attributions(
    state: AppState, inp: DatasetAttrInput, ctx: Context
) -> DatasetAttrResult:
    key = parse_component_key(inp.component, state.layer_c())
    res = await state.run_io(
        lambda: dataset_attributions(_store(state), key.layer, key.c, inp.top_k, inp.sign)
    )

    def rows(items: list[dict[str, Any]]) -> list[AttrRow]:
        return [AttrRow(component=f"{r['layer']}:{r['c']}", value=r["value"],
                        normalised=r["normalised"], abs_value=r["abs_value"], count=r["count"])
                for r in items]

    src, tgt = rows(res["sources"]), rows(res["targets"])

    def fmt(rs: list[AttrRow]) -> str:
        return ", ".join(f"{r.component} ({r.normalised:+.2f})" for r in rs[:5]) or "none"

    return DatasetAttrResult(
        summary=f"Across the harvested texts, {key} is fed most by {fmt(src)} and feeds {fmt(tgt)} "
        f"(ranked by {inp.sign}; normalised shares of the target's total input).",
        component=str(key), sources=src, targets=tgt,
    )


TOOLS = bind(
    contract.TOOLS, get_component_info=get_component_info,
    get_activation_examples=get_activation_examples, search_dataset=search_dataset,
    get_dataset_attributions=get_dataset_attributions,
)
