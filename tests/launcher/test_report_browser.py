"""The HTML pages in real headless Chromium: what they show, in what order, a screenshot kept (under
$SPD_MCP_SCREENSHOT_DIR when set, else the test's temporary folder), and the live server that
follows a running investigation."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from spd_mcp.launcher import cli
from spd_mcp.launcher.findings import evidence_numbers
from spd_mcp.launcher.layout import InvestigationDir, read_json, update_json
from tests.launcher.test_report_answer import write_investigation
from tests.server.test_graph_render_browser import measured_labels, overlapping
from tests.support.chromium import Chromium

ROOT = Path(__file__).resolve().parents[2]


def kept(tmp_path: Path, name: str) -> Path:
    return Path(os.environ.get("SPD_MCP_SCREENSHOT_DIR") or tmp_path) / name


def visible_text(dom: str) -> str:
    """The DOM's text without tags, styles or the drawings' hover titles, whitespace collapsed."""
    dom = re.sub(r"<(style|title)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    return " ".join(
        re.sub(r"<[^>]+>", " ", dom)
        .replace("&gt;", ">")
        .replace("&lt;", "<")
        .replace("&amp;", "&")
        .replace("&#x27;", "'")
        .replace("&quot;", '"')
        .split()
    )


def section(dom: str, section_id: str) -> str:
    """The visible text of the page's <section id=section_id> (its first nested section ends it)."""
    m = re.search(rf'<section[^>]*id="{section_id}"[^>]*>(.*?)</section>', dom, re.S)
    assert m, f"no section {section_id!r} in the page"
    return visible_text(m.group(1))


def test_investigation_page_in_chromium(chromium: Chromium, tmp_path: Path, capsys) -> None:
    inv = write_investigation(tmp_path / "inv-20261204-093156-aaaaaa")
    assert cli.main(["report", inv.root.name, "--html", "--out", str(tmp_path)]) == 0
    url = (inv.root / "report.html").as_uri()
    dom = chromium.dump_dom(url)
    assert "<title>inv-20261204-093156-aaaaaa: How does the model" in dom  # no planted script ran
    text = visible_text(dom)
    sections = ["Answer", "Hypotheses", "Circuit drawings", "Research log", "Timeline"]
    at = [text.index(s) for s in sections]
    assert at == sorted(at), text[:500]
    answer = text[at[0] : at[1]]
    for shown in (
        "0.mlp.down:7 writes 'he'",
        "One MLP component decides he over she",
        "writes 'he'",
        "' he'",
        "no direct path",
        "value=0.93, ci_low=0.88, ci_high=0.97",
        "Caveats",
        "tested on one mechanism's prompts only",
        "hypothesis h2 is refuted",
    ):
        assert shown in answer, f"{shown!r} not in the answer: {answer}"
    assert "0.mlp.down:7 ▸ he" in text[at[2] : at[3]]  # the drawing, inline
    assert (
        "<script>document.title='pwned'</script>" in text[at[3] : at[4]]
    )  # the log's markup, as text
    assert "unknown word 'Paris'" in text[at[4] :]
    width, height = chromium.screenshot(url, kept(tmp_path, "report_fixture.png"), 1280, 1800)
    assert (width, height) == (1280, 1800)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


