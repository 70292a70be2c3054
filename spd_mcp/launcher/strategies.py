"""The starting strategies of a swarm's agents: a sentence for a language model, parameters for the
built-in one.

`--swarm N` gives task i the strategy `STRATEGIES[i % len(STRATEGIES)]` and, once every strategy
is used, moves the subject to a later probe prompt (`prompt_shift`), so no two tasks start alike.
A language-model agent reads `description` in its prompt; the built-in protocol follows
`circuit_source`, `prompt_index` and `circuit_args`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

CircuitSource = Literal["optimize_circuit", "get_ci", "find_components"]


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    circuit_source: CircuitSource
    prompt_index: int = 0  # which probe prompt of the mechanism is the subject
    circuit_args: dict[str, Any] = field(default_factory=dict)


STRATEGIES: tuple[Strategy, ...] = (
    Strategy(
        "optimized-circuit",
        "Start from an optimized circuit: run optimize_circuit on the first probe prompt of the "
        "mechanism and test the circuit it returns by ablation.",
        "optimize_circuit",
    ),
    Strategy(
        "top-ci",
        "Start from causal importance: take the components with the largest CI at the prediction "
        "(get_ci) as the candidate circuit, without optimizing, and test them by ablation.",
        "get_ci",
    ),
    Strategy(
        "sparse-circuit",
        "Start from a deliberately small circuit: run optimize_circuit with a strong sparsity "
        "penalty (sparsity 1.0) and test whether so few components still carry the prediction.",
        "optimize_circuit",
        circuit_args={"sparsity": 1.0},
    ),
    Strategy(
        "other-prompt",
        "Start from a different example: optimize the circuit on the second probe prompt of the "
        "mechanism, not the first, and test whether it generalizes.",
        "optimize_circuit",
        prompt_index=1,
    ),
    Strategy(
        "shared-components",
        "Start from what several prompts share: run find_components over four probe prompts of "
        "the mechanism and test the components needed on most of them.",
        "find_components",
        circuit_args={"method": "ci", "ci_threshold": 0.5, "min_frequency": 0.75},
    ),
    Strategy(
        "stochastic-circuit",
        "Start from a robust circuit: run optimize_circuit under stochastic masks (mask "
        "'stochastic') so that the circuit must work when other components are partly on.",
        "optimize_circuit",
        circuit_args={"mask": "stochastic"},
    ),
)
BY_NAME: dict[str, Strategy] = {s.name: s for s in STRATEGIES}


def strategy_for_task(index: int) -> Strategy:
    """Task `index`'s strategy: the list in order, then again on later subject prompts."""
    assert index >= 0, f"task index must be >= 0, got {index}"
    base = STRATEGIES[index % len(STRATEGIES)]
    shift = index // len(STRATEGIES)
    if shift == 0:
        return base
    return replace(
        base,
        name=f"{base.name}@prompt{base.prompt_index + shift * 2}",
        prompt_index=base.prompt_index + shift * 2,
        description=f"{base.description} Use probe prompt number "
        f"{base.prompt_index + shift * 2 + 1} of the mechanism as the subject.",
    )


def strategy_named(name: str) -> Strategy:
    """The strategy a task was given (including the `@promptK` variants); ValueError naming the
    choices."""
    base, _, shifted = name.partition("@prompt")
    if base not in BY_NAME or (shifted and not shifted.isdigit()):
        raise ValueError(
            f"unknown strategy {name!r}: choose one of {', '.join(BY_NAME)} "
            "(optionally suffixed @promptK)"
        )
    s = BY_NAME[base]
    return replace(s, name=name, prompt_index=int(shifted)) if shifted else s
