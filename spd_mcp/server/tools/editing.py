"""Editing tools: edit_component (named overlays, kept across restarts) and export_edit (a plain
model directory)."""

from collections.abc import Sequence
from functools import partial

import torch
from mcp.server.mcpserver import Context

from spd_core.analysis.editing import MeasuredEdit, Objective, edit_and_measure
from spd_core.keys import ComponentKey, resolve_position
from spd_core.run import TOKENIZER_DIR
from spd_mcp.contract import editing as contract
from spd_mcp.contract.editing import EXPORTS, EditInput, EditResult, ExportInput, ExportResult
from spd_mcp.contract.wire import JobView
from spd_mcp.server.device import Progress
from spd_mcp.server.edits import EditEntry, edit_to_bytes, write_export
from spd_mcp.server.inputs import component_keys, require_lm, target_token, text_input
from spd_mcp.server.state import AppState
from spd_mcp.server.tooling import bind
from spd_mcp.server.tools.jobs import run_as_job

# --- edit_component -------------------------------------------------------------------------------


def _tensors(state: AppState, texts: Sequence[str]) -> list[torch.Tensor]:
    return [text_input(state, t).x for t in texts]


def _edit_prompts(
    state: AppState, inp: EditInput
) -> tuple[list[torch.Tensor], list[torch.Tensor], Objective | None]:
    """(preserve prompts, held-out probe prompts, the fine-tune objective) of ``inp``, checked."""
    lm = state.run.is_lm
    if (inp.preserve_prompts or inp.method == "finetune") and not lm:
        require_lm(state, "edit_component with prompts or method 'finetune'")
    preserve = _tensors(state, inp.preserve_prompts)
    used = set(inp.preserve_prompts) | set(inp.objective.prompts if inp.objective else [])
    heldout_texts = [p.text for p in state.run.probes if p.text not in used] if lm else []
    heldout = _tensors(state, heldout_texts)
    if inp.method != "finetune":
        return preserve, heldout, None
    if inp.objective is None:
        raise ValueError("method 'finetune' needs an objective {token, direction, prompts}")
    if not preserve:
        raise ValueError(
            "method 'finetune' needs at least one preserve prompt (its outputs are kept close)"
        )
    prompts = _tensors(state, inp.objective.prompts)
    for x in prompts:
        resolve_position(inp.objective.position, x.shape[1])
    token = target_token(state, inp.objective.token)
    objective = Objective(prompts, token, inp.objective.direction, inp.objective.position)
    return preserve, heldout, objective


def _edit_work(
    state: AppState, inp: EditInput, edit_id: str, keys: list[ComponentKey],
    objective: Objective | None, preserve: list[torch.Tensor], heldout: list[torch.Tensor],
    progress: Progress,
) -> tuple[MeasuredEdit, bytes]:
    """The edit measured, and its bytes for the store (on the device thread)."""
    measured = edit_and_measure(
        state.run.model, components=keys, method=inp.method, factor=inp.factor,
        objective=objective, preserve_prompts=preserve, heldout_prompts=heldout, train=inp.train,
        steps=inp.steps, lr=inp.lr, kl_bound=inp.kl_bound, seed=inp.seed, name=edit_id,
        progress=lambda s, n, v: progress(s, n, f"step {s}/{n}, loss {v:.4g}"),
    )
    edit = measured.edit
    names = [str(k) for k in keys]
    entry = EditEntry(edit_id, edit, inp.method, names, {"description": edit.description})
    return measured, edit_to_bytes(entry, state.run.name)


