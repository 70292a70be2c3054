"""Do the components sum to the weights? Per decomposed matrix the relative norm
‖W − (VU)ᵀ‖ / ‖W‖ and the mean squared delta, whether the delta is negligible, and the warning
to show where it is not.

The delta Δ = W − (VU)ᵀ runs only under the all-ones (unmasked) regime; no CI mask includes it.
When it is not negligible, keeping only a set of components is not the same as removing its
complement, and a ``remove`` edit subtracts a rank-1 weight that W need not contain.
"""

from dataclasses import dataclass

from spd_core.model import ComponentModel

NEGLIGIBLE_REL_NORM = 0.01  # ‖Δ‖ / ‖W‖ at or below this in every matrix: the components sum to W
# run.json metrics: "<key>/<layer>" per matrix; overall "delta_mean_sq" and "delta_rel_norm_max"
REL_KEY, MEAN_SQ_KEY = "delta_rel_norm", "delta_mean_sq"


@dataclass(frozen=True)
class DeltaReport:
    """``rel_norm`` and ``mean_sq`` per layer; ``mean_sq_all`` = Σ‖Δ‖² / Σ entries over every
    matrix (the faithfulness loss)."""

    rel_norm: dict[str, float]
    mean_sq: dict[str, float]
    mean_sq_all: float

    @property
    def worst(self) -> tuple[str, float]:
        layer = max(self.rel_norm, key=self.rel_norm.__getitem__)
        return layer, self.rel_norm[layer]

    @property
    def negligible(self) -> bool:
        return self.worst[1] <= NEGLIGIBLE_REL_NORM

    def metrics(self) -> dict[str, float]:
        """Flat run.json metrics: the totals, then each matrix's relative norm and mean square."""
        out = {MEAN_SQ_KEY: self.mean_sq_all, f"{REL_KEY}_max": self.worst[1]}
        out |= {f"{REL_KEY}/{k}": v for k, v in self.rel_norm.items()}
        return out | {f"{MEAN_SQ_KEY}/{k}": v for k, v in self.mean_sq.items()}

    def summary(self) -> str:
        """One sentence: negligible or not, with the worst matrix."""
        layer, rel = self.worst
        if not self.negligible:
            return self.warning()
        return (
            f"The components sum to the weights: ‖W − (VU)ᵀ‖ / ‖W‖ ≤ {NEGLIGIBLE_REL_NORM:g} "
            f"in every matrix (largest {rel:.2g}, {layer}; mean squared delta "
            f"{self.mean_sq_all:.2g})."
        )

    def warning(self) -> str:
        layer, rel = self.worst
        n = sum(v > NEGLIGIBLE_REL_NORM for v in self.rel_norm.values())
        return (
            "WARNING: the components do not sum to the weights: ‖W − (VU)ᵀ‖ / ‖W‖ > "
            f"{NEGLIGIBLE_REL_NORM:g} in {n} of {len(self.rel_norm)} matrices (largest {rel:.3g}, "
            f"{layer}). The weight delta carries the rest and no CI mask includes it, so keep-only "
            "and remove ablations, edits and exported models are not exact parts of the weights "
            "(train with faithfulness_coeff > 0 to fix)."
        )


def weight_delta_report(model: ComponentModel) -> DeltaReport:
    """The delta of every decomposed matrix of ``model``, measured now."""
    rel, mean_sq, total_sq, total_n = {}, {}, 0.0, 0
    for layer, delta in model.weight_deltas().items():
        d = delta.detach().double()
        sq = float(d.pow(2).sum())
        norm = float(model.comp(layer).target_weight.double().norm())
        rel[layer] = sq**0.5 / max(norm, 1e-30)
        mean_sq[layer] = sq / d.numel()
        total_sq, total_n = total_sq + sq, total_n + d.numel()
    return DeltaReport(rel, mean_sq, total_sq / max(total_n, 1))
