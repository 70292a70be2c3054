"""The built-in protocol on questions of bench/questions.jsonl (demo run): two questions about one
behaviour in different words choose it and reach the same validated finding (what bench_findings
relies on to measure the protocol once per behaviour), and what they conclude is what the cited
validation measured on prompts the circuit was not found on."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from bench.bench_findings import investigate, lows

pytestmark = pytest.mark.slow
QUESTIONS = Path(__file__).resolve().parents[2] / "bench" / "questions.jsonl"


def _question(qid: str) -> dict:
    return next(q for q in map(json.loads, QUESTIONS.read_text().splitlines()) if q["id"] == qid)


def test_two_wordings_of_one_behaviour_reach_the_same_validated_finding(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    quoted, paraphrase = _question("h04"), _question("h05")
    assert quoted["expected"] == paraphrase["expected"] == "number_agreement"
    a = investigate(quoted["question"], tmp_path / "a")
    b = investigate(paraphrase["question"], tmp_path / "b")
    for res in (a, b):
        (inv,) = (tmp_path / ("a" if res is a else "b")).iterdir()
        log = (inv / "research_log.md").read_text()
        assert "The question is about 'number_agreement'" in log
        v = res["validation"]
        assert res["explanation"]["validation_ids"] == [v["validation_id"]]
        # the explanation claims what held, and only that
        held = v["necessity"] == "holds"
        assert res["explanation"]["status"] == (
            "supported" if held else "refuted" if v["necessity"] == "fails" else "inconclusive"
        )
        assert res["status"] == ("completed" if held else "inconclusive")
        # held-out: the prompts the candidates were found on are not among the validated examples
        calls = [json.loads(x) for x in (inv / "events.jsonl").read_text().splitlines()]
        excluded = {
            t
            for c in calls
            if c.get("kind") == "tool_call" and c.get("tool") == "validate_claim"
            for t in (c.get("args") or {}).get("exclude", [])
        }
        assert excluded and not excluded & {r["text"] for r in v["examples"]}
        store = sqlite3.connect(inv / "store.sqlite")
        assert store.execute("SELECT COUNT(*) FROM validations").fetchone()[0] >= 1
    assert a["validation"]["components"] == b["validation"]["components"]
    assert lows(a["validation"]) == lows(b["validation"])
