"""The README's main command on the shipped demo run: the built-in agent investigates he/she, every
protocol step completes, and what it concludes is what its held-out validation measured; the stream
`--follow` printed reads once per step, in one line format, `…` wherever something is cut;
events.jsonl has one schema on every line (launcher and server wrote it at once)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sqlite3

import pytest

from spd_mcp.common.events import read_events, schema_problems
from spd_mcp.launcher import cli
from spd_mcp.launcher.layout import InvestigationDir, read_json
from spd_mcp.launcher.stream import BODY, ELLIPSIS, LOG_HEADING, LOG_TOOLS, UNCUT, event_line

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[InvestigationDir, int, str]:
    """One investigation of the demo run, followed: its directory, exit code and printed output."""
    out = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.delenv("ANTHROPIC_API_KEY", raising=False)
        rc = cli.main(
            [
                "How does the model choose between he and she?",
                "--agent",
                "builtin",
                "--executor",
                "local",
                "--run",
                "demo",
                "--out",
                str(out),
                "--follow",
            ]
        )
    (inv_dir,) = out.iterdir()
    return InvestigationDir(inv_dir), rc, printed.getvalue()


def test_builtin_investigation_of_the_demo_run(demo: tuple[InvestigationDir, int, str]) -> None:
    inv, rc, printed = demo
    assert rc == 0, printed[-3000:]
    steps = [
        e
        for e in read_events(inv.events)
        if e.get("kind") == "protocol_step" and e["step"] != "log"
    ]
    assert steps and all(e["outcome"] == "ok" for e in steps), [
        (e["step"], e["note"][:200]) for e in steps
    ]
    log = inv.research_log.read_text()
    assert "No language model was used" in log and "The question is about 'pronoun_gender'" in log
    hyps = [json.loads(line) for line in (inv.root / "hypotheses.jsonl").read_text().splitlines()]
    assert {h["id"] for h in hyps} == {"h_behaviour", "h_necessary", "h_specific", "h_sufficient"}
    (expl,) = [json.loads(x) for x in (inv.root / "explanations.jsonl").read_text().splitlines()]
    store = sqlite3.connect(inv.root / "store.sqlite")
    (cited,) = [
        json.loads(d)
        for (d,) in store.execute(
            "SELECT data FROM validations WHERE id = ?", (expl["validation_ids"][0],)
        )
    ]
    # held-out: none of the prompts the circuit was found on is among the validation's examples
    found_on = [
        c
        for c in read_events(inv.events)
        if c.get("kind") == "tool_call" and c.get("tool") == "validate_claim"
    ]
    excluded = set(found_on[0]["args"]["exclude"])
    assert excluded and not excluded & {r["text"] for r in cited["examples"]}
    supported = cited["necessity"] == "holds"
    assert expl["status"] == (
        "supported" if supported else "refuted" if cited["necessity"] == "fails" else "inconclusive"
    )
    assert read_json(inv.summary)["status"] == ("completed" if supported else "inconclusive")
    svgs = list((inv.root / "artifacts").glob("*.svg"))
    assert svgs and svgs[0].read_text().lstrip().startswith("<svg")


def followed_lines(printed: str) -> list[str]:
    """What `--follow` printed: after the launch lines, before the report (its `# title`)."""
    after = printed.split("follow it with: ", 1)[1].split("\n", 1)[1]
    return after.split("\n# ", 1)[0].splitlines()


def assert_cuts_marked(shown: str, full: str) -> None:
    """`shown` is `full` with parts left out, and each left-out part is marked by `…`."""
    pieces = shown.split(ELLIPSIS)
    assert full.startswith(pieces[0]), (shown, full)
    at = len(pieces[0])
    for piece in pieces[1:]:
        found = full.find(piece, at)
        assert found >= 0, f"{piece!r} of {shown!r} is not in {full!r}"
        at = found + len(piece)
    assert at == len(full) or shown.endswith(ELLIPSIS), (shown, full)


def folded(e: dict) -> bool:
    """Events the stream shows as their research-log section rather than as a line of their own."""
    log_call = e["source"] == "server" and e["kind"] == "tool_call" and e["tool"] in LOG_TOOLS
    return (log_call and e["outcome"] == "ok") or (
        e["source"] == "launcher" and e["kind"] == "protocol_step"
    )


def test_follow_prints_each_step_once_in_one_format(
    demo: tuple[InvestigationDir, int, str],
) -> None:
    inv, rc, printed = demo
    assert rc == 0, printed[-3000:]
    lines = followed_lines(printed)
    events = read_events(inv.events)
    assert not [line for line in lines if line.startswith("?:?")]
    event_re = re.compile(r"^\d\d:\d\d:\d\d (launcher|server  ) [a-z_]+( |$)")
    heading_re = re.compile(r"^\d\d:\d\d:\d\d log      ## \S")
    shown = [line for line in lines if event_re.match(line)]
    unknown = [
        line
        for line in lines
        if not (event_re.match(line) or heading_re.match(line) or line.startswith(BODY.rstrip()))
    ]
    assert not unknown, unknown[:5]

    # every event the stream does not fold into the log: one line each, in file order, in one format
    expected = [e for e in events if not folded(e)]
    assert len(shown) == len(expected)
    for line, e in zip(shown, expected, strict=True):
        assert line.startswith(f"{e['ts'][11:19]} {e['source']:<8} {e['kind']}"), (line, e)
        assert_cuts_marked(line, event_line(e, UNCUT))  # whatever is cut ends with …
    assert any(ELLIPSIS in line for line in shown)  # the demo's long prompts were cut

    # each step once: every research-log section appears exactly once, whole, and nothing else
    # stands for it (no update_research_log / record_hypothesis call, no protocol-step note)
    log = inv.research_log.read_text().splitlines()
    titles = [m.group(3) for line in log if (m := LOG_HEADING.match(line))]
    assert len(titles) == sum(folded(e) for e in events if e["kind"] == "tool_call") >= 10
    printed_titles = [line.split(" ## ", 1)[1] for line in lines if heading_re.match(line)]
    assert printed_titles == titles
    body = [line[len(BODY) :] for line in lines if line.startswith(BODY)]
    assert body == [line.rstrip() for line in log if line.strip() and not LOG_HEADING.match(line)]
    steps = [e["step"] for e in events if e["kind"] == "protocol_step" and e["step"] != "log"]
    assert steps and all(printed_titles.count(step) == 1 for step in steps)
    assert not [line for line in lines if any(t in line for t in ("protocol_step", *LOG_TOOLS))]


def test_events_of_the_demo_follow_one_schema(demo: tuple[InvestigationDir, int, str]) -> None:
    inv, _, _ = demo
    raw = inv.events.read_bytes().split(b"\n")
    assert raw[-1] == b""
    assert not [(i, p) for i, line in enumerate(raw[:-1]) for p in schema_problems(line)]
    seqs = [json.loads(line)["seq"] for line in raw[:-1]]
    assert seqs == list(range(1, len(seqs) + 1))
    sources = [json.loads(line)["source"] for line in raw[:-1]]
    assert {"launcher", "server"} <= set(sources)  # both wrote, while the other was running
    assert sources.index("server") < len(sources) - 1 - sources[::-1].index("launcher")
