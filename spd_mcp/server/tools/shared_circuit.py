"""optimize_circuit over several prompts of one behaviour: the agent's prompts or a probe mechanism.

One component-level circuit (``spd_core.analysis.shared_circuit``), every regime's numbers beside
it, and its scores and validation on held-out prompts (``spd_core.analysis.heldout_circuit``).
"""

import math
from typing import Any

from mcp.server.mcpserver import Context
from pydantic import Field

from spd_core.analysis.finder import Example
from spd_core.analysis.heldout_circuit import HeldOutCircuit, circuit_with_heldout
from spd_core.analysis.regimes import RegimeSettings
from spd_core.analysis.shared_circuit import RegimeScore, SharedCircuitConfig
from spd_core.analysis.validation import Interval, Validation
from spd_core.keys import resolve_position
from spd_mcp.server.inputs import target_token, text_input
from spd_mcp.server.schemas import JobView, Wire
from spd_mcp.server.state import AppState
from spd_mcp.server.tools.components import ExampleInput
from spd_mcp.server.tools.jobs import run_as_job

SHARED_SPARSITY = 0.003  # the gates are per component, so the penalty sums over ~C·layers of them


class LossSummary(Wire):
    first: float
    final: float
    min: float
    steps: int
    converged: bool = Field(description="one prompt: the last tenth of the trace varies by < 1%; several: the set of "
                            "components did not change over the last tenth of the steps")
    trace: list[float] = Field(description="at most 20 evenly spaced values of the loss")


