"""Edits as overlays: per-layer changes of component vectors applied for the duration of a call.

An ``Edit`` changes chosen rows of U (write vectors) and columns of V (read vectors). Its weight
change is ((V+dV)(U+dU) − VU)ᵀ; while an overlay is active the target module's weight, the
components' frozen copy of it and V, U are all replaced, so the weight delta W − (V U)ᵀ is the same
as without the edit and every regime (target, CI, stochastic, ablation) sees the edited model.
Nothing in the loaded model is changed: tensors are swapped in and the originals put back on exit.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import einops
from torch import Tensor, nn

from spd_core.errors import require
from spd_core.model import ComponentModel


@dataclass(frozen=True)
class Edit:
    """A named overlay: ``dV[layer]`` (d_in, C) and ``dU[layer]`` (C, d_out) are added to V and
    U."""

    name: str
    dV: dict[str, Tensor] = field(default_factory=dict)
    dU: dict[str, Tensor] = field(default_factory=dict)
    description: str = ""

    @property
    def layers(self) -> list[str]:
        return sorted(set(self.dV) | set(self.dU))


def check_edit(model: ComponentModel, edit: Edit) -> None:
    for layer in edit.layers:
        require(
            layer in model.layers,
            f"edit {edit.name!r} names unknown layer {layer!r}; valid: {', '.join(model.layers)}",
        )
        comp = model.comp(layer)
        require(
            comp.tied_to is None,
            f"layer {layer!r} shares the components of {comp.tied_to!r} (tied); edit that layer "
            "instead",
        )
        if layer in edit.dV:
            require(
                edit.dV[layer].shape == comp.V.shape,
                f"edit {edit.name!r}: dV[{layer!r}] has shape {tuple(edit.dV[layer].shape)}, "
                f"valid: {tuple(comp.V.shape)}",
            )
        if layer in edit.dU:
            require(
                edit.dU[layer].shape == comp.U.shape,
                f"edit {edit.name!r}: dU[{layer!r}] has shape {tuple(edit.dU[layer].shape)}, "
                f"valid: {tuple(comp.U.shape)}",
            )


def edited_vectors(model: ComponentModel, edit: Edit, layer: str) -> tuple[Tensor, Tensor]:
    """(V + dV, U + dU) of ``layer`` (differentiable in dV, dU)."""
    comp = model.comp(layer)
    V = comp.V.detach() + edit.dV[layer] if layer in edit.dV else comp.V.detach()
    U = comp.U.detach() + edit.dU[layer] if layer in edit.dU else comp.U.detach()
    return V, U


def weight_change(model: ComponentModel, edit: Edit, layer: str) -> Tensor:
    """The edit's change of the layer's weight in Linear orientation (d_out, d_in)."""
    comp = model.comp(layer)
    V, U = edited_vectors(model, edit, layer)
    new = einops.einsum(V, U, "d_in C, C d_out -> d_out d_in")
    return new - comp.weight().detach()


def module_weight_change(model: ComponentModel, edit: Edit, layer: str) -> Tensor:
    """The weight change in the target module's own orientation (Conv1D and Embedding are
    transposed)."""
    change = weight_change(model, edit, layer)
    return change if model.layers[layer].kind == "linear" else change.T


def _tied_owners(root: nn.Module, param: Tensor) -> list[tuple[nn.Module, str]]:
    """Every (module, attribute) holding exactly this parameter (tied embeddings share one)."""
    return [
        (m, name)
        for m in root.modules()
        for name, p in m._parameters.items()  # noqa: SLF001 - reading who owns a shared parameter
        if p is param
    ]


@contextmanager
def applied(model: ComponentModel, edit: Edit | None) -> Iterator[None]:
    """Run the body with ``edit`` overlaid on ``model`` (no-op for None); everything is restored on
    exit.

    Tied parameters (e.g. GPT-2's embedding and unembedding) change together, as they would in an
    exported model.
    """
    if edit is None or not edit.layers:
        yield
        return
    check_edit(model, edit)
    swaps: list[
        tuple[nn.Module, str, str, Tensor]
    ] = []  # (module, attr, "param"|"buffer", original)
    try:
        for layer in edit.layers:
            comp = model.comp(layer)
            V, U = edited_vectors(model, edit, layer)
            w_new = comp.target_weight + weight_change(model, edit, layer)
            module = model.target.get_submodule(model.layers[layer].path)
            m_weight = module._parameters["weight"]  # noqa: SLF001
            assert m_weight is not None, f"layer {layer!r} has no weight to edit"
            m_new = m_weight.detach() + module_weight_change(model, edit, layer)
            for owner, attr in _tied_owners(model.target, m_weight):
                swaps.append(_swap_param(owner, attr, m_new))
            swaps.append(_swap_param(comp, "V", V))
            swaps.append(_swap_param(comp, "U", U))
            swaps.append(_swap_buffer(comp, "target_weight", w_new))
        yield
    finally:
        for module, attr, kind, original in reversed(swaps):
            if kind == "param":
                delattr(module, attr)
                assert isinstance(original, nn.Parameter), (
                    f"{attr} was swapped out as a Parameter and must go back as one"
                )
                module._parameters[attr] = original  # noqa: SLF001 - restoring the original Parameter
            else:
                module._buffers[attr] = original  # noqa: SLF001


def _swap_param(module: nn.Module, attr: str, new: Tensor) -> tuple[nn.Module, str, str, Tensor]:
    original = module._parameters.pop(attr)  # noqa: SLF001 - temporary reparametrisation
    assert original is not None
    setattr(module, attr, new)
    return module, attr, "param", original


def _swap_buffer(module: nn.Module, attr: str, new: Tensor) -> tuple[nn.Module, str, str, Tensor]:
    original = module._buffers[attr]  # noqa: SLF001
    assert original is not None
    module._buffers[attr] = new  # noqa: SLF001
    return module, attr, "buffer", original
