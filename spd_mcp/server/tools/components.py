"""Component tools: get_ci (which components matter here), probe_component (where one fires),
find_components."""

from collections.abc import Callable
from functools import partial

from mcp.server.mcpserver import Context

from spd_core.analysis.ci import component_profile, compute_ci
from spd_core.analysis.circuits import CircuitConfig
from spd_core.analysis.finder import Example, FinderResult
from spd_core.analysis.finder import find_components as core_find_components
from spd_core.keys import parse_component_key, resolve_position
from spd_mcp.contract import components as contract
from spd_mcp.contract.components import (
    CIEntry,
    CIResult,
    FindComponentsInput,
    FindComponentsResult,
    FoundRow,
    GetCIInput,
    ProbeComponentInput,
    ProbeComponentResult,
    TokenFiring,
)
from spd_mcp.contract.wire import JobView
from spd_mcp.server.device import Progress
from spd_mcp.server.inputs import ModelInput, model_input, require_lm, target_token, text_input
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import bind
from spd_mcp.server.tools.jobs import run_as_job

# --- get_ci ---------------------------------------------------------------------------------------


def _compute_get_ci(state: AppState, inp: GetCIInput, mi: ModelInput) -> CIResult:
    model = state.run.model
    res = compute_ci(model, mi.x, state.edits.edit(inp.edit_id))
    layers = list(res.ci)
    if inp.layers is not None:
        unknown = [name for name in inp.layers if name not in res.ci]
        if unknown:
            raise ValueError(
                f"unknown layer(s) {', '.join(map(repr, unknown))}; "
                f"valid layers: {', '.join(res.ci)}"
            )
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
                    node=f"{layer}:{pos}:{c}", component=f"{layer}:{c}", position=pos,
                    token=mi.tokens[pos], ci=float(g[c]), inner_act=float(acts[c]),
                ))
    counts = res.l0(inp.threshold)
    for layer in layers:
        l0[layer] = float(counts[layer][positions].float().mean())
    page = entries[inp.offset : inp.offset + inp.limit]
    busiest = sorted(l0.items(), key=lambda kv: -kv[1])[:3]
    where = (
        f"position {positions[0]} ({mi.tokens[positions[0]]!r})" if len(positions) == 1
        else f"{len(positions)} positions"
    )
    top = sorted(entries, key=lambda e: -e.ci)[:3]
    summary = (
        f"At {where}, {len(entries)} (position, component) entries have CI > {inp.threshold:g} "
        f"in {len(layers)} layers"
        + (
            "; busiest layers by L0: " + ", ".join(f"{k} ({v:.1f})" for k, v in busiest)
            if busiest else ""
        )
        + ("; largest CI: " + ", ".join(f"{e.node} ({e.ci:.2f})" for e in top) if top else "")
        + (f". Showing {len(page)} from offset {inp.offset}." if len(page) < len(entries) else ".")
    )
    return CIResult(
        summary=summary, tokens=mi.tokens, token_ids=mi.token_ids, positions=positions, l0=l0,
        total=len(entries), offset=inp.offset, limit=inp.limit, entries=page,
    )


async def get_ci(state: AppState, inp: GetCIInput, ctx: Context) -> CIResult:
    mi = model_input(state, inp.text, inp.features)
    state.edits.edit(inp.edit_id)  # unknown ids fail before any compute
    return await state.device.call("get_ci", lambda: _compute_get_ci(state, inp, mi))


# --- probe_component ------------------------------------------------------------------------------


async def probe_component(
    state: AppState, inp: ProbeComponentInput, ctx: Context
) -> ProbeComponentResult:
    key = parse_component_key(inp.component, state.layer_c())
    mi = model_input(state, inp.text, inp.features)
    edit = state.edits.edit(inp.edit_id)
    prof = await state.device.call(
        "probe_component", lambda: component_profile(state.run.model, mi.x, key.layer, key.c, edit)
    )
    rows = [
        TokenFiring(position=p, token=mi.tokens[p], ci=float(prof.ci[p]),
                    inner_act=float(prof.inner_acts[p]))
        for p in range(prof.ci.shape[0])
    ]
    page = rows[inp.offset : inp.offset + inp.limit]
    firing = [r.position for r in rows if r.ci > 0.1]
    return ProbeComponentResult(
        summary=(
            f"{key} peaks at CI {prof.max_ci:.3f} at position {prof.argmax_ci} "
            f"({mi.tokens[prof.argmax_ci]!r}); "
            f"CI > 0.1 at {len(firing)} of {len(rows)} positions; largest |inner activation| "
            f"{prof.max_abs_act:.3g} "
            f"at position {prof.argmax_abs_act}."
        ),
        component=str(key), max_ci=prof.max_ci, argmax_ci=prof.argmax_ci,
        max_abs_act=prof.max_abs_act, argmax_abs_act=prof.argmax_abs_act, total=len(rows),
        offset=inp.offset, limit=inp.limit, positions=page,
    )


# --- find_components ------------------------------------------------------------------------------


async def _found_result(inp: FindComponentsInput, raw: FinderResult) -> FindComponentsResult:
    rows = [FoundRow(component=str(f.key), frequency=f.frequency, count=f.count)
            for f in raw.components]
    page = rows[: inp.limit]
    shown = ", ".join(f"{r.component} ({r.frequency:.0%})" for r in page[:8])
    return FindComponentsResult(
        summary=(
            f"{len(rows)} components are needed in ≥ {inp.min_frequency:.0%} of {raw.n_examples} "
            f"examples (method {inp.method}, scope {inp.scope})"
            + (f": {shown}" if page else "") + "."
        ),
        n_examples=raw.n_examples, total=len(rows), offset=0, limit=inp.limit, components=page,
        per_example_sizes=[len(s) for s in raw.per_example],
    )


def _per_example(progress: Progress) -> Callable[[int, int, float], None]:
    """find_components' progress (example i of n, the size of its set) as a job's progress."""
    return lambda i, n, size: progress(i, n, f"example {i}/{n}: {size:g} components needed")


async def find_components(state: AppState, inp: FindComponentsInput, ctx: Context) -> JobView:
    require_lm(state, "find_components")
    examples = [
        Example(text_input(state, e.text).x, target_token(state, e.target_token), e.position)
        for e in inp.examples
    ]
    for e, ex in zip(inp.examples, examples, strict=True):
        resolve_position(e.position, ex.tokens.shape[1])
    work = partial(
        core_find_components, state.run.model, examples, edit=state.edits.edit(inp.edit_id),
        min_frequency=inp.min_frequency, method=inp.method, scope=inp.scope,
        ci_threshold=inp.ci_threshold,
        circuit=CircuitConfig(steps=inp.steps, sparsity=inp.sparsity),
    )
    finish = partial(_found_result, inp)
    return await run_as_job(
        state, ctx, "find_components", lambda progress: work(progress=_per_example(progress)),
        finish, inp.wait_s, inp.model_dump(mode="json"),
    )


TOOLS = bind(
    contract.TOOLS, get_ci=get_ci, probe_component=probe_component, find_components=find_components,
)