def test_serve_follows_a_running_investigation(chromium: Chromium, tmp_path: Path) -> None:
    inv = write_investigation(tmp_path / "inv-20261204-093156-aaaaaa", status="running")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spd_mcp.launcher.cli",
            "serve",
            "--port",
            "0",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert m, line + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        base = m.group(0)
        status, index = _get(base)
        assert status == 200 and f'href="/inv/{inv.root.name}"' in index
        status, live = _get(f"{base}inv/{inv.root.name}")
        assert status == 200 and '<meta http-equiv="refresh" content="3">' in live
        assert "live: this page reloads itself" in live
        assert "0.mlp.down:7 writes" in visible_text(
            chromium.dump_dom(f"{base}inv/{inv.root.name}")
        )
        # The investigation ends: the next load says so and stops reloading.
        update_json(inv.metadata, lambda m: m.update(status="completed"))
        status, done = _get(f"{base}inv/{inv.root.name}")
        assert status == 200 and 'http-equiv="refresh"' not in done and ">completed<" in done
        assert _get(f"{base}inv/..%2F..%2Fetc")[0] == 404 and _get(f"{base}inv/inv-nope")[0] == 404
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.slow
def test_demo_investigation_and_swarm_pages(
    chromium: Chromium, tmp_path: Path, capsys, monkeypatch
) -> None:
    """The built-in agent on the demo run, once alone and once as a swarm of two; both pages in
    Chromium."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    question = "How does the model choose between he and she?"
    base = ["--agent", "builtin", "--executor", "local", "--out", str(tmp_path), "--follow"]
    assert cli.main([question, *base]) == 0
    assert cli.main([question, *base, "--swarm", "2", "--parallel", "1"]) == 0
    capsys.readouterr()
    (inv_dir,) = [p for p in tmp_path.glob("inv-*") if not re.search(r"-t\d\d$", p.name)]
    (swarm_dir,) = tmp_path.glob("swarm-*")
    assert cli.main(["report", inv_dir.name, "--html", "--out", str(tmp_path)]) == 0
    assert cli.main(["report", swarm_dir.name, "--html", "--out", str(tmp_path)]) == 0

    explanation = json.loads((inv_dir / "explanations.jsonl").read_text().splitlines()[-1])
    promotes = json.loads(next((inv_dir / "artifacts").glob("*.json")).read_text())["promotes"]
    dom = chromium.dump_dom((inv_dir / "report.html").as_uri())
    answer = section(dom, "answer")
    for c in explanation["components"]:
        assert c["component"] in answer
        if c["component"] not in promotes:  # no drawing covers it: nothing to show from one
            continue
        top = promotes[c["component"]]
        assert (repr(top) if top is not None else "no direct path") in answer, (c, top, answer)
    assert "Key numbers" in answer and "Caveats" in answer
    nums = evidence_numbers(explanation)  # whatever numbers the explanation carries, all shown
    assert all(f"{k} {v}" in answer for k, v in nums), [
        kv for kv in nums if f"{kv[0]} {kv[1]}" not in answer
    ]
    drawing = section(dom, "circuits")
    svg_path = next((inv_dir / "artifacts").glob("*.svg"))
    art = json.loads(svg_path.with_suffix(".json").read_text())
    # the page labels every component the drawing holds (the drawing is the explained set when that
    # set has an attribution graph; otherwise its caption names the candidate it shows)
    keys = [n["key"].split(":") for n in art["nodes"] if n["ci"] is not None]
    assert keys and all(f"{layer}:{c} ▸" in drawing for layer, _, c in keys)
    if not {f"{layer}:{c}" for layer, _, c in keys} >= {
        c["component"] for c in explanation["components"]
    }:
        assert "not the explained" in drawing
    # The demo's drawing in Chromium: every node drawn has a label, no two labels overlap,
    # <= 1600 px.
    boxes = measured_labels(chromium, svg_path.read_text(), tmp_path)
    drawn = {n["key"] for n in art["nodes"] if n["ci"] is not None} | {
        k for e in art["edges"] for k in (e["src"], e["tgt"])
    }
    assert {b["key"] for b in boxes} == drawn and all(b["text"].strip() for b in boxes)
    assert not overlapping(boxes)
    width, height = (
        int(x) for x in re.search(r'width="(\d+)" height="(\d+)"', svg_path.read_text()).groups()
    )
    assert width <= 1600
    png = kept(tmp_path, "circuit_demo.png")
    assert chromium.screenshot(svg_path.as_uri(), png, width, height) == (width, height)
    assert re.search(r"\d+ tool calls, 0 failed", section(dom, "timeline"))
    assert chromium.screenshot(
        (inv_dir / "report.html").as_uri(), kept(tmp_path, "report_investigation.png"), 1280, 2000
    ) == (1280, 2000)

    summary = read_json(swarm_dir / "swarm_summary.json")
    dom = chromium.dump_dom((swarm_dir / "report.html").as_uri())
    best = summary["claims"][0]
    answer = section(dom, "answer")
    assert f"Best claim by the aggregation's verified effect: {best['claim_id']}" in answer
    assert f"verified_effect {best['scores']['verified_effect']:.3g}" in answer
    assert all(c["claim_id"] in section(dom, "claims") for c in summary["claims"])
    tasks = visible_text(dom[dom.index('id="tasks"') :])
    for t in read_json(swarm_dir / "swarm.json")["tasks"]:
        assert t["inv_id"] in tasks and InvestigationDir(Path(t["inv_dir"])).summary.is_file()
    assert chromium.screenshot(
        (swarm_dir / "report.html").as_uri(), kept(tmp_path, "report_swarm.png"), 1280, 2000
    ) == (1280, 2000)
