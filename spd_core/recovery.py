"""Does a decomposition recover the known mechanisms of a toy target? (The SPD paper's checks.)

TMS: every feature f has a ground-truth rank-1 piece per matrix (linear1: W1[:, f]·e_fᵀ; linear2:
e_f·W2[f, :]); a live component should match exactly one piece (cosine similarity of the rank-1
matrices) with the same norm. Residual MLP: feature f is owned by a component of ``mlp_in`` when,
with only f active, exactly one component is causally important and it is important for no other
feature.
"""

from dataclasses import dataclass

import torch
from torch import Tensor

from spd_core.model import ComponentModel


@dataclass(frozen=True)
class ComponentMatch:
    component: int
    feature: int
    cosine: float
    norm_ratio: float


@dataclass(frozen=True)
class TMSLayerRecovery:
    layer: str
    n_live: int
    matches: list[ComponentMatch]
    features_covered: int


def component_norms(model: ComponentModel, layer: str) -> Tensor:
    """Frobenius norm of each rank-1 component, ‖V_c‖·‖U_c‖, shape (C,)."""
    comp = model.comp(layer)
    return comp.V.norm(dim=0) * comp.U.norm(dim=1)


@torch.no_grad()
def live_components(model: ComponentModel, layer: str, x: Tensor, ci_threshold: float = 0.1, norm_frac: float = 0.1) -> list[int]:
    """Components that fire (CI > threshold somewhere in ``x``) and have non-negligible norm."""
    ci = model.causal_importance(model(x, cache_inputs=True).inputs).lower[layer]
    fires = (ci > ci_threshold).flatten(0, -2).any(0)
    norms = component_norms(model, layer)
    big = norms > norm_frac * norms.max()
    return (fires & big).nonzero().flatten().tolist()


def tms_pieces(weight: Tensor, layer_reads_features: bool) -> Tensor:
    """Ground-truth rank-1 pieces, shape (n_features, d_out, d_in)."""
    if layer_reads_features:  # linear1: (n_hidden, n_features); piece f keeps column f
        eye = torch.eye(weight.shape[1], dtype=weight.dtype)
        return weight.unsqueeze(0) * eye.unsqueeze(1)
    eye = torch.eye(weight.shape[0], dtype=weight.dtype)  # linear2: keeps row f
    return weight.unsqueeze(0) * eye.unsqueeze(-1)


@torch.no_grad()
def tms_recovery(model: ComponentModel, layer: str, n_features: int) -> TMSLayerRecovery:
    comp = model.comp(layer)
    x = 0.75 * torch.eye(n_features, device=comp.V.device)
    live = live_components(model, layer, x)
    pieces = tms_pieces(comp.target_weight.cpu(), layer_reads_features=layer == "linear1").flatten(1)
    matches = []
    for c in live:
        w = comp.component_weight(c).cpu().flatten()
        cos = torch.nn.functional.cosine_similarity(w.unsqueeze(0), pieces, dim=1)
        f = int(cos.argmax())
        matches.append(ComponentMatch(c, f, float(cos[f]), float(w.norm() / pieces[f].norm())))
    return TMSLayerRecovery(layer, len(live), matches, len({m.feature for m in matches}))


@torch.no_grad()
def resid_mlp_owned_features(model: ComponentModel, layer: str, n_features: int, magnitude: float = 0.75, threshold: float = 0.1) -> int:
    """Number of features owned by exactly one component of ``layer`` (see module docstring)."""
    x = magnitude * torch.eye(n_features, device=model.comp(layer).V.device)
    ci = model.causal_importance(model(x, cache_inputs=True).inputs).lower[layer]
    active = ci > threshold  # (n_features, C)
    per_component = active.sum(0)
    owned = 0
    for f in range(n_features):
        comps = active[f].nonzero().flatten()
        if len(comps) == 1 and per_component[comps[0]] == 1:
            owned += 1
    return owned
