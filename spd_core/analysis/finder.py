"""Component finder: components needed in at least a given fraction of several examples of a
behaviour.

Per example, a component counts as needed when it is in the optimised circuit for the example's
prediction (``method="circuit"``) or has natural CI above ``ci_threshold`` (``method="ci"``), either
at the prediction position (``scope="position"``) or at any position (``scope="any"``).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from spd_core.analysis.ci import compute_ci
from spd_core.analysis.circuits import CircuitConfig, optimize_circuit
from spd_core.analysis.common import resolve
from spd_core.analysis.overlay import Edit
from spd_core.errors import require
from spd_core.keys import ComponentKey
from spd_core.model import ComponentModel


@dataclass(frozen=True)
class Example:
    """Token ids (1, seq); the model should predict ``target_token`` at ``position`` (the logit
    position)."""

    tokens: Tensor
    target_token: int
    position: int = -1


@dataclass(frozen=True)
class FoundComponent:
    key: ComponentKey
    frequency: float
    count: int


@dataclass(frozen=True)
class FinderResult:
    """Components needed in ≥ ``min_frequency`` of the examples, most frequent first;
    ``per_example`` lists each example's needed set."""

    components: list[FoundComponent]
    n_examples: int
    per_example: list[set[ComponentKey]]


def find_components(
    model: ComponentModel,
    examples: Sequence[Example],
    min_frequency: float = 0.7,
    method: Literal["circuit", "ci"] = "circuit",
    scope: Literal["position", "any"] = "position",
    ci_threshold: float = 0.0,
    circuit: CircuitConfig | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    edit: Edit | None = None,
) -> FinderResult:
    require(examples, "give at least one example {tokens, target_token, position}")
    require(0.0 < min_frequency <= 1.0, f"min_frequency must be in (0, 1]; got {min_frequency}")
    require(method in ("circuit", "ci"), f"method must be 'circuit' or 'ci'; got {method!r}")
    require(scope in ("position", "any"), f"scope must be 'position' or 'any'; got {scope!r}")
    per_example: list[set[ComponentKey]] = []
    for i, ex in enumerate(examples):
        if method == "circuit":
            ci = optimize_circuit(
                model, ex.tokens, ex.target_token, ex.position, circuit, edit=edit
            ).ci
        else:
            ci = compute_ci(model, ex.tokens, edit).ci
        needed: set[ComponentKey] = set()
        for layer, g in ci.items():
            rows = g[resolve(ex.position, g.shape[0])][None] if scope == "position" else g
            for c in (rows > ci_threshold).any(0).nonzero()[:, 0].tolist():
                needed.add(ComponentKey(layer, c))
        per_example.append(needed)
        if progress is not None:
            progress(i + 1, len(examples), float(len(needed)))
    counts: dict[ComponentKey, int] = {}
    for needed in per_example:
        for key in needed:
            counts[key] = counts.get(key, 0) + 1
    n = len(examples)
    found = [
        FoundComponent(k, c / n, c) for k, c in counts.items() if c / n >= min_frequency - 1e-12
    ]
    order = {name: i for i, name in enumerate(model.layers)}
    found.sort(key=lambda f: (-f.frequency, order[f.key.layer], f.key.c))
    return FinderResult(found, n, per_example)
