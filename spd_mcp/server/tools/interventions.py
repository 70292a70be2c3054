"""Intervention tools: ablate (necessity / sufficiency) and steer (scale components and generate)."""

from collections.abc import Sequence
from typing import Any, Literal

from mcp.server.mcpserver import Context
from pydantic import Field

from spd_core.analysis.ablation import AblationRegime, AblationResult
from spd_core.analysis.ablation import ablate as core_ablate
from spd_core.analysis.steering import SteerResult
from spd_core.analysis.steering import steer as core_steer
from spd_core.keys import resolve_position
from spd_mcp.server.errors import check_finite_values
from spd_mcp.server.inputs import component_keys, node_keys, require_lm, target_token, text_input
from spd_mcp.server.schemas import Input, TokenProb, Wire
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import ToolSpec
from spd_mcp.server.tools.components import EDIT_DESC

ABLATION_REGIMES: tuple[AblationRegime, ...] = ("deterministic", "stochastic", "adversarial")
COMPONENT_DESC = "component keys '<layer>:<c>', e.g. ['0.mlp.up:3', '1.attn.o:0']"


def _probs(state: AppState, top: Sequence[tuple[int, float]]) -> list[TokenProb]:
    return [TokenProb(token=state.tok.display(i), token_id=i, prob=p) for i, p in top]


# --- ablate ----------------------------------------------------------------------------------------


class AblateInput(Input):
    text: str = Field(max_length=20000, description="the prompt", examples=["Paris is the capital of"])
    components: list[str] = Field(default_factory=list, max_length=1000, description=COMPONENT_DESC + "; ablated at every position")
    nodes: list[str] = Field(default_factory=list, max_length=1000, description="node keys '<layer>:<pos>:<c>'; ablated only at their position")
    mode: Literal["remove", "keep_only"] = Field(
        "remove", description="'remove': ablate the set (is it necessary?); 'keep_only': keep only the set (is it sufficient?)"
    )
    regime: AblationRegime | Literal["all"] | list[AblationRegime] = Field(
        "deterministic",
        description="'deterministic' (remove: everything else on; keep_only: the set alone, everything else off), "
        "'stochastic' (remove: others in [CI, 1]; keep_only: the set in [CI, 1], everything else anywhere in [0, 1]; "
        "mean of n_samples), 'adversarial' (the same ranges, chosen to be the worst case for the claim), a list, or 'all'",
    )
    position: int = Field(-1, ge=-100000, le=100000, description="position whose next-token distribution is compared (default: the last)")
    token: str | None = Field(None, max_length=200, description="a token (exactly one) whose probability change is reported")
    top_k: int = Field(5, ge=1, le=50, description="how many most likely tokens before and after")
    n_samples: int = Field(8, ge=1, le=64, description="samples for the stochastic regime")
    adversarial_steps: int = Field(20, ge=1, le=200, description="signed-gradient steps for the adversarial regime")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="random seed (stochastic and adversarial regimes)")
    edit_id: str | None = Field(None, max_length=64, description=EDIT_DESC)


class RegimeOutcome(Wire):
    regime: AblationRegime
    after: list[TokenProb] = Field(description="top_k tokens after ablation")
    kl: float = Field(description="KL(before ‖ after) at the position, nats")
    token_prob_after: float | None
    token_prob_change: float | None = Field(description="after - before for 'token'")


class AblateResult(Wire):
    summary: str
    mode: Literal["remove", "keep_only"]
    position: int
    tokens: list[str]
    before: list[TokenProb] = Field(description="top_k tokens of the unablated model at the position")
    token: str | None
    token_id: int | None
    token_prob_before: float | None
    regimes: list[RegimeOutcome]


def _regimes(regime: Any) -> list[AblationRegime]:
    if regime == "all":
        return list(ABLATION_REGIMES)
    if isinstance(regime, str):
        return [regime]  # type: ignore[list-item]
    if not regime:
        raise ValueError(f"give at least one regime; valid: {', '.join(ABLATION_REGIMES)} or 'all'")
    return list(dict.fromkeys(regime))


