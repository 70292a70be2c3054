"""Model and data tools: get_model_info, run_prompt, list_probe_prompts."""

import math
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from mcp.server.mcpserver import Context

from spd_core.analysis.overlay import Edit, applied
from spd_core.harvest_store import HarvestStore, alive_counts
from spd_core.model import ComponentModel
from spd_mcp.contract import model as contract
from spd_mcp.contract.model import (
    BehaviourRow,
    LayerRow,
    ModelInfo,
    ModelInfoInput,
    OutputValue,
    PositionPrediction,
    ProbeInput,
    ProbeList,
    ProbeRow,
    RunPromptInput,
    RunPromptResult,
)
from spd_mcp.contract.wire import TokenProb
from spd_mcp.server.inputs import checked_features
from spd_mcp.server.predict import TokenPredictions, VectorOutput, predict_tokens, predict_vector
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import bind

T = TypeVar("T")

# --- get_model_info -------------------------------------------------------------------------------


def _clean(value: Any, depth: int = 0) -> Any:
    """Metrics as plain JSON: tensors to floats, non-finite numbers to None, bounded depth."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    if depth > 4:
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v, depth + 1) for k, v in list(value.items())[:200]}
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in list(value)[:200]]
    return str(value)


def _alive(state: AppState) -> tuple[dict[str, Any], str]:
    """Alive components per layer and where the numbers come from (the harvest when the run has
    one)."""
    run = state.run
    if run.has_harvest and run.path is not None:
        store = HarvestStore(run.path)
        threshold, n_tokens = store.meta["config"]["threshold"], store.meta["n_tokens"]
        return alive_counts(store), (
            f"harvest: components with CI > {threshold} on at least one of its {n_tokens} tokens"
        )
    raw = run.metrics.get("alive")
    if isinstance(raw, dict) and raw:
        return raw, "run metrics ('alive' as recorded by the decomposition)"
    return {}, "not measured: this run has no harvest (spd-harvest) and no 'alive' metric"


def _layer_rows(state: AppState, alive: dict[str, Any]) -> list[LayerRow]:
    delta = state.weight_delta
    return [
        LayerRow(layer=i.name, kind=i.kind, d_in=i.d_in, d_out=i.d_out, C=i.C,
                 alive=int(alive[i.name]) if i.name in alive else None,
                 delta_rel_norm=delta.rel_norm[i.name], delta_mean_sq=delta.mean_sq[i.name])
        for i in state.run.model.layers.values()
    ]


def _info_summary(
    state: AppState, arch: str, layers: list[LayerRow], alive_source: str | None
) -> str:
    """``alive_source`` is None when nothing says which components are alive."""
    run, delta = state.run, state.weight_delta
    n_comp = sum(r.C for r in layers)
    kind = (
        f"language model, vocab {state.tok.vocab_size}, context {run.context_length}" if run.is_lm
        else f"toy model taking a feature vector of length {run.input_dim}"
    )
    return (
        f"Run {run.name!r}: {arch} ({kind}) with {len(layers)} decomposed layers and "
        f"{n_comp} components in total. Harvest data: {'yes' if run.has_harvest else 'no'}; "
        f"probe prompts: {len(run.probes)}."
        + (
            f" Alive: {sum(r.alive or 0 for r in layers)} of {n_comp} ({alive_source})."
            if alive_source else ""
        )
        + ("" if delta.negligible else " " + delta.warning())
    )


async def get_model_info(state: AppState, inp: ModelInfoInput, ctx: Context) -> ModelInfo:
    run, model = state.run, state.run.model
    param = next(model.parameters())
    alive, alive_source = await state.run_io(_alive, state)
    layers = _layer_rows(state, alive)
    arch = getattr(model.target, "architecture", type(model.target).__name__)
    return ModelInfo(
        summary=_info_summary(state, arch, layers, alive_source if alive else None),
        run=run.name,
        description=run.description,
        architecture=arch,
        is_language_model=run.is_lm,
        dtype=str(param.dtype).removeprefix("torch."),
        device=str(param.device),
        vocab_size=state.tok.vocab_size if run.is_lm else None,
        context_length=run.context_length,
        input_dim=None if run.is_lm else run.input_dim,
        n_params_target=sum(p.numel() for p in model.target.parameters()),
        n_components_total=sum(r.C for r in layers),
        layers=layers,
        alive_source=alive_source,
        weight_delta=state.weight_delta.summary(),
        metrics=_clean(run.metrics),
        has_harvest=run.has_harvest,
        has_probe_suite=bool(run.probes),
        n_probe_prompts=len(run.probes),
    )


# --- run_prompt -----------------------------------------------------------------------------------


def _under(model: ComponentModel, edit: Edit | None, fn: Callable[[], T]) -> T:
    with applied(model, edit):
        return fn()


def _vector_result(out: VectorOutput, top_k: int) -> RunPromptResult:
    order = sorted(range(len(out.values)), key=lambda i: -out.values[i])[:top_k]
    top = [OutputValue(index=i, value=out.values[i]) for i in order]
    return RunPromptResult(
        summary=f"Output vector of length {len(out.values)}; largest: "
        + ", ".join(f"[{t.index}]={t.value:.4g}" for t in top[:5]),
        prompt_id=None, tokens=[], token_ids=[], predictions=[], next_token_probs=[],
        outputs=out.values[:4096], top_outputs=top,
    )


def _tokens_result(
    state: AppState, ids: list[int], pred: TokenPredictions, prompt_id: int
) -> RunPromptResult:
    pieces = state.tok.pieces(ids)
    predictions = [
        PositionPrediction(
            position=pos, token=pieces[pos],
            top=[TokenProb(token=state.tok.display(t.token_id), token_id=t.token_id, prob=t.prob)
                 for t in top],
        )
        for pos, top in zip(pred.positions, pred.top, strict=True)
    ]
    last = predictions[-1].top
    return RunPromptResult(
        summary=f"{len(ids)} tokens; after the last token {pieces[-1]!r} the model predicts "
        + ", ".join(f"{t.token!r} ({t.prob:.3f})" for t in last[:5]) + ".",
        prompt_id=prompt_id, tokens=pieces, token_ids=ids, predictions=predictions,
        next_token_probs=pred.next_token_probs, outputs=None, top_outputs=None,
    )


async def run_prompt(state: AppState, inp: RunPromptInput, ctx: Context) -> RunPromptResult:
    model = state.run.model
    edit = state.edits.edit(inp.edit_id)
    if inp.features is not None:
        features = checked_features(state, inp.features)
        out = await state.device.call(
            "run_prompt", lambda: _under(model, edit, lambda: predict_vector(model, features))
        )
        return _vector_result(out, inp.top_k)
    assert inp.text is not None  # RunPromptInput holds exactly one of text and features
    ids = state.tok.tokenize(inp.text, state.run.context_length)
    pred = await state.device.call(
        "run_prompt",
        lambda: _under(
            model, edit, lambda: predict_tokens(model, ids, inp.top_k, inp.all_positions)
        ),
    )
    prompt_id = await state.store.add_prompt(inp.text, ids)
    return _tokens_result(state, ids, pred, prompt_id)


# --- list_probe_prompts ---------------------------------------------------------------------------


async def list_probe_prompts(state: AppState, inp: ProbeInput, ctx: Context) -> ProbeList:
    probes = state.run.probes
    tags = Counter(p.mechanism for p in probes)
    if inp.mechanism is not None and inp.mechanism not in tags:
        raise ValueError(
            f"unknown mechanism {inp.mechanism!r}; "
            f"valid: {', '.join(sorted(tags)) or 'none (no probe suite)'}"
        )
    rows = [
        ProbeRow(index=i, text=p.text, target_token=p.target_token, mechanism=p.mechanism,
                 position=p.position, foil=p.foil)
        for i, p in enumerate(probes)
        if inp.mechanism is None or p.mechanism == inp.mechanism
    ]
    page = rows[inp.offset : inp.offset + inp.limit]
    if not probes:
        summary = f"Run {state.run.name!r} ships no probe prompts."
    else:
        summary = (
            f"{len(rows)} probe prompts"
            f"{' tagged ' + repr(inp.mechanism) if inp.mechanism else ''}; "
            f"showing {len(page)} from offset {inp.offset}. Mechanisms: "
            + ", ".join(f"{k} ({v})" for k, v in sorted(tags.items()))
        )
    behaviours = {tag: BehaviourRow(description=b.description, names=list(b.names))
                  for tag, b in state.run.behaviours.items()}
    return ProbeList(summary=summary, total=len(rows), offset=inp.offset, limit=inp.limit,
                     mechanisms=dict(tags), prompts=page, behaviours=behaviours)


TOOLS = bind(
    contract.TOOLS, get_model_info=get_model_info, run_prompt=run_prompt,
    list_probe_prompts=list_probe_prompts,
)
