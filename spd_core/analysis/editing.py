"""Edits of components: scale, remove, fine-tune as rank-1 LoRA terms, and export as a plain model.

Every edit is an ``overlay.Edit`` (changes of U rows and V columns); the loaded model is never
changed. ``scale`` and ``remove`` change write vectors only (U[c] ← s·U[c]; remove is s = 0, i.e.
the component's rank-1 weight is subtracted, in the module's own orientation for Linear, Conv1D and
Embedding), so CI and inner activations are unchanged. ``finetune`` trains only the chosen U rows
and/or V columns (gradients of everything else are masked to zero), starting from the exact target
(zero change, weight delta kept), on suppressing or promoting a token, with a KL penalty on preserve
prompts; it returns the best step whose preserve KL is within ``kl_bound``.
"""

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from spd_core.analysis.common import kl_div, per_position, resolve
from spd_core.analysis.health import checked_forward
from spd_core.analysis.overlay import Edit, applied, check_edit, module_weight_change, weight_change
from spd_core.errors import InvalidInput, require
from spd_core.keys import ComponentKey
from spd_core.model import ComponentModel


def _check_components(
    model: ComponentModel, components: Sequence[ComponentKey] | Mapping[ComponentKey, float]
) -> None:
    require(len(components) > 0, "give at least one component, e.g. '0.mlp.up:3'")
    for key in components:
        require(
            key.layer in model.layers,
            f"unknown layer {key.layer!r}; valid layers: {', '.join(model.layers)}",
        )
        C = model.layers[key.layer].C
        require(0 <= key.c < C, f"component {key} out of range; valid: 0..{C - 1}")


def scale_edit(
    model: ComponentModel, scales: Mapping[ComponentKey, float], name: str = "scale"
) -> Edit:
    """Multiply each listed component's write vector U[c] by its factor (0 removes it)."""
    _check_components(model, scales)
    dU: dict[str, Tensor] = {}
    for key, factor in scales.items():
        U = model.comp(key.layer).U.detach()
        d = dU.setdefault(key.layer, torch.zeros_like(U))
        d[key.c] = (factor - 1.0) * U[key.c]
    desc = ", ".join(f"{k}×{v:g}" for k, v in scales.items())
    return Edit(name=name, dU=dU, description=f"scale {desc}")


def remove_edit(
    model: ComponentModel, components: Sequence[ComponentKey], name: str = "remove"
) -> Edit:
    """Subtract each listed component's rank-1 weight from its layer."""
    edit = scale_edit(model, dict.fromkeys(components, 0.0), name)
    return Edit(name=name, dU=edit.dU, description="remove " + ", ".join(map(str, components)))


@dataclass(frozen=True)
class EditNorms:
    """Per layer: Frobenius norm of the weight change, and relative to the layer's weight."""

    weight_change: dict[str, float]
    relative: dict[str, float]


def edit_norms(model: ComponentModel, edit: Edit) -> EditNorms:
    check_edit(model, edit)
    change = {k: float(weight_change(model, edit, k).norm()) for k in edit.layers}
    rel = {
        k: change[k] / max(float(model.comp(k).target_weight.norm()), 1e-12) for k in edit.layers
    }
    return EditNorms(change, rel)


def export_edit(model: ComponentModel, edit: Edit, out_dir: str | Path) -> Path:
    """Save the edited target as a plain model directory (``save_pretrained``; loads with
    transformers)."""
    check_edit(model, edit)
    target = copy.deepcopy(model.target)
    save = getattr(target, "save_pretrained", None)
    if not callable(save):
        raise InvalidInput(
            "only transformers models can be exported as a model directory; target is "
            f"{type(target).__name__}"
        )
    with torch.no_grad():
        for layer in edit.layers:
            weight = target.get_submodule(model.layers[layer].path).weight
            assert isinstance(weight, Tensor), f"layer {layer!r} has no weight tensor"
            weight.add_(module_weight_change(model, edit, layer).to(weight.dtype))
    out = Path(out_dir)
    fresh = not out.exists() or (out.is_dir() and not any(out.iterdir()))
    require(
        not out.is_symlink() and fresh,
        f"export_edit writes a new model directory: {out} must be absent or an empty directory, "
        "not a link",
    )
    save(out)
    return out


