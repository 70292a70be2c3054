"""optimize_circuit over several prompts of one behaviour: the agent's prompts or a probe mechanism.

One component-level circuit (``spd_core.analysis.shared_circuit``), every regime's numbers beside
it, and its scores and validation on held-out prompts (``spd_core.analysis.heldout_circuit``).
"""

from functools import partial
from typing import Any

from mcp.server.mcpserver import Context

from spd_core.analysis.finder import Example
from spd_core.analysis.heldout_circuit import HeldOutCircuit, circuit_with_heldout
from spd_core.analysis.regimes import RegimeSettings
from spd_core.analysis.shared_circuit import RegimeScore, SharedCircuitConfig
from spd_core.analysis.validation import MeasureSettings, Probe, ValidationConfig, held_out
from spd_core.keys import resolve_position
from spd_mcp.contract.circuits import (
    LossSummary,
    RegimeBrief,
    RegimeRow,
    SharedCircuitResult,
    SharedComponent,
)
from spd_mcp.contract.components import ExampleInput
from spd_mcp.contract.wire import JobView
from spd_mcp.server.inputs import target_token, text_input
from spd_mcp.server.state import AppState
from spd_mcp.server.tools.jobs import run_as_job
from spd_mcp.server.tools.validation import run_probes, stored_validation, text_probe

SHARED_SPARSITY = 0.003  # the gates are per component, so the penalty sums over ~C·layers of them


