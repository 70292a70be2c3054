"""Grader: functional scores of a claimed circuit for a mechanism, and a simple search that finds
one.

Given probe prompts (token ids, target token, mechanism tag, optional foil, position) and a set of
components, measured per probe by ``spd_core.analysis.validation.measure`` (shared with validation):
- necessity: ablating the set (mode remove) on the mechanism's probes; ``necessity`` is the mean
  relative drop of the target probability, (p_before − p_removed) / p_before (1: destroyed, 0:
  untouched, negative: helped), with the accuracy before and after;
- sufficiency: keeping only the set (mode keep_only); ``sufficiency`` is the mean of
  min(p_kept / p_before, 1) (1: preserved), with the accuracy when kept;
- specificity: ablating the set on every other mechanism's probes; ``specificity`` is 1 − the mean
  relative drop there, clamped to [0, 1] per probe (1: the others are unharmed).
A probe is correct when the target is the strict argmax, or, with a foil, when p(target) > p(foil).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from spd_core.analysis.ablation import AblationRegime
from spd_core.analysis.ci import compute_ci
from spd_core.analysis.validation import MeasureSettings, Probe, measure
from spd_core.errors import require
from spd_core.harvest import encode
from spd_core.keys import ComponentKey
from spd_core.model import ComponentModel


def probes_from_prompts(prompts: Sequence[Mapping[str, Any]], tokenizer: Any) -> list[Probe]:
    """Probes from ``prompts.jsonl`` rows {text, target_token, mechanism, foil?, position?}."""
    out = []
    for p in prompts:
        ids = encode(tokenizer, p["text"])
        tok = encode(tokenizer, p["target_token"])
        require(
            len(tok) == 1,
            f"target token {p['target_token']!r} must be exactly one token; got {len(tok)}",
        )
        foil = None
        if p.get("foil"):
            f = encode(tokenizer, p["foil"])
            require(len(f) == 1, f"foil {p['foil']!r} must be exactly one token; got {len(f)}")
            foil = f[0]
        pos = p.get("position")
        out.append(
            Probe(ids, tok[0], str(p.get("mechanism", "")), foil, -1 if pos is None else int(pos))
        )
    return out


@dataclass(frozen=True)
class Grade:
    mechanism: str
    components: list[ComponentKey]
    n_probes: int
    necessity: float
    accuracy_before: float
    accuracy_removed: float
    sufficiency: float
    accuracy_kept: float
    specificity: float | None  # None when no other mechanism has probes
    other_drops: dict[str, float] = field(default_factory=dict)  # mechanism -> mean relative drop


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def grade_circuit(
    model: ComponentModel,
    probes: Sequence[Probe],
    mechanism: str,
    components: Sequence[ComponentKey],
    regime: AblationRegime = "deterministic",
    seed: int = 0,
) -> Grade:
    """Necessity, sufficiency and specificity of ``components`` for ``mechanism``; see the module
    doc."""
    mine = [p for p in probes if p.mechanism == mechanism]
    tags = sorted({p.mechanism for p in probes})
    require(mine, f"no probe has mechanism {mechanism!r}; valid: {', '.join(tags)}")
    require(components, "give at least one component to grade")
    settings = MeasureSettings(seed=seed)
    removed = [measure(model, p, "remove", regime, components, settings=settings) for p in mine]
    kept = [measure(model, p, "keep_only", regime, components, settings=settings) for p in mine]
    drops: dict[str, list[float]] = {}
    for p in probes:
        if p.mechanism != mechanism:
            o = measure(model, p, "remove", regime, components, settings=settings)
            drops.setdefault(p.mechanism, []).append(min(max(o.relative_drop, 0.0), 1.0))
    other = {m: _mean(v) for m, v in drops.items()}
    all_drops = [d for v in drops.values() for d in v]
    return Grade(
        mechanism=mechanism,
        components=list(components),
        n_probes=len(mine),
        necessity=_mean([o.relative_drop for o in removed]),
        accuracy_before=_mean([float(o.correct_before) for o in removed]),
        accuracy_removed=_mean([float(o.correct_after) for o in removed]),
        sufficiency=_mean([min(o.p_after / max(o.p_before, 1e-12), 1.0) for o in kept]),
        accuracy_kept=_mean([float(o.correct_after) for o in kept]),
        specificity=1.0 - _mean(all_drops) if all_drops else None,
        other_drops=other,
    )


def rank_by_ci(
    model: ComponentModel, probes: Sequence[Probe], mechanism: str
) -> list[tuple[ComponentKey, float]]:
    """Components by contrast: mean max-CI over the mechanism's probes minus that over the other
    probes.

    Max-CI is taken over the positions up to the prediction position (where the mechanism can act).
    """
    sums: dict[str, dict[bool, tuple[torch.Tensor, int]]] = {}
    device = next(model.parameters()).device
    for p in probes:
        res = compute_ci(model, torch.tensor([p.token_ids], device=device))
        mine = p.mechanism == mechanism
        for layer, g in res.ci.items():
            pos = p.position % g.shape[0]
            m = g[: pos + 1].max(0).values.cpu()
            total, n = sums.setdefault(layer, {}).get(mine, (torch.zeros_like(m), 0))
            sums[layer][mine] = (total + m, n + 1)
    require(any(True in v for v in sums.values()), f"no probe has mechanism {mechanism!r}")
    scored = []
    for layer, parts in sums.items():
        own = parts[True][0] / parts[True][1]
        rest = parts[False][0] / parts[False][1] if False in parts else torch.zeros_like(own)
        scored += [(ComponentKey(layer, c), float(v)) for c, v in enumerate(own - rest)]
    return sorted(scored, key=lambda kv: -kv[1])


def search_circuit(
    model: ComponentModel,
    probes: Sequence[Probe],
    mechanism: str,
    max_size: int = 8,
    pool: int = 16,
) -> list[ComponentKey]:
    """Greedy ablation search: from the ``pool`` best components by ``rank_by_ci``, repeatedly add
    the one that most raises necessity + sufficiency + specificity, stopping at ``max_size`` or when
    nothing helps."""
    candidates = [k for k, _ in rank_by_ci(model, probes, mechanism)[:pool]]
    chosen: list[ComponentKey] = []
    best_score = float("-inf")
    while len(chosen) < max_size:
        trials = []
        for k in candidates:
            if k in chosen:
                continue
            g = grade_circuit(model, probes, mechanism, [*chosen, k])
            trials.append(
                (
                    g.necessity
                    + g.sufficiency
                    + (g.specificity if g.specificity is not None else 1.0),
                    k,
                )
            )
        if not trials:
            break
        score, k = max(trials, key=lambda t: t[0])
        if score <= best_score + 1e-6:
            break
        chosen.append(k)
        best_score = score
    return chosen


def grade_claims(
    run: str,
    claims: Sequence[Mapping[str, Any]],
    max_probes: int | None = None,
    regime: AblationRegime = "deterministic",
) -> list[dict[str, Any]]:
    """Grades of claims {mechanism, components: ['<layer>:<c>', ...]} on a run's probe prompts, as
    dicts.

    ``max_probes`` keeps the first that many probes of every mechanism (all when None).
    """
    from spd_core.keys import parse_component_key
    from spd_core.run import load_run

    loaded = load_run(run)
    require(
        loaded.tokenizer is not None and loaded.probes,
        f"run {run!r} has no tokenizer or no probe prompts to grade on",
    )
    rows = [{**p, "target_token": p.get("target_token") or p["target"]} for p in loaded.probes]
    if max_probes is not None:
        seen: dict[str, int] = {}
        for p in rows:
            seen[p["mechanism"]] = seen.get(p["mechanism"], 0) + 1
            p["keep"] = seen[p["mechanism"]] <= max_probes
        rows = [p for p in rows if p.pop("keep")]
    probes = probes_from_prompts(rows, loaded.tokenizer)
    layer_c = loaded.model.layer_c()
    out = []
    with torch.no_grad():
        for claim in claims:
            comps = [parse_component_key(k, layer_c) for k in claim["components"]]
            g = grade_circuit(loaded.model, probes, str(claim["mechanism"]), comps, regime=regime)
            out.append(
                {
                    "mechanism": g.mechanism,
                    "components": [str(k) for k in g.components],
                    "regime": regime,
                    "n_probes": g.n_probes,
                    "necessity": g.necessity,
                    "accuracy_before": g.accuracy_before,
                    "accuracy_removed": g.accuracy_removed,
                    "sufficiency": g.sufficiency,
                    "accuracy_kept": g.accuracy_kept,
                    "specificity": g.specificity,
                    "other_drops": g.other_drops,
                }
            )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m spd_core.grader --run demo --mechanism M --components a b`` or ``--claims FILE``:
    JSON grades."""
    import argparse
    import json
    import sys
    from pathlib import Path

    ap = argparse.ArgumentParser(prog="python -m spd_core.grader", description=main.__doc__)
    ap.add_argument("--run", default="demo", help="run directory, or 'demo'")
    ap.add_argument("--mechanism", help="mechanism tag of the probe prompts (with --components)")
    ap.add_argument("--components", nargs="+", help="component keys '<layer>:<c>'")
    ap.add_argument("--claims", type=Path, help="JSON file: a list of {mechanism, components}")
    ap.add_argument(
        "--max-probes", type=int, default=None, help="probes per mechanism (default: all)"
    )
    ap.add_argument("--regime", default="deterministic", choices=["deterministic", "stochastic"])
    a = ap.parse_args(argv)
    if (a.claims is None) == (a.mechanism is None or a.components is None):
        ap.error("give --claims FILE, or --mechanism with --components (not both)")
    claims = (
        json.loads(a.claims.read_text())
        if a.claims
        else [{"mechanism": a.mechanism, "components": a.components}]
    )
    sys.stdout.write(json.dumps(grade_claims(a.run, claims, a.max_probes, a.regime)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