@dataclass(frozen=True)
class Objective:
    """Suppress or promote ``token`` at ``position`` of each prompt (token ids (1, seq))."""

    prompts: Sequence[Tensor]
    token: int
    direction: Literal["suppress", "promote"]
    position: int = -1


@dataclass(frozen=True)
class FinetuneResult:
    """``edit``: the best step within the KL bound. Probabilities are the mean over objective
    prompts; KLs are mean per-position KL(original ‖ edited) in nats."""

    edit: Edit
    token_prob_before: float
    token_prob_after: float
    kl_preserve: float
    kl_heldout: float | None
    norms: EditNorms
    best_step: int
    loss_trace: list[float]


def _token_probs(model: ComponentModel, objective: Objective) -> Tensor:
    probs = []
    for ids in objective.prompts:
        logits = per_position(checked_forward(model, ids, what="edit objective forward").output)
        probs.append(
            logits[resolve(objective.position, logits.shape[0])]
            .float()
            .softmax(-1)[objective.token]
        )
    return torch.stack(probs)


def _mean_kl(
    model: ComponentModel,
    prompts: Sequence[Tensor],
    base: Sequence[Tensor],
    what: str = "edit KL forward",
) -> Tensor:
    kls = [
        kl_div(b, per_position(checked_forward(model, ids, what=what).output)).mean()
        for ids, b in zip(prompts, base, strict=True)
    ]
    return torch.stack(kls).mean()


def finetune_edit(
    model: ComponentModel,
    components: Sequence[ComponentKey],
    objective: Objective,
    preserve_prompts: Sequence[Tensor],
    heldout_prompts: Sequence[Tensor] = (),
    train: Literal["U", "V", "both"] = "both",
    steps: int = 100,
    lr: float = 1e-2,
    kl_coeff: float = 1.0,
    kl_bound: float = 0.05,
    seed: int = 0,
    name: str = "finetune",
    progress: Callable[[int, int, float], None] | None = None,
) -> FinetuneResult:
    """Train the listed components' U rows and/or V columns on ``objective`` (see module doc)."""
    _check_components(model, components)
    require(train in ("U", "V", "both"), f"train must be 'U', 'V' or 'both'; got {train!r}")
    require(
        objective.direction in ("suppress", "promote"),
        f"objective direction must be 'suppress' or 'promote'; got {objective.direction!r}",
    )
    require(
        objective.prompts and preserve_prompts,
        "give at least one objective prompt and one preserve prompt",
    )
    require(steps >= 0 and kl_bound >= 0, "steps and kl_bound must be ≥ 0")
    layers = sorted({k.layer for k in components})
    dV = {k: torch.zeros_like(model.comp(k).V.detach()) for k in layers}
    dU = {k: torch.zeros_like(model.comp(k).U.detach()) for k in layers}
    trained: list[Tensor] = []
    for k in layers:
        chosen = torch.tensor([key.c for key in components if key.layer == k])
        if train in ("V", "both"):
            col = torch.zeros(model.layers[k].C, dtype=dV[k].dtype)
            col[chosen] = 1.0
            dV[k].requires_grad_(True).register_hook(lambda g, m=col: g * m)
            trained.append(dV[k])
        if train in ("U", "both"):
            row = torch.zeros(model.layers[k].C, 1, dtype=dU[k].dtype)
            row[chosen] = 1.0
            dU[k].requires_grad_(True).register_hook(lambda g, m=row: g * m)
            trained.append(dU[k])
    with torch.no_grad():
        base_preserve = [per_position(model.target_output(ids)).float() for ids in preserve_prompts]
        base_heldout = [per_position(model.target_output(ids)).float() for ids in heldout_prompts]
        p_before = float(_token_probs(model, objective).mean())
    opt = torch.optim.AdamW(trained, lr=lr, weight_decay=0.0)
    sign = 1.0 if objective.direction == "promote" else -1.0
    best = (
        float("inf"),
        0,
        {k: v.detach().clone() for k, v in dV.items()},
        {k: v.detach().clone() for k, v in dU.items()},
    )
    trace: list[float] = []
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for step in range(steps + 1):
            edit = Edit(name, dV=dV, dU=dU)
            with torch.enable_grad(), applied(model, edit):
                p = _token_probs(model, objective)
                kl = _mean_kl(model, preserve_prompts, base_preserve)
            obj = (
                -torch.log(p.clamp_min(1e-12)).mean()
                if sign > 0
                else -torch.log1p(-p.clamp(max=1 - 1e-6)).mean()
            )
            loss = obj + kl_coeff * kl
            trace.append(float(loss.detach()))
            score = -sign * float(p.detach().mean())  # lower is better
            if float(kl.detach()) <= kl_bound and score < best[0]:
                best = (
                    score,
                    step,
                    {k: v.detach().clone() for k, v in dV.items()},
                    {k: v.detach().clone() for k, v in dU.items()},
                )
            if step == steps:
                break
            grads = torch.autograd.grad(loss, trained)
            for t, g in zip(trained, grads, strict=True):
                t.grad = g
            opt.step()
            if progress is not None:
                progress(step + 1, steps, trace[-1])
    edit = Edit(
        name,
        dV=best[2] if train != "U" else {},
        dU=best[3] if train != "V" else {},
        description=f"finetune {objective.direction} token {objective.token} via "
        + ", ".join(map(str, components)),
    )
    with torch.no_grad(), applied(model, edit):
        p_after = float(_token_probs(model, objective).mean())
        kl_pres = float(_mean_kl(model, preserve_prompts, base_preserve))
        kl_held = float(_mean_kl(model, heldout_prompts, base_heldout)) if heldout_prompts else None
    return FinetuneResult(
        edit, p_before, p_after, kl_pres, kl_held, edit_norms(model, edit), best[1], trace
    )


