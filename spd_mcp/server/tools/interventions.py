"""Intervention tools: ablate (necessity / sufficiency) and steer (scale components and
generate)."""

from collections.abc import Sequence
from functools import partial
from typing import Any

from mcp.server.mcpserver import Context

from spd_core.analysis.ablation import AblationResult, ablate_regimes
from spd_core.analysis.steering import SteerResult
from spd_core.analysis.steering import steer as core_steer
from spd_core.keys import resolve_position
from spd_mcp.contract import interventions as contract
from spd_mcp.contract.interventions import (
    ABLATION_REGIMES,
    AblateInput,
    AblateResult,
    AblationRegime,
    Continuation,
    LogitChange,
    RegimeOutcome,
    SteerInput,
    SteerResultWire,
)
from spd_mcp.contract.wire import TokenProb
from spd_mcp.server.errors import check_finite_values
from spd_mcp.server.inputs import (
    ModelInput,
    component_keys,
    node_keys,
    require_lm,
    target_token,
    text_input,
)
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import bind


def _probs(state: AppState, top: Sequence[tuple[int, float]]) -> list[TokenProb]:
    return [TokenProb(token=state.tok.display(i), token_id=i, prob=p) for i, p in top]


# --- ablate ---------------------------------------------------------------------------------------


def _regimes(regime: Any) -> list[AblationRegime]:
    if regime == "all":
        return list(ABLATION_REGIMES)
    if isinstance(regime, str):
        return [regime]  # type: ignore[list-item]
    if not regime:
        raise ValueError(f"give at least one regime; valid: {', '.join(ABLATION_REGIMES)} or 'all'")
    return list(dict.fromkeys(regime))


def _ablate_result(
    state: AppState, inp: AblateInput, mi: ModelInput, what: str, results: list[AblationResult],
) -> AblateResult:
    """The wire result of ablating ``what`` in each regime of ``results``."""
    first = results[0]
    pos, tid = first.position, first.token
    outcomes = [
        RegimeOutcome(regime=r.regime, after=_probs(state, r.after_top), kl=r.kl,
                      token_prob_after=r.token_prob_after, token_prob_change=r.token_prob_change)
        for r in results
    ]
    label = None if tid is None else state.tok.display(tid)
    parts = []
    for o in outcomes:
        part = f"{o.regime}: KL {o.kl:.4f} nats, top {o.after[0].token!r} ({o.after[0].prob:.3f})"
        if o.token_prob_after is not None:
            part += f", p({label!r}) {first.token_prob_before:.3f} -> {o.token_prob_after:.3f}"
        parts.append(part)
    verb = "Removing" if inp.mode == "remove" else "Keeping only"
    return AblateResult(
        summary=f"{verb} {what} at position {pos} ({mi.tokens[pos]!r}); before, the top token is "
        f"{state.tok.display(first.before_top[0][0])!r} ({first.before_top[0][1]:.3f}). "
        + "; ".join(parts) + ".",
        mode=inp.mode, position=pos, tokens=mi.tokens, before=_probs(state, first.before_top),
        token=label, token_id=tid,
        token_prob_before=first.token_prob_before, regimes=outcomes,
    )


async def ablate(state: AppState, inp: AblateInput, ctx: Context) -> AblateResult:
    require_lm(state, "ablate")
    mi = text_input(state, inp.text)
    comps = component_keys(state, inp.components)
    nodes = node_keys(state, inp.nodes, mi.seq)
    if not comps and not nodes:
        raise ValueError(
            "give at least one component ('<layer>:<c>') or node ('<layer>:<pos>:<c>') to ablate"
        )
    work = partial(
        ablate_regimes, state.run.model, mi.x, components=comps, nodes=nodes, mode=inp.mode,
        position=resolve_position(inp.position, mi.seq),
        token=None if inp.token is None else target_token(state, inp.token),
        edit=state.edits.edit(inp.edit_id), regime=_regimes(inp.regime), top_k=inp.top_k,
        n_samples=inp.n_samples, adversarial_steps=inp.adversarial_steps, seed=inp.seed,
    )
    results = await state.device.call("ablate", work)
    kls = {r.regime: r.kl for r in results}
    await state.store.add_intervention("ablate", inp.model_dump(mode="json"), {"kl": kls})
    what = f"{len(comps)} components and {len(nodes)} nodes"
    return _ablate_result(state, inp, mi, what, results)


# --- steer ----------------------------------------------------------------------------------------


def _cont(state: AppState, ids: list[int]) -> Continuation:
    return Continuation(text=state.tok.raw.decode(ids), token_ids=ids)


async def steer(state: AppState, inp: SteerInput, ctx: Context) -> SteerResultWire:
    require_lm(state, "steer")
    mi = text_input(state, inp.text)
    check_finite_values(inp.scales.values(), "scales")
    if not inp.scales:
        raise ValueError("give at least one component to scale, e.g. scales={'0.mlp.up:3': 0.0}")
    scales = dict(zip(component_keys(state, list(inp.scales)), inp.scales.values(), strict=True))
    edit = state.edits.edit(inp.edit_id)
    res: SteerResult = await state.device.call("steer", lambda: core_steer(
        state.run.model, mi.x, scales, inp.max_new_tokens, inp.n_samples, inp.temperature, inp.seed,
        inp.only_where_ci_above, inp.top_k, edit,
    ))
    base = [_cont(state, ids) for ids in res.baseline]
    steered = [_cont(state, ids) for ids in res.steered]
    changes = [
        LogitChange(token=state.tok.display(c.token), token_id=c.token, logit_change=c.logit_change,
                    baseline_prob=c.baseline_prob, steered_prob=c.steered_prob)
        for c in res.changes
    ]
    await state.store.add_intervention(
        "steer", inp.model_dump(mode="json"), {"baseline": base[0].text, "steered": steered[0].text}
    )
    return SteerResultWire(
        summary=f"Baseline continues {base[0].text!r}; steered continues {steered[0].text!r}. "
        "Largest logit change: "
        + ", ".join(f"{c.token!r} {c.logit_change:+.3g}" for c in changes[:3]) + ".",
        baseline=base, steered=steered, baseline_top=_probs(state, res.baseline_top),
        steered_top=_probs(state, res.steered_top), logit_changes=changes,
    )


TOOLS = bind(
    contract.TOOLS, ablate=ablate, steer=steer,
)
