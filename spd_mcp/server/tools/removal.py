"""optimize_circuit(mechanism, remove=true): one set whose removal breaks a behaviour and spares
the others (``spd_core.analysis.removal_set``), optimised on a seeded sample of the run's probes
and validated on held-out ones (a job)."""

from functools import partial

import torch
from mcp.server.mcpserver import Context

from spd_core.analysis.finder import Example
from spd_core.analysis.removal_set import RemovalConfig, RemovalSet, optimize_removal
from spd_core.analysis.validation import (
    MeasureSettings,
    Probe,
    Validation,
    ValidationConfig,
    held_out,
    validate,
    with_model_answers,
)
from spd_mcp.contract.circuits import CircuitInput, RemovalResult
from spd_mcp.contract.wire import JobView
from spd_mcp.server.inputs import text_input
from spd_mcp.server.state import AppState
from spd_mcp.server.tools.jobs import run_as_job
from spd_mcp.server.tools.shared_circuit import loss_summary
from spd_mcp.server.tools.validation import run_probes, stored_validation


def _example(p: Probe) -> Example:
    return Example(torch.tensor([p.token_ids]), p.target, p.position)


def _summary(res: RemovalResult) -> str:
    text = (
        f"A removal set of {len(res.components)} components for mechanism {res.mechanism!r}, "
        f"optimised on {res.n_examples} of its probes and {res.n_controls} of the others': with it "
        f"removed (deterministic) they keep {res.kept_behaviour:.2f} and {res.kept_others:.2f} of "
        "p(target) (training numbers)."
    )
    if res.validation is None:
        return text + " Not validated: no held-out probe is left (lower n_examples or n_heldout)."
    return f"{text} {res.validation.summary}"


def _samples(
    state: AppState, inp: CircuitInput
) -> tuple[list[Probe], list[Probe], list[Probe], list[Probe]]:
    """(behaviour pool, others' pool, held-out examples, held-out controls): seeded samples of the
    run's probes; the held-out ones exclude both pools and ``inp.exclude``."""
    probes = run_probes(state)
    tags = sorted({p.mechanism for p in probes})
    if inp.mechanism is None:
        raise ValueError("remove=true needs 'mechanism' (a probe mechanism of the run)")
    if inp.mechanism not in tags:
        raise ValueError(
            f"unknown mechanism {inp.mechanism!r}; valid: {', '.join(tags) or 'none (no probes)'}"
        )
    if len(tags) < 2:
        raise ValueError("remove=true needs probes of at least one other mechanism")
    exclude = [text_input(state, t).token_ids for t in inp.exclude]
    n_mine, n_others = inp.n_prompts, round(1.5 * inp.n_prompts)
    mine, others = held_out(probes, inp.mechanism, exclude, n_mine, n_others, inp.seed)
    used = exclude + [p.token_ids for p in (*mine, *others)]
    if not inp.n_heldout:
        return mine, others, [], []
    held, controls = held_out(
        probes, inp.mechanism, used, inp.n_heldout, inp.n_heldout * 9 // 8, inp.seed
    )
    return mine, others, held, controls


def _find_and_validate(
    state: AppState, inp: CircuitInput, samples: tuple[list[Probe], ...], progress
) -> tuple[RemovalSet, Validation | None]:
    mine, others, held, controls = samples
    model = state.run.model
    found = optimize_removal(
        model, [_example(p) for p in mine], [_example(p) for p in others],
        RemovalConfig(steps=inp.steps, seed=inp.seed),
        progress=lambda i, n, loss: progress(i, n, f"step {i}/{n}, loss {loss:.3f}"),
    )
    if not held or not found.components:
        return found, None
    v = validate(model, held, with_model_answers(model, controls), found.components,
                 config=ValidationConfig(measure=MeasureSettings(seed=inp.seed)),
                 passes=state.target_passes)
    return found, v


async def _result(
    state: AppState, inp: CircuitInput, samples: tuple[list[Probe], ...],
    out: tuple[RemovalSet, Validation | None],
) -> RemovalResult:
    (mine, others, held, _), (found, v) = samples, out
    params, what = inp.model_dump(mode="json"), f"mechanism {inp.mechanism!r}"
    comps = found.components
    validation = None if v is None else await stored_validation(state, v, held, comps, what, params)
    res = RemovalResult(
        summary="", mechanism=inp.mechanism or "", components=[str(k) for k in found.components],
        n_examples=len(mine), n_controls=len(others), kept_behaviour=found.kept_behaviour,
        kept_others=found.kept_others, loss=loss_summary(found.trace, False), validation=validation,
    )
    return res.model_copy(update={"summary": _summary(res)})


async def optimize_removal_job(state: AppState, inp: CircuitInput, ctx: Context) -> JobView:
    samples = _samples(state, inp)
    return await run_as_job(
        state, ctx, "optimize_circuit", partial(_find_and_validate, state, inp, samples),
        partial(_result, state, inp, samples), inp.wait_s, inp.model_dump(mode="json"),
    )
