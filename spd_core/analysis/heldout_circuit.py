"""A circuit found on some examples of a behaviour and measured on examples it was not found on.

``optimize_shared_circuit`` on the optimisation examples; then, on the held-out probes, the
circuit's score in every regime (``score_circuit``) and its validation (``validation.validate``:
necessity, sufficiency, and specificity on ``others``, probes of other behaviours or controls; a
control with target −1 gets the model's own answer), both under the same edit as the optimisation.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from spd_core.analysis.finder import Example
from spd_core.analysis.overlay import Edit, applied
from spd_core.analysis.regimes import RegimeSettings
from spd_core.analysis.shared_circuit import (
    RegimeScore,
    SharedCircuit,
    SharedCircuitConfig,
    SharedRegime,
    optimize_shared_circuit,
    score_circuit,
)
from spd_core.analysis.validation import (
    Probe,
    Validation,
    ValidationConfig,
    validate,
    with_model_answers,
)
from spd_core.model import ComponentModel

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class HeldOutCircuit:
    """``heldout``: the circuit's scores on the held-out examples (None without any);
    ``validation``: its validation there (None without held-out examples or with an empty
    circuit)."""

    circuit: SharedCircuit
    heldout: dict[SharedRegime, RegimeScore] | None
    validation: Validation | None


def as_example(probe: Probe, device: torch.device) -> Example:
    return Example(probe.as_input(device), probe.target, probe.position)


def circuit_with_heldout(
    model: ComponentModel,
    examples: Sequence[Example],
    heldout: Sequence[Probe] = (),
    others: Sequence[Probe] = (),
    config: SharedCircuitConfig | None = None,
    regimes: RegimeSettings | None = None,
    validation: ValidationConfig | None = None,
    progress: Progress | None = None,
    edit: Edit | None = None,
) -> HeldOutCircuit:
    """Optimise one circuit on ``examples``; score and validate it on ``heldout`` (module doc)."""
    steps = (config or SharedCircuitConfig()).steps

    def step(s: int, n: int, loss: float) -> None:
        if progress is not None:
            progress(s, n, f"step {s}/{n}, loss {loss:.4g}")

    circuit = optimize_shared_circuit(model, examples, config, step, edit, regimes)
    if not heldout:
        return HeldOutCircuit(circuit, None, None)
    keys = [k for k, _ in circuit.components]
    device = next(model.parameters()).device
    scores = score_circuit(model, [as_example(p, device) for p in heldout], keys, regimes, edit)
    if not keys:
        return HeldOutCircuit(circuit, scores, None)

    def checked(done: int, total: int) -> None:
        if progress is not None:
            progress(steps + done, steps + total, f"validation {done}/{total}")

    with applied(model, edit):
        controls = with_model_answers(model, others)
        checks = validate(model, heldout, controls, keys, config=validation, progress=checked)
    return HeldOutCircuit(circuit, scores, checks)
