"""Findings of the built-in protocol on the question set: behaviour chosen, honest "inconclusive",
and each saved explanation's held-out numbers.

Run: OMP_NUM_THREADS=1 python -m bench.bench_findings
Every question of bench/questions.jsonl goes through the behaviour choice (bench_behaviour, real
server). After that choice the protocol depends on the behaviour alone (its prompts, candidates and
validation are seeded), so one full investigation (`spd-investigate --agent builtin`, local
executor, the demo run) per distinct behaviour chosen, plus one for a question answered "none",
gives every question's outcome; tests/launcher/test_findings.py checks that two questions of one
behaviour give the same validation. Rows: choice accuracy, inconclusive on the "none" questions, and
per behaviour the explanation's status with held-out necessity (goal >= 0.5), specificity (>= 0.8)
and, where claimed, sufficiency (>= 0.5), each the lower end of its 95% interval in the
deterministic and the stochastic regime (the verdict's own rule).
"""

import contextlib
import io
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_behaviour import accuracy, choose_all, is_right, load_questions
from spd_mcp.contract.validation import ValidationResult
from spd_mcp.launcher import cli
from spd_mcp.launcher.agents.builtin_read import lowest
from spd_mcp.launcher.layout import InvestigationDir, read_json

GOALS = {"necessity": 0.5, "specificity": 0.8, "sufficiency": 0.5}


def investigate(question: str, out: Path, run: str = "demo") -> dict[str, Any]:
    """One built-in investigation; its summary status, explanation and the validation it cites."""
    with contextlib.redirect_stdout(
        io.StringIO()
    ):  # the followed stream: not part of the bench's output
        rc = cli.main(
            [
                question,
                "--agent",
                "builtin",
                "--executor",
                "local",
                "--run",
                run,
                "--out",
                str(out),
                "--follow",
            ]
        )
    assert rc in (0, 1), f"spd-investigate exited {rc}"
    (inv_dir,) = sorted(out.iterdir())[-1:]
    inv = InvestigationDir(inv_dir)
    result: dict[str, Any] = {"status": read_json(inv.summary).get("status"), "explanation": None}
    expl_path = inv.root / "explanations.jsonl"
    if expl_path.exists():
        expl = json.loads(expl_path.read_text().splitlines()[-1])
        result["explanation"] = {
            k: expl.get(k) for k in ("status", "confidence", "claims", "validation_ids")
        }
        if expl.get("validation_ids"):
            store = sqlite3.connect(inv.root / "store.sqlite")
            (data,) = store.execute(
                "SELECT data FROM validations WHERE id = ?", (expl["validation_ids"][0],)
            ).fetchone()
            result["validation"] = json.loads(data)
    return result


def lows(v: dict[str, Any]) -> dict[str, float | None]:
    """Each property's lowest interval end over the deterministic and stochastic regimes, by the
    protocol's own reading (``builtin_read.lowest``) of the stored validation."""
    parsed = ValidationResult.model_validate(v)
    return {prop: lowest(parsed, prop) for prop in GOALS}


def run(quick: bool = False) -> list[dict]:
    rows = load_questions()
    choices = choose_all(r["question"] for r in rows)
    rows_out: list[dict] = [
        {
            "bench": "built-in protocol: behaviour chosen on bench/questions.jsonl",
            **accuracy(rows, choices),
        }
    ]
    by_behaviour: dict[str, str] = {}
    for row, choice in zip(rows, choices, strict=True):
        key = choice.mechanism or "none"
        if is_right(row, choice):
            by_behaviour.setdefault(key, row["question"])
    with tempfile.TemporaryDirectory(prefix="bench-findings-") as tmp:
        for behaviour, question in sorted(by_behaviour.items()):
            res = investigate(question, Path(tmp) / behaviour)
            row: dict[str, Any] = {
                "bench": f"built-in protocol on '{behaviour}' (question: {question[:70]})",
                "summary_status": res["status"],
            }
            if res["explanation"]:
                row |= {
                    "explanation": res["explanation"]["status"],
                    "claims": ",".join(res["explanation"]["claims"]),
                }
            if res.get("validation"):
                v = res["validation"]
                row |= {
                    "n_held_out": v["n_examples"],
                    **{f"{k}_low": None if x is None else round(x, 3) for k, x in lows(v).items()},
                    **{k: v[k] for k in GOALS},
                }
            rows_out.append(row)
            if quick:
                break
    nones = [(r, c) for r, c in zip(rows, choices, strict=True) if r["expected"] == "none"]
    rows_out.append(
        {
            "bench": "questions about behaviours the model does not have",
            "answered_none": f"{sum(c.mechanism is None for _, c in nones)}/{len(nones)}",
        }
    )
    return rows_out


if __name__ == "__main__":
    for r in run():
        print(json.dumps(r))
