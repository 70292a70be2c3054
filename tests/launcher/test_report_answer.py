"""`report` and `status` state the answer, and `report --html` writes one safe, self-contained page,
from an
investigation directory written file by file as the server and the launcher write them: both event
schemas, a second hypothesis version, an explanation carrying numbers with intervals, a failed tool
call, hostile markup in the log, and a drawing with a script planted in it."""

from __future__ import annotations

import json
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

from spd_mcp.launcher import cli
from spd_mcp.launcher.findings import caveats, evidence_numbers, read_event_lines, read_findings
from spd_mcp.launcher.layout import InvestigationDir

QUESTION = "How does the model choose between he and she?"
EXPLANATION = {
    "subject_prompt": "tom rested behind the wild library so",
    "behaviour": "predicts 'he' (pronoun_gender)",
    "explanation": "0.mlp.down:7 writes the male pronoun.",
    "confidence": "medium",
    "components": [
        {"component": "0.mlp.down:7", "role": "writes 'he'", "interpretation": "male subject"},
        {"component": "0.mlp.up:31", "role": "reads the subject", "interpretation": ""},
    ],
    "evidence": [
        {
            "kind": "ablation",
            "description": "remove: p(he) 1.00 -> 0.02",
            "reference": "call 12",
            "p_before": 1.0,
            "p_after": 0.02,
        }
    ],
    "validation": {"necessity": {"value": 0.93, "ci_low": 0.88, "ci_high": 0.97}, "n_prompts": 40},
    "status": "supported",
    "verdict": ["necessity holds"],
    "validations": [
        {
            "validation_id": 3,
            "necessity": "holds",
            "n_examples": 40,
            "regimes": [  # as validate_claim stores them: a list, each item named by its regime
                {"regime": "deterministic", "necessity": {"mean": 0.91, "low": 0.85, "high": 0.96}}
            ],
            "summary": "removing the set drops p on 38 of 40 held-out prompts",
        }
    ],
    "limitations": ["tested on one mechanism's prompts only"],
    "alternatives": ["an attention route"],
    "ts": "2026-12-04T09:32:04+00:00",
    "agent": "agent",
}


