"""CI and inner activations of every (layer, position, component) for one input, from one forward
pass.

Also the profile of a single component over an input (its CI and inner activation per position).
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from spd_core.analysis.common import check_single_input, per_position
from spd_core.analysis.health import check_ci_finite, checked_forward
from spd_core.analysis.overlay import Edit, applied
from spd_core.ci import CausalImportance, active_counts
from spd_core.errors import require
from spd_core.model import ComponentModel


@dataclass(frozen=True)
class CIResult:
    """``ci[layer]`` and ``inner_acts[layer]`` are (seq, C); ``output`` (seq, d_out) is the target's
    output from the same pass (logits for language models)."""

    ci: dict[str, Tensor]
    inner_acts: dict[str, Tensor]
    output: Tensor

    def l0(self, threshold: float = 0.0) -> dict[str, Tensor]:
        """Per layer, the number of components with CI > threshold at each position, (seq,)."""
        return active_counts(self.ci, threshold)

    def active(self, threshold: float = 0.0) -> list[tuple[str, int, int, float, float]]:
        """(layer, pos, c, ci, inner act) of every node with CI > threshold, in network order."""
        out = []
        for layer, g in self.ci.items():
            for pos, c in (g > threshold).nonzero().tolist():
                out.append((layer, pos, c, float(g[pos, c]), float(self.inner_acts[layer][pos, c])))
        return out


def model_ci(
    model: ComponentModel, x: Tensor
) -> tuple[CausalImportance, dict[str, Tensor], Tensor]:
    """(CI in model shape, cached layer inputs, target output) from one checked target pass.

    Runs under the caller's grad mode and overlay; the CI keeps its graph when grad is enabled.
    """
    fwd = checked_forward(model, x, cache_inputs=True, what="target forward for CI")
    ci = model.causal_importance(fwd.inputs)
    check_ci_finite(ci.lower)
    return ci, fwd.inputs, fwd.output


def compute_ci(model: ComponentModel, x: Tensor, edit: Edit | None = None) -> CIResult:
    """Lower-leaky CI and inner activation of every decomposed layer for one input (no
    gradients)."""
    check_single_input(x)
    with torch.no_grad(), applied(model, edit):
        ci, inputs, output = model_ci(model, x)
        acts = {
            name: per_position(model.comp(name).inner_acts(inp)) for name, inp in inputs.items()
        }
    order = [name for name in model.layers if name in ci.lower]
    return CIResult(
        ci={k: per_position(ci.lower[k]) for k in order},
        inner_acts={k: acts[k] for k in order},
        output=per_position(output),
    )


@dataclass(frozen=True)
class ComponentProfile:
    """One component over one input: ``ci`` and ``inner_acts`` are (seq,)."""

    layer: str
    c: int
    ci: Tensor
    inner_acts: Tensor
    max_ci: float
    argmax_ci: int
    max_abs_act: float
    argmax_abs_act: int


def component_profile(
    model: ComponentModel, x: Tensor, layer: str, c: int, edit: Edit | None = None
) -> ComponentProfile:
    """CI and inner activation of component ``layer:c`` at every position of ``x``."""
    require(
        layer in model.layers, f"unknown layer {layer!r}; valid layers: {', '.join(model.layers)}"
    )
    C = model.layers[layer].C
    require(0 <= c < C, f"component index {c} out of range for layer {layer!r}; valid: 0..{C - 1}")
    res = compute_ci(model, x, edit)
    ci, acts = res.ci[layer][:, c], res.inner_acts[layer][:, c]
    return ComponentProfile(
        layer=layer,
        c=c,
        ci=ci,
        inner_acts=acts,
        max_ci=float(ci.max()),
        argmax_ci=int(ci.argmax()),
        max_abs_act=float(acts.abs().max()),
        argmax_abs_act=int(acts.abs().argmax()),
    )