def _edit_summary(result: EditResult, m: MeasuredEdit) -> str:
    ft, token = m.finetune, result.token
    effect = (
        f"; p({token!r}) {ft.token_prob_before:.3f} -> {ft.token_prob_after:.3f} "
        f"(best step {ft.best_step})" if ft is not None else ""
    )
    kls = "".join(
        f"; KL on {name} {v:.4f} nats"
        for name, v in (("preserve prompts", m.kl_preserve),
                        ("held-out probe prompts", m.kl_heldout))
        if v is not None
    )
    biggest = max(m.norms.relative.items(), key=lambda kv: kv[1])
    edit_id = result.edit_id
    return (
        f"Edit {edit_id} ({m.edit.description}) is ready{effect}{kls}; largest relative weight "
        f"change {biggest[1]:.3g} in {biggest[0]}. Pass edit_id='{edit_id}' to run_prompt, get_ci, "
        "ablate or steer, or export_edit it as a model directory; the base model is unchanged."
    )


async def _edit_result(
    state: AppState, inp: EditInput, edit_id: str, names: list[str], objective: Objective | None,
    raw: tuple[MeasuredEdit, bytes],
) -> EditResult:
    """Registers the edit, stores it with its result, and returns the result."""
    m, blob = raw
    ft = m.finetune
    info = {"description": m.edit.description}
    state.edits.add(EditEntry(edit_id, m.edit, inp.method, names, info))
    token = None if objective is None else state.tok.display(objective.token)
    result = EditResult(
        summary="",
        edit_id=edit_id, method=inp.method, components=names, token=token,
        token_prob_before=None if ft is None else ft.token_prob_before,
        token_prob_after=None if ft is None else ft.token_prob_after,
        kl_preserve=m.kl_preserve, kl_heldout=m.kl_heldout, weight_change=m.norms.weight_change,
        relative_change=m.norms.relative, best_step=None if ft is None else ft.best_step,
    )
    params = inp.model_dump(mode="json")
    await state.store.put_edit(edit_id, params, result.model_dump(mode="json"), blob)
    result.summary = _edit_summary(result, m)
    return result


async def edit_component(state: AppState, inp: EditInput, ctx: Context) -> JobView:
    keys = component_keys(state, inp.components)
    edit_id = state.edits.new_id()
    preserve, heldout, objective = _edit_prompts(state, inp)
    work = partial(_edit_work, state, inp, edit_id, keys, objective, preserve, heldout)
    finish = partial(_edit_result, state, inp, edit_id, [str(k) for k in keys], objective)
    params = inp.model_dump(mode="json")
    return await run_as_job(state, ctx, "edit_component", work, finish, inp.wait_s, params)


# --- export_edit ----------------------------------------------------------------------------------


async def export_edit(state: AppState, inp: ExportInput, ctx: Context) -> ExportResult:
    ws = state.require_workspace()
    entry = state.edits.get(inp.edit_id)
    target = state.run.model.target
    if not hasattr(target, "save_pretrained"):
        raise ValueError(
            f"export_edit needs a transformers model; run {state.run.name!r} has a "
            f"{type(target).__name__} target. "
            "Its edits still work through edit_id in run_prompt and get_ci"
        )
    name = inp.name or inp.edit_id
    out = ws.export_path(name, inp.overwrite)
    tok_dir = state.run.path / TOKENIZER_DIR if state.run.path is not None else None
    sizes = await state.device.call(
        "export_edit", lambda: write_export(
            state.run.model, entry.edit, state.run.tokenizer, out, tok_dir, inp.overwrite
        ), inp.model_dump()
    )
    files, size = sorted(sizes), sum(sizes.values())
    rel = f"{EXPORTS}/{name}"
    return ExportResult(
        summary=f"Edit {entry.edit_id} ({entry.edit.description}) exported to {rel} "
        f"({len(files)} files, {size / 1e6:.2f} MB): a plain transformers model directory with "
        f"the edited weights in {', '.join(entry.edit.layers)}. Load it with "
        f"AutoModelForCausalLM.from_pretrained('{out}'); its logits equal run_prompt with "
        f"edit_id='{entry.edit_id}'.",
        edit_id=entry.edit_id, path=str(out), workspace_path=rel, files=files,
        layers=entry.edit.layers,
        includes_tokenizer=state.run.tokenizer is not None, size_bytes=size,
    )


TOOLS = bind(
    contract.TOOLS, edit_component=edit_component, export_edit=export_edit,
)
