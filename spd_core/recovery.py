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
def live_components(
    model: ComponentModel, layer: str, x: Tensor, ci_threshold: float = 0.1, norm_frac: float = 0.1
) -> list[int]:
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
    pieces = tms_pieces(comp.target_weight.cpu(), layer_reads_features=layer == "linear1").flatten(
        1
    )
    matches = []
    for c in live:
        w = comp.component_weight(c).cpu().flatten()
        cos = torch.nn.functional.cosine_similarity(w.unsqueeze(0), pieces, dim=1)
        f = int(cos.argmax())
        matches.append(ComponentMatch(c, f, float(cos[f]), float(w.norm() / pieces[f].norm())))
    return TMSLayerRecovery(layer, len(live), matches, len({m.feature for m in matches}))


@torch.no_grad()
def resid_mlp_owned(
    model: ComponentModel,
    layer: str,
    n_features: int,
    magnitude: float = 0.75,
    threshold: float = 0.1,
) -> set[int]:
    """The features owned by exactly one component of ``layer`` (see module docstring)."""
    x = magnitude * torch.eye(n_features, device=model.comp(layer).V.device)
    ci = model.causal_importance(model(x, cache_inputs=True).inputs).lower[layer]
    active = ci > threshold  # (n_features, C)
    per_component = active.sum(0)
    owned = set()
    for f in range(n_features):
        comps = active[f].nonzero().flatten()
        if len(comps) == 1 and per_component[comps[0]] == 1:
            owned.add(f)
    return owned


def resid_mlp_owned_features(
    model: ComponentModel,
    layer: str,
    n_features: int,
    magnitude: float = 0.75,
    threshold: float = 0.1,
) -> int:
    """Number of features owned by exactly one component of ``layer`` (see module docstring)."""
    return len(resid_mlp_owned(model, layer, n_features, magnitude, threshold))


# A TMS feature is recovered in a matrix when exactly one live component matches its rank-1 piece
# this closely (the SPD paper's result, checked by tests/core/test_recovery.py).
TMS_MIN_COSINE, TMS_NORM_RATIO = 0.98, (0.9, 1.1)


def tms_recovered(rec: TMSLayerRecovery) -> set[int]:
    """Features matched by exactly one live component, with cosine and norm ratio in range."""
    lo, hi = TMS_NORM_RATIO
    good = [
        m.feature for m in rec.matches if m.cosine >= TMS_MIN_COSINE and lo <= m.norm_ratio <= hi
    ]
    bad = {m.feature for m in rec.matches if m.feature not in good}
    return {f for f in good if good.count(f) == 1 and f not in bad}


@dataclass(frozen=True)
class RecoveryVerdict:
    """``recovered`` of ``n_features`` features were recovered in every checked matrix
    (``per_layer``: how many in each); ``check`` says what decided it."""

    recovered: int
    n_features: int
    per_layer: dict[str, int]
    check: str

    def line(self) -> str:
        layers = ", ".join(f"{k} {v}/{self.n_features}" for k, v in self.per_layer.items())
        return (
            f"verdict: features recovered {self.recovered} of {self.n_features} ({layers}); "
            f"check: {self.check}"
        )


def recovery_verdict(model: ComponentModel, kind: str, n_features: int) -> RecoveryVerdict | None:
    """The verdict for a toy target (``kind`` 'tms' or 'resid_mlp'); None when no matrix it
    checks is decomposed."""
    if kind == "tms":
        layers = [k for k in ("linear1", "linear2") if k in model.layers]
        found = {k: tms_recovered(tms_recovery(model, k, n_features)) for k in layers}
        lo, hi = TMS_NORM_RATIO
        check = (
            "with one feature at 0.75 as input, exactly one live component (CI > 0.1, norm "
            "> 0.1 of the largest) matches the feature's rank-1 piece of the weight with "
            f"cosine ≥ {TMS_MIN_COSINE} and norm ratio {lo}–{hi}, in {' and '.join(layers)}"
        )
    elif kind == "resid_mlp":
        layers = [k for k in model.layers if k.endswith(".mlp_in")]
        found = {k: resid_mlp_owned(model, k, n_features) for k in layers}
        check = (
            "with one feature at 0.75 as input, exactly one component of the layer's mlp_in "
            "has CI > 0.1, and it has CI > 0.1 for no other feature, in " + " and ".join(layers)
        )
    else:
        return None
    if not layers:
        return None
    everywhere = set.intersection(*found.values())
    per_layer = {k: len(v) for k, v in found.items()}
    return RecoveryVerdict(len(everywhere), n_features, per_layer, check)