class Tags(HTMLParser):
    """Every start tag of a page with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append((tag, attrs))


def write_investigation(root: Path, status: str = "completed") -> InvestigationDir:
    root.mkdir(parents=True)
    (root / "metadata.json").write_text(
        json.dumps(
            {
                "question": QUESTION,
                "status": status,
                "agent": "builtin",
                "run": "demo",
                "executor": "local",
                "created": "2026-12-04T09:31:57+00:00",
                "job_ids": ["1"],
                "attempts": 1,
            }
        )
    )
    (root / "summary.json").write_text(
        json.dumps(
            {
                "title": "0.mlp.down:7 writes 'he'",
                "status": "completed",
                "summary": "One MLP component decides he over she; removing it flips the "
                "prediction.",
            }
        )
    )
    (root / "explanations.jsonl").write_text(json.dumps(EXPLANATION) + "\n")
    hyps = [
        {
            "id": "h1",
            "version": 1,
            "statement": "0.mlp.down:7 is necessary",
            "status": "proposed",
            "evidence": [],
        },
        {
            "id": "h1",
            "version": 2,
            "statement": "0.mlp.down:7 is necessary",
            "status": "supported",
            "evidence": ["ablate: p 1.00 -> 0.02"],
        },
        {
            "id": "h2",
            "version": 1,
            "statement": "attention alone suffices",
            "status": "refuted",
            "evidence": ["keep_only: p 1.00 -> 0.10"],
        },
    ]
    (root / "hypotheses.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hyps))
    (root / "research_log.md").write_text(
        "## 09:32 ablation\n\nRemoving **0.mlp.down:7** drops p(he).\n\n| mode | p |\n| --- | --- "
        "|\n"
        "| remove | 0.02 |\n\n<script>document.title='pwned'</script> <img src=x "
        "onerror=alert(1)>\n\n"
        "![circuit](artifacts/circuit_1.svg)\n\n[evil](javascript:alert(1))\n"
    )
    events = [
        {
            "schema": 1,
            "seq": 1,
            "ts": "2026-12-04T09:31:57.305+00:00",
            "t": 1796376717.3,
            "agent_id": "inv-x",
            "source": "launcher",
            "kind": "job_started",
            "job_id": "1",
        },
        {
            "v": 1,
            "seq": 2,
            "ts": "2026-12-04T09:32:00.5+00:00",
            "t_unix": 1796376720.5,
            "agent": "agent",
            "type": "tool_call",
            "tool": "ablate",
            "args": {"text": "x"},
            "duration_ms": 40.0,
            "outcome": "ok",
            "error": None,
        },
        {
            "schema": 1,
            "seq": 3,
            "ts": "2026-12-04T09:32:04+00:00",
            "t": 1796376724.0,
            "agent_id": "inv-x",
            "source": "launcher",
            "kind": "job_finished",
            "status": status,
        },
    ]
    (root / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + '{"torn": ')
    con = sqlite3.connect(root / "store.sqlite")
    con.execute(
        "CREATE TABLE tool_calls (id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER, tool TEXT NOT "
        "NULL, "
        "args TEXT NOT NULL, duration_ms REAL NOT NULL, outcome TEXT NOT NULL, error TEXT, created "
        "REAL NOT NULL)"
    )
    con.executemany(
        "INSERT INTO tool_calls (seq, tool, args, duration_ms, outcome, error, created) VALUES "
        "(?,?,?,?,?,?,?)",
        [
            (2, "ablate", '{"text": "x"}', 40.0, "ok", None, 1796376720.5),
            (3, "get_ci", '{"text": "Paris"}', 3.0, "error", "unknown word 'Paris'", 1796376721.0),
        ],
    )
    con.commit()
    con.close()
    (root / "artifacts").mkdir()
    (root / "artifacts" / "circuit_1.json").write_text(
        json.dumps(
            {
                "id": "circuit_1",
                "caption": "optimized circuit for 'he'",
                "promotes": {"0.mlp.down:7": " he", "0.mlp.up:31": None},
            }
        )
    )
    (root / "artifacts" / "circuit_1.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="300" height="60" '
        "onload=\"document.title='pwned'\">"
        '<script>document.title="pwned"</script><rect width="300" height="60" fill="white"/>'
        '<a href="javascript:alert(1)"><text x="5" y="20">bad link</text></a>'
        '<text class="node-label" x="10" y="40">0.mlp.down:7 ▸ he</text></svg>'
    )
    return InvestigationDir(root)


def test_one_reader_takes_both_event_schemas(tmp_path: Path) -> None:
    inv = write_investigation(tmp_path / "inv-20261204-093156-aaaaaa")
    events = read_event_lines(inv.events)
    assert [(e.source, e.kind) for e in events] == [
        ("launcher", "job_started"),
        ("server", "tool_call"),
        ("launcher", "job_finished"),
    ]
    assert (
        events[1].t == 1796376720.5
        and events[1].fields["tool"] == "ablate"
        and events[0].t == 1796376717.3
    )


def test_numbers_of_an_explanation_are_found_whatever_its_fields() -> None:
    nums = dict(evidence_numbers(EXPLANATION))
    assert nums == {
        "validations[0].validation_id": "3",
        "validations[0].n_examples": "40",
        "validations[0].regimes[deterministic].necessity": "mean=0.91, low=0.85, high=0.96",
        "validation.necessity": "value=0.93, ci_low=0.88, ci_high=0.97",
        "validation.n_prompts": "40",
        "ablation.p_before": "1",
        "ablation.p_after": "0.02",
    }


def test_report_and_status_state_the_answer(tmp_path: Path, capsys) -> None:
    inv = write_investigation(tmp_path / "inv-20261204-093156-aaaaaa")
    assert cli.main(["report", "latest", "--out", str(tmp_path)]) == 0
    report = capsys.readouterr().out
    for expected in (
        "answer (completed): 0.mlp.down:7 writes 'he'",
        "One MLP component decides he over she",
        "predicts 'he' (pronoun_gender) (confidence medium)",
        "0.mlp.down:7     writes 'he'; male subject; promotes ' he'",
        "0.mlp.up:31      reads the subject; no direct path to the logits",
        "validation.necessity: value=0.93, ci_low=0.88, ci_high=0.97",
        "ablation.p_after: 0.02",
        "hypotheses: h1 supported, h2 refuted",
        "status supported (necessity holds)",
        "validation 3: necessity holds: removing the set drops p on 38 of 40 held-out prompts",
        "validations[0].regimes[deterministic].necessity: mean=0.91, low=0.85, high=0.96",
        "tested on one mechanism's prompts only",
        "hypothesis h2 is refuted: attention alone suffices",
        "1 of 2 tool calls failed (first: get_ci: unknown word 'Paris')",
    ):
        assert expected in report, f"{expected!r} missing from:\n{report}"
    assert cli.main(["status", inv.root.name, "--out", str(tmp_path)]) == 0
    status = capsys.readouterr().out
    assert (
        "answer (completed): 0.mlp.down:7 writes 'he'" in status
        and "validation.necessity" in status
    )
    assert "summary (completed): " + QUESTION not in status


def test_html_report_is_self_contained_and_escapes_everything(tmp_path: Path, capsys) -> None:
    inv = write_investigation(tmp_path / "inv-20261204-093156-aaaaaa")
    assert cli.main(["report", inv.root.name, "--html", "--out", str(tmp_path)]) == 0
    assert f"wrote {inv.root / 'report.html'}" in capsys.readouterr().out
    page = (inv.root / "report.html").read_text()
    tags = Tags()
    tags.feed(page)
    assert not {"script", "img", "iframe", "object", "embed", "foreignobject"} & {
        t for t, _ in tags.seen
    }
    attrs = [(t, k, v or "") for t, a in tags.seen for k, v in a]
    assert not [x for x in attrs if x[1].startswith("on")], (
        "event handler attributes reached the page"
    )
    hrefs = [v for _, k, v in attrs if k in ("href", "src", "xlink:href")]
    assert hrefs and all(h.startswith("#") for h in hrefs), (
        hrefs
    )  # in-page links only: nothing from outside
    assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt;" in page  # shown as text
    order = [
        page.index(f'id="{s}"') for s in ("answer", "hypotheses", "circuits", "log", "timeline")
    ]
    assert order == sorted(order)
    assert (
        "<table><thead><tr><th>mode</th><th>p</th></tr></thead>" in page
    )  # the log's table, rendered
    assert (
        '<a href="#art-circuit_1">circuit (drawing)</a>' in page
    )  # the log's image points at the drawing
    assert (
        "value=0.93, ci_low=0.88, ci_high=0.97" in page and "unknown word &#x27;Paris&#x27;" in page
    )
    assert 'http-equiv="refresh"' not in page  # finished: no reloading
    f = read_findings(inv)
    assert [c.outcome for c in f.calls] == ["ok", "error"] and f.hypotheses[0].history == [
        "proposed",
        "supported",
    ]


def test_an_unvalidated_explanation_is_a_caveat(tmp_path: Path) -> None:
    inv = write_investigation(tmp_path / "inv-20261204-093156-aaaaaa")
    unvalidated = {
        **EXPLANATION,
        "status": "unvalidated",
        "validations": [],
        "verdict": ["no validation: call validate_claim and cite its validation_id"],
    }
    (inv.root / "explanations.jsonl").write_text(json.dumps(unvalidated) + "\n")
    notes = caveats(read_findings(inv))
    assert notes[0] == (
        "explanation 1 (predicts 'he' (pronoun_gender)) is unvalidated: no validation: "
        "call validate_claim and cite its validation_id"
    )


def test_number_tables_and_caveats_shared_by_both_pages_escape_and_vanish_when_empty() -> None:
    """html_report.num_table and caveats_block serve the investigation and the swarm page."""
    from spd_mcp.launcher.html_report import caveats_block, num_table

    assert num_table([]) == "" and caveats_block([]) == []
    table = num_table([("p<b>", "0.5 & 1"), ("n", "40")])
    tags = Tags()
    tags.feed(table)
    assert [t for t, _ in tags.seen] == ["table", "tbody", "tr", "th", "td", "tr", "th", "td"]
    assert [a for t, a in tags.seen if t == "td"] == [[("class", "num")]] * 2
    assert "<th>p&lt;b&gt;</th>" in table and ">0.5 &amp; 1</td>" in table
    (block,) = caveats_block(["one", "<script>x</script>"])
    assert block == (
        '<h3>Caveats</h3><ul class="caveats"><li>one</li>'
        "<li>&lt;script&gt;x&lt;/script&gt;</li></ul>"
    )