def mean_kl(model: ComponentModel, edit: Edit, prompts: Sequence[Tensor]) -> float | None:
    """Mean per-position KL(target ‖ edited) in nats over ``prompts``; None for no prompt."""
    if not prompts:
        return None
    with torch.no_grad():
        base = [per_position(model.target_output(x)) for x in prompts]
        with applied(model, edit):
            return float(_mean_kl(model, prompts, base, what="edited forward"))


@dataclass(frozen=True)
class MeasuredEdit:
    """An edit and what it does: its weight change, its KL on the preserve and held-out prompts, and
    for a fine-tune the fine-tune's own numbers (``finetune``; None for scale and remove)."""

    edit: Edit
    norms: EditNorms
    kl_preserve: float | None
    kl_heldout: float | None
    finetune: FinetuneResult | None


def edit_and_measure(
    model: ComponentModel,
    *,
    components: Sequence[ComponentKey],
    method: Literal["scale", "remove", "finetune"],
    factor: float = 0.0,
    objective: Objective | None = None,
    preserve_prompts: Sequence[Tensor] = (),
    heldout_prompts: Sequence[Tensor] = (),
    train: Literal["U", "V", "both"] = "both",
    steps: int = 100,
    lr: float = 1e-2,
    kl_bound: float = 0.05,
    seed: int = 0,
    name: str = "edit",
    progress: Callable[[int, int, float], None] | None = None,
) -> MeasuredEdit:
    """Make the edit ``method`` of ``components`` (``factor`` for scale, ``objective`` for finetune)
    and measure it on ``preserve_prompts`` and ``heldout_prompts``."""
    if method == "finetune":
        require(
            objective is not None,
            "method 'finetune' needs an objective {token, direction, prompts}",
        )
        assert objective is not None
        ft = finetune_edit(
            model,
            components,
            objective,
            preserve_prompts,
            heldout_prompts,
            train,
            steps,
            lr,
            kl_bound=kl_bound,
            seed=seed,
            name=name,
            progress=progress,
        )
        return MeasuredEdit(ft.edit, ft.norms, ft.kl_preserve, ft.kl_heldout, ft)
    require(
        method in ("scale", "remove"),
        f"method must be 'scale', 'remove' or 'finetune'; got {method!r}",
    )
    if method == "remove":
        edit = remove_edit(model, components, name)
    else:
        edit = scale_edit(model, dict.fromkeys(components, factor), name)
    kl_pres, kl_held = mean_kl(model, edit, preserve_prompts), mean_kl(model, edit, heldout_prompts)
    return MeasuredEdit(edit, edit_norms(model, edit), kl_pres, kl_held, None)
