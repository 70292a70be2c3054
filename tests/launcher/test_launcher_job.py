"""The job body end to end: submitit LocalExecutor, the stand-in server, the API agent on the fake
API."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest
from support.fake_messages_api import FakeMessagesAPI, ToolCall, Turn

from spd_mcp.common.events import read_events
from spd_mcp.launcher import cli
from spd_mcp.launcher.job import run_job
from spd_mcp.launcher.layout import InvestigationDir, read_json
from spd_mcp.launcher.stream import BODY
from spd_mcp.launcher.submit import submit
from spd_mcp.launcher.watch import follow, list_investigations, report_text, status_text
from tests.launcher.launcher_support import STANDIN, make_spec

SCRIPT = [
    Turn(
        tool_calls=(ToolCall("update_research_log", {"req": {"markdown": "Plan: sanity checks."}}),)
    ),
    Turn(
        tool_calls=(ToolCall("get_model_info", {}), ToolCall("run_prompt", {"text": "so she said"}))
    ),
    Turn(
        tool_calls=(
            ToolCall(
                "set_investigation_summary",
                {"req": {"title": "He or she", "summary": "Answered.", "status": "completed"}},
            ),
        )
    ),
    Turn(text="Done."),
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}/stat").exists()
        and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    )


@pytest.mark.slow
def test_cli_launches_a_local_job_and_follows_it(tmp_path: Path, api_env, capsys) -> None:
    """`spd-investigate "..." --follow` through LocalExecutor, then the watching subcommands."""
    runs = tmp_path / "runs"
    question = "How does the model choose between he and she?"
    with FakeMessagesAPI(SCRIPT) as api:
        api_env(api.url)
        rc = cli.main(
            [
                question,
                "--agent",
                "anthropic_api",
                "--executor",
                "local",
                "--out",
                str(runs),
                "--follow",
                "--server-cmd",
                " ".join(STANDIN),
            ]
        )
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert (
        "agent: anthropic_api (requested)" in printed and "executor: local (requested)" in printed
    )
    # the stream (stream.py): the research log's text whole, then every event in one format
    assert f"{BODY}Plan: sanity checks." in printed and " launcher job_finished " in printed
    assert "# He or she" in printed  # the report printed at the end
    (inv_dir,) = runs.iterdir()
    inv = InvestigationDir(inv_dir)
    meta = read_json(inv.metadata)
    spec = make_spec(runs).model_copy(update={"inv_id": inv_dir.name, "inv_dir": str(inv_dir)})
    outcome = meta["outcome"]
    assert outcome["ok"] and outcome["status"] == "completed" and outcome["turns"] == 4, outcome
    assert meta["job_ids"] == [outcome["job_id"]] and meta["attempts"] == 1
    assert (meta["agent"], meta["executor"], meta["status"]) == (
        "anthropic_api",
        "local",
        "completed",
    )
    assert meta["question"] == spec.question and "mcp" in meta["versions"]
    prompt = inv.prompt.read_text()
    assert (
        spec.question in prompt and "A 2-layer stand-in model." in prompt
    )  # facts from get_model_info
    assert stat.S_IMODE(inv.mcp_config.stat().st_mode) == 0o600
    cfg = json.loads(inv.mcp_config.read_text())["mcpServers"]
    assert list(cfg) == ["spd"] and cfg["spd"]["url"].startswith("http://127.0.0.1:")
    events = read_events(inv.events)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["kind"] for e in events] == [
        "job_started",
        "server_started",
        "server_ready",
        "agent_started",
        "server_stopped",
        "agent_finished",
        "job_finished",
    ]
    assert not _alive(events[1]["pid"]), "the server must be stopped when the job ends"
    ready = events[2]
    assert sorted(ready["tools"]) == [
        "get_model_info",
        "run_prompt",
        "set_investigation_summary",
        "update_research_log",
    ]
    assert read_json(inv.summary)["title"] == "He or she"
    assert "Plan: sanity checks." in inv.research_log.read_text()
    assert len(inv.transcript.read_text().splitlines()) == 8
    token = cfg["spd"]["headers"]["Authorization"].split()[1]
    assert token not in inv.server_log.read_text() and token not in json.dumps(meta)

    # watching the finished investigation
    assert [r["id"] for r in list_investigations(runs)] == [spec.inv_id]
    assert "completed" in status_text(inv) and "job_finished" in status_text(inv)
    assert report_text(inv).startswith("# He or she")

    class Out:
        text = ""

        def write(self, s: str) -> None:
            Out.text += s

        def flush(self) -> None:
            pass

    assert follow(inv, Out(), poll_s=0.05, timeout_s=10)["ok"] is True
    assert f"{BODY}Plan: sanity checks." in Out.text and " launcher job_finished " in Out.text
    for cmd in (["list"], ["status", spec.inv_id[-6:]], ["report", "latest"]):
        assert cli.main([*cmd, "--out", str(runs)]) == 0
    shown = capsys.readouterr().out
    assert spec.inv_id in shown and "# He or she" in shown


def test_server_that_fails_to_start_is_reported(tmp_path: Path, api_env) -> None:
    with FakeMessagesAPI(SCRIPT) as api:
        api_env(api.url)
        spec = make_spec(tmp_path / "runs", server_argv=(*STANDIN, "--fail-start"))
        outcome = run_job(spec, "test-1")
        assert api.requests == [], "no agent may run without a server"
    assert outcome["status"] == "failed" and not outcome["ok"]
    assert "exited with code 1" in outcome["error"] and "failing on purpose" in outcome["error"]
    inv = InvestigationDir(Path(spec.inv_dir))
    kinds = [e["kind"] for e in read_events(inv.events)]
    assert kinds == [
        "job_started",
        "server_started",
        "server_failed",
        "server_stopped",
        "job_finished",
    ]
    summary = read_json(inv.summary)
    assert summary["written_by"] == "launcher" and summary["status"] == "inconclusive"
    assert "did not run" in summary["summary"]


def test_server_that_never_answers_times_out_and_is_killed(tmp_path: Path, api_env) -> None:
    spec = make_spec(tmp_path / "runs", server_argv=(*STANDIN, "--hang"))
    spec = spec.model_copy(update={"server_start_timeout_s": 2.0, "server_stop_grace_s": 1.0})
    t0 = time.monotonic()
    outcome = run_job(spec, "test-2")
    assert (
        outcome["status"] == "failed" and "no port file server.port within 2 s" in outcome["error"]
    )
    assert time.monotonic() - t0 < 30
    events = read_events(InvestigationDir(Path(spec.inv_dir)).events)
    assert not _alive(events[1]["pid"])


@pytest.mark.slow
def test_preempted_job_resumes_in_the_same_directory(tmp_path: Path, api_env) -> None:
    script = [
        Turn(
            tool_calls=(
                ToolCall("update_research_log", {"req": {"markdown": "BEFORE-PREEMPTION"}}),
            )
        ),
        Turn(text="never seen", delay_s=120),  # the first attempt waits here until preempted
        Turn(tool_calls=(ToolCall("run_prompt", {"text": "after the restart"}),)),
        Turn(text="Resumed and done."),
    ]
    with FakeMessagesAPI(script) as api:
        api_env(api.url)
        spec = make_spec(tmp_path / "runs")
        job = submit(spec)
        inv = InvestigationDir(Path(spec.inv_dir))
        deadline = time.monotonic() + 60
        while api.turns_used < 2:
            assert time.monotonic() < deadline and not job.done(), "the job never reached the model"
            time.sleep(0.1)
        pid = read_events(inv.events)[0]["pid"]
        os.kill(pid, signal.SIGUSR2)  # what SLURM (or submitit's local timeout) sends before a kill
        outcome = job.result()
        resumed_request = api.requests[-2].body
    assert outcome["ok"] and outcome["status"] == "completed", outcome
    kinds = [e["kind"] for e in read_events(inv.events)]
    assert kinds.count("checkpoint") == 1 and "job_resumed" in kinds
    assert kinds.index("checkpoint") < kinds.index("job_resumed")
    assert kinds.count("server_stopped") == 2
    assert read_json(inv.metadata)["attempts"] == 2
    assert (
        "BEFORE-PREEMPTION" in resumed_request["messages"][0]["content"]
    )  # log handed to the agent
    assert "interrupted" in resumed_request["messages"][0]["content"]