def loss_summary(trace: list[float], converged: bool) -> LossSummary:
    stride = max(1, len(trace) // 20)
    return LossSummary(first=trace[0], final=trace[-1], min=min(trace), steps=len(trace), converged=converged,
                       trace=trace[::stride][:20])


class RegimeRow(Wire):
    mean_prob: float = Field(description="mean over prompts of p(target) at the prompt's position")
    accuracy: float = Field(description="share of prompts (and samples) where the target is strictly the most likely")
    probs: list[float] = Field(description="per prompt, in order")
    correct: list[float] = Field(description="per prompt: share of samples with the target on top (0/1 if deterministic)")


class RegimeBrief(Wire):
    mean_prob: float
    accuracy: float


class IntervalRow(Wire):
    mean: float
    low: float = Field(description="bootstrap interval, lower end")
    high: float


class ValidationRegime(Wire):
    necessity: IntervalRow = Field(description="mean relative drop of p(target) with the circuit removed")
    broken: float = Field(description="share of held-out prompts no longer correct with the circuit removed")
    sufficiency: IntervalRow | None = Field(description="chance-corrected accuracy with only the circuit kept")
    accuracy_kept: IntervalRow
    specificity: IntervalRow | None = Field(description="1 - mean drop on other behaviours' prompts with it removed")


class ValidationView(Wire):
    n_examples: int = Field(description="held-out prompts used (the model itself answers them correctly)")
    n_others: int = Field(description="prompts of other behaviours or controls (specificity)")
    necessity: str = Field(description="holds, fails or inconclusive (interval vs bar, deterministic and stochastic)")
    sufficiency: str
    specificity: str
    sufficient_alone: str | None = Field(description="sufficiency with everything else off, no delta")
    sufficient_adversarial: str | None
    bars: dict[str, float]
    regimes: dict[str, ValidationRegime] = Field(description="deterministic, stochastic, adversarial")
    notes: list[str]


class SharedComponent(Wire):
    component: str = Field(description="'<layer>:<c>'")
    gate: float = Field(description="optimised gate in (0, 1]: the component keeps at least gate x its CI")


class SharedCircuitResult(Wire):
    summary: str
    circuit_id: int = Field(description="the stored circuit")
    mechanism: str | None = Field(description="the probe mechanism the prompts came from, if any")
    mask: str = Field(description="the masks it was optimised under")
    n_prompts: int = Field(description="prompts it was optimised on")
    n_candidates: int = Field(description="components with CI > 0 somewhere on them (the rest never enter)")
    total: int = Field(description="components in the circuit")
    limit: int
    components: list[SharedComponent] = Field(description="largest gate first")
    l0: dict[str, int] = Field(description="circuit components per layer")
    regimes: dict[str, RegimeRow] = Field(
        description="the circuit on its own prompts: target (the model), stochastic (circuit in [CI, 1], the rest "
        "and the delta uniform in [0, 1]), adversarial (the same ranges, worst case), ci (circuit at its CI, rest "
        "off), alone (circuit at 1, rest off, no delta)"
    )
    full: dict[str, RegimeBrief] = Field(description="the same regimes with every component kept: the ceiling")
    heldout: dict[str, RegimeRow] | None = Field(description="the circuit's regimes on the held-out prompts")
    validation: ValidationView | None = Field(description="necessity / sufficiency / specificity on held-out prompts")
    loss: LossSummary


def _examples(state: AppState, prompts: list[ExampleInput]) -> list[Example]:
    out = []
    for p in prompts:
        mi = text_input(state, p.text)
        resolve_position(p.position, mi.seq)
        out.append(Example(mi.x, target_token(state, p.target_token), p.position))
    return out


def _mechanism_prompts(
    state: AppState, mechanism: str, n_prompts: int, n_heldout: int
) -> tuple[list[ExampleInput], list[ExampleInput], list[ExampleInput]]:
    """The mechanism's first n_prompts probes, its next n_heldout, and as many of the other
    mechanisms' first probes (split evenly between them)."""
    probes = state.run.probes
    tags = sorted({p.mechanism for p in probes})
    if mechanism not in tags:
        raise ValueError(f"unknown mechanism {mechanism!r}; valid: {', '.join(tags) or 'none (the run has no probes)'}")

    def row(p: Any) -> ExampleInput:
        return ExampleInput(text=p.text, target_token=p.target_token, position=-1 if p.position is None else p.position)

    mine = [row(p) for p in probes if p.mechanism == mechanism]
    if len(mine) < n_prompts:
        raise ValueError(f"mechanism {mechanism!r} has {len(mine)} probes; n_prompts must be at most {len(mine)}")
    per_other = math.ceil(n_heldout / max(len(tags) - 1, 1))
    others = [row(p) for t in tags if t != mechanism for p in [q for q in probes if q.mechanism == t][:per_other]]
    return mine[:n_prompts], mine[n_prompts : n_prompts + n_heldout], others if n_heldout else []


def _row(s: RegimeScore) -> RegimeRow:
    return RegimeRow(mean_prob=s.mean_prob, accuracy=s.accuracy, probs=s.probs, correct=s.correct)


def _interval(i: Interval | None) -> IntervalRow | None:
    return None if i is None else IntervalRow(mean=i.mean, low=i.low, high=i.high)


def validation_view(v: Validation) -> ValidationView:
    regimes = {
        r: ValidationRegime(
            necessity=IntervalRow(mean=n.necessity.mean, low=n.necessity.low, high=n.necessity.high),
            broken=n.broken, sufficiency=_interval(n.sufficiency),
            accuracy_kept=IntervalRow(mean=n.accuracy_kept.mean, low=n.accuracy_kept.low, high=n.accuracy_kept.high),
            specificity=_interval(n.specificity),
        )
        for r, n in v.regimes.items()
    }
    return ValidationView(
        n_examples=v.n_examples, n_others=v.n_others, necessity=v.necessity, sufficiency=v.sufficiency,
        specificity=v.specificity, sufficient_alone=v.sufficient_alone, sufficient_adversarial=v.sufficient_adversarial,
        bars=v.bars, regimes=regimes, notes=v.notes,
    )


def _acc(scores: dict[str, RegimeRow] | dict[str, Any]) -> str:
    return ", ".join(f"{r} {scores[r].accuracy:.2f}" for r in ("stochastic", "adversarial", "ci", "alone", "target"))


def _summary(res: SharedCircuitResult) -> str:
    src = f"of mechanism {res.mechanism!r} " if res.mechanism else ""
    text = (
        f"A circuit of {res.total} components (of {res.n_candidates} candidates) over {res.n_prompts} prompts "
        f"{src}(optimised under {res.mask} masks). Accuracy on them: {_acc(res.regimes)}; every component kept: "
        f"{_acc(res.full)}."
    )
    if res.heldout is not None:
        n = len(res.heldout["target"].probs)
        text += f" On {n} held-out prompts: {_acc(res.heldout)}."
    if res.validation is not None:
        v = res.validation
        text += (
            f" Validation on held-out prompts: necessity {v.necessity}, sufficiency {v.sufficiency} (alone: "
            f"{v.sufficient_alone}, adversarial: {v.sufficient_adversarial}), specificity {v.specificity}."
        )
    else:
        text += " No held-out prompts: not validated (give heldout_prompts, or use 'mechanism')."
    if res.mask == "ci":
        text += " Optimised under CI masks: shortcut circuits pass there; trust the stochastic and held-out numbers."
    return text + f" Circuit {res.circuit_id}."


async def optimize_shared(state: AppState, inp: Any, ctx: Context) -> JobView:
    """The several-prompt form of optimize_circuit (``inp`` is its ``CircuitInput``)."""
    if inp.mechanism is not None:
        train, held, others = _mechanism_prompts(state, inp.mechanism, inp.n_prompts, inp.n_heldout)
    else:
        train, held, others = inp.prompts, inp.heldout_prompts or [], inp.control_prompts or []
    examples, heldout, controls = _examples(state, train), _examples(state, held), _examples(state, others)
    edit = state.edits.edit(inp.edit_id)
    mask = inp.mask or "stochastic"
    config = SharedCircuitConfig(
        steps=inp.steps, lr=inp.lr, sparsity=SHARED_SPARSITY if inp.sparsity is None else inp.sparsity,
        loss=inp.loss, mask=mask, adversarial_steps=inp.adversarial_steps, seed=inp.seed,
    )

    def work(progress: Any) -> HeldOutCircuit:
        return circuit_with_heldout(
            state.run.model, examples, heldout, controls, config, RegimeSettings(seed=inp.seed),
            progress=lambda s, n, msg: progress(s, n, msg), edit=edit,
        )

    async def finish(raw: HeldOutCircuit) -> SharedCircuitResult:
        c = raw.circuit
        comps = [SharedComponent(component=str(k), gate=g) for k, g in c.components]
        regimes = {r: _row(s) for r, s in c.scores.items()}
        params = inp.model_dump(mode="json")
        circuit_id = await state.store.add_circuit(
            {"components": [[r.component, r.gate] for r in comps], "l0": c.l0,
             "accuracy": {r: s.accuracy for r, s in regimes.items()}}, params,
        )
        res = SharedCircuitResult(
            summary="", circuit_id=circuit_id, mechanism=inp.mechanism, mask=mask, n_prompts=len(examples),
            n_candidates=c.n_candidates, total=len(comps), limit=inp.limit, components=comps[: inp.limit], l0=c.l0,
            regimes=regimes, full={r: RegimeBrief(mean_prob=s.mean_prob, accuracy=s.accuracy) for r, s in c.full.items()},
            heldout=None if raw.heldout is None else {r: _row(s) for r, s in raw.heldout.items()},
            validation=None if raw.validation is None else validation_view(raw.validation),
            loss=loss_summary(c.loss_trace, c.converged),
        )
        return res.model_copy(update={"summary": _summary(res)})

    return await run_as_job(state, ctx, "optimize_circuit", work, finish, inp.wait_s, inp.model_dump(mode="json"))
