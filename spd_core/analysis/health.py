"""Numerical health of forward passes: a NaN or Inf is an error naming the first layer where it
appeared.

``checked_forward`` runs the model with cheap hooks that flag a non-finite output of any decomposed
layer (some kernels, e.g. CPU fused attention, can swallow a NaN so the final output looks fine),
checks the input and output, and only when something is not finite re-runs the same pass with hooks
on every module to find the first one (in execution order) whose output is not finite, reporting its
canonical layer name (or module path) and position.
"""

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from spd_core.model import ComponentModel, ForwardOutput


class NonFiniteError(ValueError):
    """A NaN or Inf in a forward pass; ``layer`` is where it first appeared, ``position`` the token
    index."""

    def __init__(self, layer: str, position: int | None, what: str) -> None:
        self.layer, self.position = layer, position
        where = f"layer {layer!r}" + ("" if position is None else f" at position {position}")
        super().__init__(
            f"non-finite values (NaN/Inf) first appeared in {where} ({what}); results would be "
            "meaningless"
        )


@dataclass(frozen=True)
class Site:
    """Where a non-finite value first appeared: ``layer`` (the decomposed layer's name, else the
    module path), ``position`` (token index, None without a position axis), ``module`` (the module
    path) and ``kind`` ("NaN" if the output holds one, else "Inf")."""

    layer: str
    position: int | None
    module: str = ""
    kind: Literal["NaN", "Inf"] = "NaN"


def first_nonfinite_position(t: Tensor) -> int | None:
    """Index along the position axis (dim 1 of (batch, seq, ...)) of the first non-finite entry,
    else None."""
    bad = ~torch.isfinite(t)
    if t.ndim < 3:
        return None
    per_pos = bad.flatten(2).any(-1).any(0)
    return int(per_pos.nonzero()[0, 0])


def _first_tensor(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, tuple | list) and out and isinstance(out[0], Tensor):
        return out[0]
    if isinstance(out, Mapping):
        for v in out.values():
            if isinstance(v, Tensor):
                return v
    return None


def check_input(x: Tensor) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise NonFiniteError("input", first_nonfinite_position(x), "the input tensor itself")


@contextmanager
def _watch(model: ComponentModel, found: list[Site]) -> Iterator[None]:
    names = {info.path: name for name, info in model.layers.items()}
    handles = []

    def make_hook(path: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            t = _first_tensor(out)
            if found or t is None or not t.is_floating_point() or bool(torch.isfinite(t).all()):
                return
            kind = "NaN" if bool(torch.isnan(t).any()) else "Inf"
            found.append(Site(names.get(path, path), first_nonfinite_position(t), path, kind))

        return hook

    for path, module in model.target.named_modules():
        if path:
            handles.append(module.register_forward_hook(make_hook(path)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def locate_nonfinite(model: ComponentModel, run: Callable[[], Any]) -> Site | None:
    """Re-run ``run`` (a forward pass of ``model``) with hooks; the first module with a non-finite
    output."""
    found: list[Site] = []
    with torch.no_grad(), _watch(model, found):
        run()
    return found[0] if found else None


@contextmanager
def flagged(model: ComponentModel) -> Iterator[list[Tensor]]:
    """Collect, without synchronising, one "has a non-finite value" flag per decomposed-layer
    output."""
    flags: list[Tensor] = []

    def hook(module: nn.Module, args: Any, out: Any) -> None:
        t = _first_tensor(out)
        if t is not None and t.is_floating_point():
            flags.append(~torch.isfinite(t).all())

    handles = [
        model.target.get_submodule(info.path).register_forward_hook(hook)
        for info in model.layers.values()
    ]
    try:
        yield flags
    finally:
        for h in handles:
            h.remove()


def raise_if_nonfinite(
    model: ComponentModel,
    out: Tensor,
    rerun: Callable[[], Any],
    what: str,
    flags: list[Tensor] | None = None,
) -> None:
    """Raise ``NonFiniteError`` naming the first bad module if ``out`` (or a flagged layer) is not
    finite."""
    layers_ok = not flags or not bool(torch.stack(flags).any())
    if layers_ok and bool(torch.isfinite(out).all()):
        return
    site = locate_nonfinite(model, rerun)
    if site is None:
        raise NonFiniteError("output", first_nonfinite_position(out), what)
    raise NonFiniteError(site.layer, site.position, what)


def checked_forward(
    model: ComponentModel,
    x: Tensor,
    masks: Mapping[str, Tensor] | None = None,
    delta_masks: Mapping[str, Tensor] | None = None,
    cache_inputs: bool = False,
    what: str = "forward pass",
    layer_flags: bool = True,
) -> ForwardOutput:
    """``model(x, ...)`` with its input and output checked for NaN/Inf (see ``NonFiniteError``).

    ``layer_flags=False`` skips the per-layer flags (for tight loops whose first pass was checked).
    """
    check_input(x)
    with flagged(model) if layer_flags else nullcontext([]) as flags:
        out = model(x, masks=masks, delta_masks=delta_masks, cache_inputs=cache_inputs)
    raise_if_nonfinite(
        model, out.output, lambda: model(x, masks=masks, delta_masks=delta_masks), what, flags
    )
    return out


def check_ci_finite(ci: Mapping[str, Tensor]) -> None:
    """CI values come from the CI functions; a non-finite one names its layer."""
    for layer, g in ci.items():
        if not bool(torch.isfinite(g).all()):
            raise NonFiniteError(
                layer, first_nonfinite_position(g), "causal-importance function output"
            )
