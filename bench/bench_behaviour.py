"""Behaviour choice: which of the demo run's mechanisms each question of bench/questions.jsonl is
about.

Run: OMP_NUM_THREADS=1 python -m bench.bench_behaviour [--show]
Starts the real MCP server on the demo run as a process, gathers evidence through the launcher's
client for every question (`behaviour_evidence.choose_behaviour_via_mcp`) and compares the choice
with the question's expected mechanism ("none": the run has no such behaviour, so None is right).
Rows: accuracy on all questions, per kind, per part (heldout: written before the chooser and not
used to tune it; dev: used while writing it).
"""

import argparse
import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

import anyio

from spd_mcp.launcher.agents.behaviour_choice import BehaviourChoice
from spd_mcp.launcher.agents.behaviour_evidence import choose_behaviour_via_mcp
from spd_mcp.launcher.mcp_link import connect
from spd_mcp.launcher.server_proc import server_argv, start_server, stop_server, wait_for_port

QUESTIONS = Path(__file__).with_name("questions.jsonl")


def load_questions(path: Path = QUESTIONS) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def choose_all(questions: Iterable[str], run: str = "demo") -> list[BehaviourChoice]:
    """The choice for every question, through one real server process of `run`."""
    qs = list(questions)
    with tempfile.TemporaryDirectory(prefix="bench-behaviour-") as tmp:
        work = Path(tmp)
        server = start_server(
            server_argv(run, work, work / "port"), work / "server.log", work / "port"
        )
        try:
            wait_for_port(server, 120)

            async def ask() -> list[BehaviourChoice]:
                async with connect(server.url, server.token) as client:
                    return [await choose_behaviour_via_mcp(client, q) for q in qs]

            return anyio.run(ask)
        finally:
            stop_server(server, grace_s=5)


def is_right(row: dict, choice: BehaviourChoice) -> bool:
    return (choice.mechanism or "none") == row["expected"]


def accuracy(rows: list[dict], choices: list[BehaviourChoice]) -> dict[str, str]:
    """'right/total' over all questions, per kind and per part."""
    groups: dict[str, list[bool]] = {"all": []}
    for row, choice in zip(rows, choices, strict=True):
        ok = is_right(row, choice)
        for key in ("all", f"kind={row['kind']}", f"part={row['part']}"):
            groups.setdefault(key, []).append(ok)
    return {k: f"{sum(v)}/{len(v)}" for k, v in groups.items()}


def run(quick: bool = False) -> list[dict]:
    rows = load_questions()
    choices = choose_all(r["question"] for r in rows)
    wrong = [
        f"{r['id']}->{c.mechanism or 'none'}"
        for r, c in zip(rows, choices, strict=True)
        if not is_right(r, c)
    ]
    return [
        {
            "bench": "behaviour choice on bench/questions.jsonl (demo run, real server)",
            **accuracy(rows, choices),
            "wrong": " ".join(wrong) or "none",
        }
    ]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--show", action="store_true", help="print every question's choice and reason")
    args = ap.parse_args()
    rows = load_questions()
    choices = choose_all(r["question"] for r in rows)
    if args.show:
        for r, c in zip(rows, choices, strict=True):
            mark = "ok " if is_right(r, c) else "BAD"
            print(
                f"{mark} {r['id']} [{r['kind']}] expected={r['expected']} got={c.mechanism}\n"
                f"    {r['question']}\n    {c.scores}\n    {c.reason}"
            )
    print(json.dumps(accuracy(rows, choices)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