async def ablate(state: AppState, inp: AblateInput, ctx: Context) -> AblateResult:
    require_lm(state, "ablate")
    mi = text_input(state, inp.text)
    comps = component_keys(state, inp.components)
    nodes = node_keys(state, inp.nodes, mi.seq)
    if not comps and not nodes:
        raise ValueError("give at least one component ('<layer>:<c>') or node ('<layer>:<pos>:<c>') to ablate")
    pos = resolve_position(inp.position, mi.seq)
    tid = None if inp.token is None else target_token(state, inp.token)
    edit = state.edits.edit(inp.edit_id)
    regimes = _regimes(inp.regime)

    def work() -> list[AblationResult]:
        return [
            core_ablate(
                state.run.model, mi.x, comps, nodes, mode=inp.mode, regime=r, position=pos, token=tid, k=inp.top_k,
                n_samples=inp.n_samples, pgd_steps=inp.adversarial_steps, seed=inp.seed, edit=edit,
            )
            for r in regimes
        ]

    results = await state.device.call("ablate", work)
    first = results[0]
    outcomes = [
        RegimeOutcome(regime=r.regime, after=_probs(state, r.after_top), kl=r.kl, token_prob_after=r.token_prob_after,
                      token_prob_change=r.token_prob_change)
        for r in results
    ]
    label = None if tid is None else state.tok.display(tid)
    what = f"{len(comps)} components and {len(nodes)} nodes"
    parts = []
    for o in outcomes:
        part = f"{o.regime}: KL {o.kl:.4f} nats, top {o.after[0].token!r} ({o.after[0].prob:.3f})"
        if o.token_prob_after is not None:
            part += f", p({label!r}) {first.token_prob_before:.3f} -> {o.token_prob_after:.3f}"
        parts.append(part)
    verb = "Removing" if inp.mode == "remove" else "Keeping only"
    await state.store.add_intervention("ablate", inp.model_dump(mode="json"), {"kl": {o.regime: o.kl for o in outcomes}})
    return AblateResult(
        summary=f"{verb} {what} at position {pos} ({mi.tokens[pos]!r}); before, the top token is "
        f"{state.tok.display(first.before_top[0][0])!r} ({first.before_top[0][1]:.3f}). " + "; ".join(parts) + ".",
        mode=inp.mode, position=pos, tokens=mi.tokens, before=_probs(state, first.before_top), token=label, token_id=tid,
        token_prob_before=first.token_prob_before, regimes=outcomes,
    )


# --- steer -----------------------------------------------------------------------------------------


class SteerInput(Input):
    text: str = Field(max_length=20000, description="the prompt to continue", examples=["The cat sat on the"])
    scales: dict[str, float] = Field(
        description="component key -> factor on its mask (0 ablates, 1 leaves it, 2 doubles it), e.g. {'0.mlp.up:3': 0.0}"
    )
    max_new_tokens: int = Field(20, ge=0, le=200, description="tokens to generate")
    n_samples: int = Field(1, ge=1, le=16, description="continuations per side (used when temperature > 0)")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0: greedy; > 0: sampled")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="random seed for sampling")
    only_where_ci_above: float | None = Field(
        None, ge=0.0, le=1.0, description="scale a component only at positions where its CI exceeds this; default everywhere"
    )
    top_k: int = Field(10, ge=1, le=50, description="how many tokens in the top lists and logit changes")
    edit_id: str | None = Field(None, max_length=64, description=EDIT_DESC)


class Continuation(Wire):
    text: str
    token_ids: list[int]


class LogitChange(Wire):
    token: str
    token_id: int
    logit_change: float = Field(description="steered - baseline logit at the prompt's last position")
    baseline_prob: float
    steered_prob: float


class SteerResultWire(Wire):
    summary: str
    baseline: list[Continuation]
    steered: list[Continuation]
    baseline_top: list[TokenProb]
    steered_top: list[TokenProb]
    logit_changes: list[LogitChange] = Field(description="tokens with the largest |logit change|, largest first")


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
    await state.store.add_intervention("steer", inp.model_dump(mode="json"), {"baseline": base[0].text, "steered": steered[0].text})
    return SteerResultWire(
        summary=f"Baseline continues {base[0].text!r}; steered continues {steered[0].text!r}. Largest logit change: "
        + ", ".join(f"{c.token!r} {c.logit_change:+.3g}" for c in changes[:3]) + ".",
        baseline=base, steered=steered, baseline_top=_probs(state, res.baseline_top),
        steered_top=_probs(state, res.steered_top), logit_changes=changes,
    )


TOOLS = [
    ToolSpec(
        name="ablate",
        title="Ablate components (necessity / sufficiency)",
        description=(
            "Is this set necessary (mode='remove') or sufficient (mode='keep_only')? Ablates "
            "components (all positions) and nodes (one position) and compares the next-token "
            "distribution at 'position' before and after, per regime. About a second per regime. "
            "Language models only. Example: ablate(text='Paris is the capital of', "
            "components=['1.mlp.down:7'], token=' France', regime='all')."
        ),
        input_model=AblateInput, result_model=AblateResult, handler=ablate, read_only=True, idempotent=True,
    ),
    ToolSpec(
        name="steer",
        title="Steer generation by scaling components",
        description=(
            "What does the model say if I scale these components? Continuations from 'text' with "
            "and without the scaled masks (0 ablates, 2 doubles), and the largest logit changes. "
            "Language models only. Example: steer(text='The cat sat on the', "
            "scales={'0.mlp.up:3': 0.0}, max_new_tokens=10)."
        ),
        input_model=SteerInput, result_model=SteerResultWire, handler=steer, read_only=True, idempotent=True,
    ),
]