def loss_summary(trace: list[float], converged: bool) -> LossSummary:
    stride = max(1, len(trace) // 20)
    return LossSummary(
        first=trace[0],
        final=trace[-1],
        min=min(trace),
        steps=len(trace),
        converged=converged,
        trace=trace[::stride][:20],
    )


def _examples(state: AppState, prompts: list[ExampleInput]) -> list[Example]:
    out = []
    for p in prompts:
        mi = text_input(state, p.text)
        resolve_position(p.position, mi.seq)
        out.append(Example(mi.x, target_token(state, p.target_token), p.position))
    return out


def _mechanism_prompts(
    state: AppState, mechanism: str, n_prompts: int, n_heldout: int, seed: int
) -> tuple[list[ExampleInput], list[Probe], list[Probe]]:
    """The mechanism's first n_prompts probes to optimise on; a seeded sample of n_heldout of its
    other probes and as many of the other mechanisms' (``validation.held_out``) to validate on."""
    tags = sorted({p.mechanism for p in state.run.probes})
    if mechanism not in tags:
        raise ValueError(
            f"unknown mechanism {mechanism!r}; valid: "
            f"{', '.join(tags) or 'none (the run has no probes)'}"
        )
    mine = [p for p in state.run.probes if p.mechanism == mechanism]
    if len(mine) < n_prompts:
        raise ValueError(
            f"mechanism {mechanism!r} has {len(mine)} probes; n_prompts must be at most {len(mine)}"
        )
    train = [
        ExampleInput(
            text=p.text,
            target_token=p.target_token,
            position=-1 if p.position is None else p.position,
        )
        for p in mine[:n_prompts]
    ]
    if not n_heldout:
        return train, [], []
    used = [text_input(state, p.text).token_ids for p in train]
    held, others = held_out(run_probes(state), mechanism, used, n_heldout, n_heldout, seed)
    return train, held, others


def _row(s: RegimeScore) -> RegimeRow:
    return RegimeRow(mean_prob=s.mean_prob, accuracy=s.accuracy, probs=s.probs, correct=s.correct)


def _acc(scores: dict[str, RegimeRow] | dict[str, Any]) -> str:
    return ", ".join(
        f"{r} {scores[r].accuracy:.2f}"
        for r in ("stochastic", "adversarial", "ci", "alone", "target")
    )


def _summary(res: SharedCircuitResult) -> str:
    src = f"of mechanism {res.mechanism!r} " if res.mechanism else ""
    text = (
        f"A circuit of {res.total} components (of {res.n_candidates} candidates) over "
        f"{res.n_prompts} prompts {src}(optimised under {res.mask} masks). Accuracy on them: "
        f"{_acc(res.regimes)}; every component kept: "
        f"{_acc(res.full)}."
    )
    if res.heldout is not None:
        n = len(res.heldout["target"].probs)
        text += f" On {n} held-out prompts: {_acc(res.heldout)}."
    if res.validation is not None:
        v = res.validation
        text += f" {v.summary}"
    else:
        text += (
            " Not validated: no held-out prompts (give heldout_prompts, or use 'mechanism'), or no "
            "component."
        )
    if res.mask == "ci":
        text += (
            " Optimised under CI masks: shortcut circuits pass there; trust the stochastic and "
            "held-out numbers."
        )
    return text + f" Circuit {res.circuit_id}."


def _shared_prompts(
    state: AppState, inp: Any
) -> tuple[list[Example], list[Probe], list[Probe], str]:
    """(prompts to optimise on, held-out prompts, control prompts, the behaviour in words) of
    ``inp``: a mechanism's probes or the agent's own prompts; held-out prompts never repeat a
    training one."""
    if inp.mechanism is not None:
        train, heldout, controls = _mechanism_prompts(
            state, inp.mechanism, inp.n_prompts, inp.n_heldout, inp.seed
        )
    else:
        train = inp.prompts
        heldout = [
            text_probe(state, e.text, e.target_token, e.foil, "claim")
            for e in inp.heldout_prompts or []
        ]
        controls = [
            text_probe(state, c.text, c.target_token, None, "control")
            for c in inp.control_prompts or []
        ]
    examples = _examples(state, train)
    seen = {tuple(e.tokens[0].tolist()) for e in examples}
    heldout = [p for p in heldout if tuple(p.token_ids) not in seen]  # never its own prompts
    behaviour = (
        f"mechanism {inp.mechanism!r}" if inp.mechanism else f"your {len(heldout)} held-out prompts"
    )
    return examples, heldout, controls, behaviour


def _shared_config(inp: Any) -> SharedCircuitConfig:
    return SharedCircuitConfig(
        steps=inp.steps,
        lr=inp.lr,
        sparsity=SHARED_SPARSITY if inp.sparsity is None else inp.sparsity,
        loss=inp.loss,
        mask=inp.mask or "stochastic",
        adversarial_steps=inp.adversarial_steps,
        seed=inp.seed,
    )


async def _shared_result(
    state: AppState, inp: Any, heldout: list[Probe], behaviour: str, n_prompts: int,
    raw: HeldOutCircuit,
) -> SharedCircuitResult:
    """The wire result of a shared circuit, stored (and its validation, when it has one)."""
    c = raw.circuit
    comps = [SharedComponent(component=str(k), gate=g) for k, g in c.components]
    regimes = {r: _row(s) for r, s in c.scores.items()}
    params = inp.model_dump(mode="json")
    circuit_id = await state.store.add_circuit(
        {
            "components": [[r.component, r.gate] for r in comps],
            "l0": c.l0,
            "accuracy": {r: s.accuracy for r, s in regimes.items()},
        },
        params,
    )
    validation = None
    if raw.validation is not None:
        keys = [k for k, _ in c.components]
        validation = await stored_validation(
            state, raw.validation, list(heldout), keys, behaviour, params
        )
    res = SharedCircuitResult(
        summary="",
        circuit_id=circuit_id,
        mechanism=inp.mechanism,
        mask=inp.mask or "stochastic",
        n_prompts=n_prompts,
        n_candidates=c.n_candidates,
        total=len(comps),
        limit=inp.limit,
        components=comps[: inp.limit],
        l0=c.l0,
        regimes=regimes,
        full={
            r: RegimeBrief(mean_prob=s.mean_prob, accuracy=s.accuracy)
            for r, s in c.full.items()
        },
        heldout=None if raw.heldout is None else {r: _row(s) for r, s in raw.heldout.items()},
        validation=validation,
        loss=loss_summary(c.loss_trace, c.converged),
    )
    return res.model_copy(update={"summary": _summary(res)})


async def optimize_shared(state: AppState, inp: Any, ctx: Context) -> JobView:
    """The several-prompt form of optimize_circuit (``inp`` is its ``CircuitInput``)."""
    examples, heldout, controls, behaviour = _shared_prompts(state, inp)
    work = partial(
        circuit_with_heldout,
        state.run.model,
        edit=state.edits.edit(inp.edit_id),
        examples=examples,
        heldout=heldout,
        others=controls,
        config=_shared_config(inp),
        regimes=RegimeSettings(seed=inp.seed),
        validation=ValidationConfig(measure=MeasureSettings(seed=inp.seed)),
    )
    finish = partial(_shared_result, state, inp, heldout, behaviour, len(examples))
    return await run_as_job(
        state, ctx, "optimize_circuit", lambda progress: work(progress=progress), finish,
        inp.wait_s, inp.model_dump(mode="json"),
    )
