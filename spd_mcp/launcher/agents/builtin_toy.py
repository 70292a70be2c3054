"""The built-in protocol on a toy run (a model that takes a feature vector): which component carries
which feature.

For each input feature i (the first ``MAX_FEATURES``): the model's output for feature i alone at
``FOUND_AT``; the components whose causal importance on that input is at least ``CI_MIN`` (the
feature's carriers, found on that one input only); then, on held-out inputs (feature i alone at
the other magnitudes of ``HELD_OUT_AT``), three checks through weight edits (``edit_component``,
which subtracts a component's rank-1 weight) and ``run_prompt``. Each output is read as the
decomposed layers' contribution: its value minus its value with every component removed (zero for a
TMS model; the input itself where a residual stream carries it past the decomposed layers):

- necessary: with the carriers removed, feature i's contribution keeps at most ``NECESSARY_MAX`` of
  its value;
- sufficient: with every other component removed (the carriers kept), it keeps within
  ``SUFFICIENT_TOL`` of its value;
- specific: with the carriers removed, every other investigated feature's output on its own input
  moves by at most ``SPECIFIC_TOL`` of its value.

A feature whose contribution is below ``REPRESENTED_MIN`` of its input is reported as not
represented. A feature's hypothesis is supported when all three hold, refuted when one fails. The
answer names each feature's carriers with the numbers; the investigation is completed only when
every represented feature investigated has a supported carrier set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from spd_mcp.contract.components import CIResult
from spd_mcp.contract.editing import EditResult
from spd_mcp.contract.model import RunPromptResult
from spd_mcp.launcher.agents.builtin_read import StepFailed

if TYPE_CHECKING:
    from spd_mcp.launcher.agents.builtin import Protocol

MAX_FEATURES = 20
FOUND_AT = (
    0.75  # the magnitude carriers are found at (the public implementation probes TMS at 0.75)
)
HELD_OUT_AT = (0.25, 0.5, 1.0)  # magnitudes the checks run on
CI_MIN = 0.5
REPRESENTED_MIN = 0.2  # output / input below this: the model does not represent the feature
NECESSARY_MAX = 0.1
SUFFICIENT_TOL = 0.2
SPECIFIC_TOL = 0.1
SPECIFIC_OTHERS = 10  # other features checked for each carrier set


@dataclass
class FeatureFinding:
    feature: int
    base: dict[float, float] = field(
        default_factory=dict
    )  # magnitude -> the feature's own contribution
    carriers: list[str] = field(default_factory=list)
    removed: dict[float, float] = field(default_factory=dict)  # output with the carriers removed
    alone: dict[float, float] = field(default_factory=dict)  # output with everything else removed
    others_moved: float | None = None  # largest relative change of another feature's output
    verdicts: dict[str, str] = field(default_factory=dict)

    @property
    def represented(self) -> bool:
        return self.base.get(FOUND_AT, 0.0) >= REPRESENTED_MIN * FOUND_AT

    @property
    def status(self) -> str:
        if not self.verdicts:
            return "inconclusive"
        return "supported" if set(self.verdicts.values()) == {"holds"} else "refuted"


def onehot(n: int, i: int, value: float) -> list[float]:
    return [value if j == i else 0.0 for j in range(n)]


def worst_ratio(after: dict[float, float], base: dict[float, float]) -> float:
    return max(abs(after[m]) / base[m] for m in after)


def verdicts(f: FeatureFinding) -> dict[str, str]:
    """holds / fails for each property, from the held-out numbers."""
    out = {
        "necessary": "holds" if worst_ratio(f.removed, f.base) <= NECESSARY_MAX else "fails",
        "sufficient": "holds"
        if max(abs(f.alone[m] / f.base[m] - 1) for m in f.alone) <= SUFFICIENT_TOL
        else "fails",
    }
    if f.others_moved is not None:
        out["specific"] = "holds" if f.others_moved <= SPECIFIC_TOL else "fails"
    return out


def finding_line(f: FeatureFinding) -> str:
    if not f.represented:
        return (
            f"- feature {f.feature}: not represented (contribution {f.base.get(FOUND_AT, 0.0):.3f} "
            f"for input {FOUND_AT})"
        )
    if not f.carriers:
        return f"- feature {f.feature}: no component with CI ≥ {CI_MIN} on its input"
    held = HELD_OUT_AT
    nums = (
        f"removed: {', '.join(f'{f.removed[m]:.3f}/{f.base[m]:.3f}' for m in held)}; alone: "
        f"{', '.join(f'{f.alone[m]:.3f}' for m in held)}"
    )
    moved = (
        "" if f.others_moved is None else f"; other features' outputs move ≤ {f.others_moved:.1%}"
    )
    return (
        f"- feature {f.feature} → {', '.join(f.carriers)}: **{f.status}** "
        f"({', '.join(f'{k} {v}' for k, v in f.verdicts.items())}; at inputs "
        f"{', '.join(map(str, held))}: {nums}{moved})"
    )


class ToySteps:
    """The toy protocol's steps, run through a ``Protocol``'s plumbing (calls, log, step
    records)."""

    def __init__(self, proto: Protocol) -> None:
        self.p = proto
        info = proto.info
        self.n = (info.input_dim or 0) if info is not None else 0
        self.layers = [(r.layer, r.C) for r in info.layers] if info is not None else []
        self.findings: list[FeatureFinding] = []
        self.floor: dict[
            tuple[int, float], float
        ] = {}  # (feature, value) -> output with no component
        self.none_id: str | None = None  # the edit that removes every component
        self.every = [f"{layer}:{c}" for layer, C in self.layers for c in range(C)]

    async def run(self) -> None:
        for name, fn in [
            ("feature outputs", self.outputs),
            ("carriers", self.carriers),
            ("validation", self.validation),
            ("hypotheses", self.hypotheses),
        ]:
            await self.p.step(name, fn)

    async def raw(self, i: int, value: float, edit_id: str | None = None) -> list[float]:
        args: dict[str, Any] = {"features": onehot(self.n, i, value), "top_k": 1}
        if edit_id is not None:
            args["edit_id"] = edit_id
        res = await self.p.ask(RunPromptResult, "run_prompt", args)
        return res.outputs or []

    async def output(self, i: int, value: float, edit_id: str | None = None) -> float:
        """Feature i's own output at input value, less what is left with every component removed."""
        if (i, value) not in self.floor:
            self.floor[(i, value)] = (await self.raw(i, value, self.none_id))[i]
        return (await self.raw(i, value, edit_id))[i] - self.floor[(i, value)]

    async def outputs(self) -> str:
        if self.n <= 0:
            raise StepFailed("get_model_info gave no input_dim for this toy run")
        first = await self.raw(0, FOUND_AT)
        if len(first) != self.n:
            raise StepFailed(
                f"the model maps {self.n} features to {len(first)} outputs; this protocol reads "
                "feature i's own output i, so it needs as many outputs as inputs"
            )
        self.none_id = await self.edit(self.every)
        for i in range(min(self.n, MAX_FEATURES)):
            f = FeatureFinding(i)
            for m in (FOUND_AT, *HELD_OUT_AT):
                f.base[m] = await self.output(i, m)
            self.findings.append(f)
        rep = [f for f in self.findings if f.represented]
        head = f"the first {MAX_FEATURES} of " if self.n > MAX_FEATURES else ""
        return (
            f"{head}{self.n} features, each alone at {FOUND_AT}, and the decomposed layers' "
            "contribution to its own output (the output less its value with every component "
            f"removed): {len(rep)} represented (contribution ≥ {REPRESENTED_MIN:.0%} of the "
            "input): " + ", ".join(f"{f.feature}: {f.base[FOUND_AT]:.3f}" for f in self.findings)
        )

    async def carriers(self) -> str:
        for f in self.findings:
            if not f.represented:
                continue
            res = await self.p.ask(
                CIResult,
                "get_ci",
                {"features": onehot(self.n, f.feature, FOUND_AT), "threshold": CI_MIN, "top_k": 50},
            )
            f.carriers = sorted(e.component for e in res.entries)
        if not any(f.carriers for f in self.findings):
            raise StepFailed(f"no component has CI ≥ {CI_MIN} on any feature's input")
        return (
            f"Components with CI ≥ {CI_MIN} on each feature alone at {FOUND_AT} (found there "
            "only):\n"
            + "\n".join(
                f"- feature {f.feature}: {', '.join(f.carriers) or 'none'}"
                for f in self.findings
                if f.represented
            )
        )

    async def edit(self, components: list[str]) -> str:
        res = await self.p.ask(
            EditResult,
            "edit_component",
            {"components": components, "method": "remove", "wait_s": 30},
        )
        return res.edit_id

    async def validation(self) -> str:
        checked = [f for f in self.findings if f.carriers]
        for f in checked:
            removed = await self.edit(f.carriers)
            alone = await self.edit([k for k in self.every if k not in f.carriers])
            for m in HELD_OUT_AT:
                f.removed[m] = await self.output(f.feature, m, removed)
                f.alone[m] = await self.output(f.feature, m, alone)
            others = [g for g in checked if g is not f][:SPECIFIC_OTHERS]
            moved = [
                abs(await self.output(g.feature, FOUND_AT, removed) / g.base[FOUND_AT] - 1)
                for g in others
            ]
            f.others_moved = max(moved) if moved else None
            f.verdicts = verdicts(f)
        return (
            "Each carrier set checked on held-out inputs (the feature alone at "
            f"{', '.join(map(str, HELD_OUT_AT))}; found at {FOUND_AT}) by removing it (necessary: "
            f"≤ {NECESSARY_MAX:.0%} of the output left), removing everything else (sufficient: "
            f"within {SUFFICIENT_TOL:.0%}) and, removed, running the other features (specific: "
            f"each moves ≤ {SPECIFIC_TOL:.0%}):\n"
            + "\n".join(finding_line(f) for f in self.findings)
        )

    async def hypotheses(self) -> str:
        lines = []
        for f in self.findings:
            if not f.verdicts:
                continue
            statement = (
                f"Feature {f.feature} is carried by {', '.join(f.carriers)}: removing them removes "
                "its output, they alone reproduce it, and the other features do not need them."
            )
            evidence = [
                f"edit_component + run_prompt on held-out inputs: {finding_line(f)[2:]}"[:2000]
            ]
            await self.p.call(
                "record_hypothesis",
                {
                    "hypothesis_id": f"h_feature_{f.feature}",
                    "statement": statement,
                    "status": f.status,
                    "evidence": evidence,
                },
            )
            lines.append(f"- h_feature_{f.feature}: **{f.status}**. {statement}")
        return "Hypotheses, one per feature, each judged by the held-out numbers:\n" + "\n".join(
            lines
        )

    def answer(self) -> tuple[str, bool]:
        """(the answer in words, whether it is conclusive)."""
        checked = [f for f in self.findings if f.verdicts]
        held = [f for f in checked if f.status == "supported"]
        rep = [f for f in self.findings if f.represented]
        if not checked:
            return "No feature's carrier set could be checked.", False
        mapping = "; ".join(
            f"feature {f.feature} → {', '.join(f.carriers)} ({f.status})" for f in checked
        )
        text = (
            f"Which component carries which feature: {mapping}. {len(held)} of {len(rep)} "
            "represented features have a carrier set that is necessary, sufficient and specific "
            "on held-out inputs."
        )
        return text, len(held) == len(rep) > 0
