"""Swarm specs without running anything: hypotheses files, flag errors, task specs, strategies, the
directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spd_mcp.launcher import cli
from spd_mcp.launcher.layout import read_json
from spd_mcp.launcher.spec import Environment, LaunchRequest, SpecError
from spd_mcp.launcher.strategies import STRATEGIES, strategy_for_task, strategy_named
from spd_mcp.launcher.swarm import (
    FAILING_SERVER,
    MAX_TASKS,
    SwarmDir,
    init_swarm_dir,
    load_hypotheses,
    load_swarm_spec,
    parse_hypotheses,
    resolve_swarm,
)

QUESTION = "How does the model choose between he and she?"
LOCAL = Environment()


def _request(out: Path, **kw) -> LaunchRequest:
    return LaunchRequest(question=QUESTION, agent="builtin", executor="local", out=str(out), **kw)


def test_hypotheses_file_one_per_line_skipping_blanks_and_comments() -> None:
    text = (
        "# pronoun hypotheses\n\n  the he/she choice is an MLP circuit  \n# skipped\n"
        "induction copies the token\n"
    )
    assert parse_hypotheses(text) == [
        "the he/she choice is an MLP circuit",
        "induction copies the token",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no hypothesis"),
        ("\n  \n# only a comment\n", "holds no hypothesis"),
        ("same idea\nother\nSame idea\n", "hypotheses 1 and 3"),
        ("x" * 2001, "at most 2000"),
        ("\n".join(f"h{i}" for i in range(MAX_TASKS + 1)), f"at most {MAX_TASKS} tasks"),
    ],
)
def test_bad_hypotheses_files_say_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse_hypotheses(text)


def test_missing_hypotheses_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_hypotheses(str(tmp_path / "nope.txt"))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"hypotheses": ["a"], "swarm": 2}, "both given"),
        ({"swarm": 0}, "from 1 to"),
        ({"swarm": -3}, "from 1 to"),
        ({"swarm": MAX_TASKS + 1}, "from 1 to"),
        ({}, "needs --hypotheses FILE or --swarm N"),
        ({"swarm": 2, "parallelism": 0}, "at least 1"),
        ({"swarm": 2, "fail_tasks": (2,)}, "numbered 0 to 1"),
    ],
)
def test_bad_swarm_requests(tmp_path: Path, kw: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        resolve_swarm(_request(tmp_path), LOCAL, **kw)


def test_tasks_differ_and_carry_their_hypothesis(tmp_path: Path) -> None:
    hyps = [
        "pronoun gender is decided in layer 1",
        "the circuit is the same for he and she",
        "it is induction",
    ]
    spec = resolve_swarm(
        _request(tmp_path), LOCAL, hypotheses=hyps, fail_tasks=(1,), swarm_id="swarm-x-1"
    )
    assert [t.hypothesis for t in spec.tasks] == hyps
    assert [t.task_index for t in spec.tasks] == [0, 1, 2]
    assert [t.inv_id for t in spec.tasks] == ["inv-x-1-t00", "inv-x-1-t01", "inv-x-1-t02"]
    assert len({t.inv_dir for t in spec.tasks}) == 3 and all(
        t.swarm_id == "swarm-x-1" for t in spec.tasks
    )
    assert [t.strategy for t in spec.tasks] == [s.name for s in STRATEGIES[:3]]
    assert spec.tasks[1].server_argv == FAILING_SERVER and spec.tasks[0].server_argv is None
    assert spec.swarm_dir == str(tmp_path.resolve() / "swarm-x-1")
    assert (
        spec.parallelism == min(3, os.cpu_count() or 1)
        and spec.source == "hypotheses file (3 lines)"
    )


def test_swarm_n_picks_n_distinct_strategies() -> None:
    names = [strategy_for_task(i).name for i in range(40)]
    assert len(set(names)) == 40
    firsts = [strategy_for_task(i) for i in range(len(STRATEGIES))]
    assert firsts == list(STRATEGIES)
    starts = {
        (s.circuit_source, s.prompt_index, json.dumps(s.circuit_args, sort_keys=True))
        for s in (strategy_for_task(i) for i in range(40))
    }
    assert len(starts) == 40, "two tasks would start from the same place"
    for name in names:
        assert strategy_named(name).name == name
        assert (
            strategy_named(name).prompt_index == strategy_for_task(names.index(name)).prompt_index
        )
    with pytest.raises(ValueError, match="choose one of"):
        strategy_named("guess")


def test_slurm_swarm_runs_every_task_at_once_by_default(tmp_path: Path) -> None:
    env = Environment(slurm_available=True, slurm_note="test")
    req = LaunchRequest(question=QUESTION, agent="builtin", executor="slurm", out=str(tmp_path))
    spec = resolve_swarm(req, env, swarm=5)
    assert spec.parallelism == 5 and all(t.slurm is not None for t in spec.tasks)
    assert resolve_swarm(req, env, swarm=5, parallelism=2).parallelism == 2


def test_swarm_directory_links_the_tasks_and_round_trips(tmp_path: Path) -> None:
    from spd_mcp.launcher.layout import InvestigationDir, init_metadata

    spec = resolve_swarm(_request(tmp_path), LOCAL, swarm=3, fail_tasks=(2,))
    sd = init_swarm_dir(spec)
    for t in spec.tasks:
        init_metadata(t, InvestigationDir(Path(t.inv_dir)))
    for t in spec.tasks:
        link = sd.task_link(t.task_index)
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        assert link.resolve() == Path(t.inv_dir).resolve()
        assert read_json(Path(t.inv_dir) / "metadata.json")["swarm_id"] == spec.swarm_id
    meta = read_json(sd.meta)
    assert meta["status"] == "submitted" and [t["inv_id"] for t in meta["tasks"]] == [
        t.inv_id for t in spec.tasks
    ]
    assert load_swarm_spec(SwarmDir(sd.root)) == spec
    init_swarm_dir(spec)  # idempotent
    assert read_json(sd.meta)["created"] == meta["created"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--swarm", "2", "--hypotheses", "h.txt"], "both given"),
        (["--swarm", "0"], "from 1 to"),
        (["--hypotheses", "missing.txt"], "does not exist"),
        (["--parallel", "2"], "applies to a swarm only"),
    ],
)
def test_cli_swarm_errors(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    rc = cli.main(
        [
            QUESTION,
            "--agent",
            "builtin",
            "--executor",
            "local",
            "--out",
            str(tmp_path / "runs"),
            *args,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and message in err, err
    assert not (tmp_path / "runs").exists(), "a rejected swarm must not create directories"


def test_swarm_prompt_carries_the_hypothesis_and_strategy() -> None:
    from spd_mcp.launcher.prompting import render_swarm_context, render_system_prompt

    ctx = render_swarm_context(
        swarm_id="swarm-1",
        task_index=2,
        hypothesis="layer 1 decides the pronoun",
        strategy="top-ci",
    )
    assert "layer 1 decides the pronoun" in ctx and strategy_named("top-ci").description in ctx
    assert (
        render_swarm_context(swarm_id=None, task_index=None, hypothesis=None, strategy=None) == ""
    )
    prompt = render_system_prompt(
        question=QUESTION,
        model_info=None,
        tools=[],
        max_turns=5,
        inv_id="i",
        run="demo",
        agent="builtin",
        started="now",
        swarm_context=ctx,
    )
    assert "task 2 of swarm `swarm-1`" in prompt and "{{" not in prompt
