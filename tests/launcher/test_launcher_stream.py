"""The follow stream on hand-made events: one format, `…` on every cut, each step once, and a step
whose log entry failed still shown (once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spd_mcp.launcher.stream import ELLIPSIS, Stream, cut, event_line

TS = "2026-12-04T09:00:00.000+00:00"


def ev(source: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "schema": 2,
        "seq": 1,
        "ts": TS,
        "t": 0.0,
        "source": source,
        "agent_id": "a",
        "kind": kind,
        **fields,
    }


def call(tool: str, outcome: str = "ok", error: str | None = None, **args: Any) -> dict[str, Any]:
    return ev(
        "server", "tool_call", tool=tool, args=args, duration_ms=2.4, outcome=outcome, error=error
    )


def test_cut_marks_what_it_leaves_out() -> None:
    assert cut("short", 10) == "short"
    assert cut("a  b\n c", 10) == "a b c"  # one line
    assert cut("abcdefghijk", 5) == "abcd" + ELLIPSIS and len(cut("x" * 500, 40)) == 40
    line = event_line(
        ev("launcher", "server_ready", port=1, tools=[f"tool_{i}" for i in range(24)])
    )
    assert line == (
        "09:00:00 launcher server_ready port=1 tools=[tool_0, tool_1, tool_2, tool_3, …]"
    )
    long = event_line(call("run_prompt", text="the " * 100, top_k=5))
    assert long.startswith("09:00:00 server   tool_call run_prompt(text=the the")
    assert f"the{ELLIPSIS}, top_k=5) ok 2 ms" in long
    hashed = event_line(
        ev(
            "server",
            "tool_call",
            tool="run_prompt",
            args_sha256="0" * 64,
            args_bytes=4000,
            duration_ms=1.0,
            outcome="error",
            error="x " * 300,
        )
    )
    assert "run_prompt(4000 bytes of arguments) error 1 ms: x x" in hashed
    assert hashed.endswith(ELLIPSIS) and len(hashed) == 180


def test_each_step_once_and_a_step_whose_log_failed_still_shows(tmp_path: Path) -> None:
    log = tmp_path / "research_log.md"
    log.write_text(
        "\n## 2026-12-04T09:00:01+00:00 model info\n\nA model.\n\n| a | b |\n"
        "\n## 2026-12-04T09:00:02+00:00 Hypothesis h1 (supported)\n\nIt holds.\n"
    )
    stream = Stream(log)
    out: list[str] = []
    for e in [
        call("get_model_info"),
        ev("launcher", "protocol_step", step="model info", outcome="ok", note="A model."),
        call("update_research_log", heading="model info", markdown="A model."),
        call("record_hypothesis", hypothesis_id="h1"),
        call("ablate", outcome="error", error="unknown component 9.mlp:1"),
        ev("launcher", "tool_error", tool_name="ablate", message="unknown component"),
        ev("launcher", "protocol_step", step="ablation", outcome="failed", note="ablate failed"),
        call("update_research_log", outcome="error", error="disk full", heading="ablation"),
        ev("launcher", "tool_error", tool_name="update_research_log", message="disk full"),
        ev("launcher", "protocol_step", step="log", outcome="failed", note="disk full"),
        ev("launcher", "job_finished", status="incomplete"),
    ]:
        out += stream.lines(e)
    out += stream.finish()
    assert out == [
        "09:00:00 server   tool_call get_model_info() ok 2 ms",
        "09:00:01 log      ## model info",
        "                  | A model.",
        "                  |",
        "                  | | a | b |",
        "09:00:02 log      ## Hypothesis h1 (supported)",
        "                  | It holds.",
        "09:00:00 server   tool_call ablate() error 2 ms: unknown component 9.mlp:1",
        "09:00:00 server   tool_call update_research_log(heading=ablation) error 2 ms: disk full",
        "09:00:00 launcher protocol_step ablation failed: ablate failed",
        "09:00:00 launcher job_finished status=incomplete",
    ]
