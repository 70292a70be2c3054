"""Launch specs: validation, agent/executor choice, SLURM parameters, and one-line CLI errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from golden import check_golden
from pydantic import ValidationError

from spd_mcp.launcher import cli
from spd_mcp.launcher.spec import (
    Environment,
    JobSpec,
    LaunchRequest,
    SlurmResources,
    SpecError,
    choose_agent,
    choose_executor,
    load_question,
    resolve,
    slurm_time_minutes,
)
from spd_mcp.launcher.submit import slurm_parameters

NO_TOOLS = Environment(slurm_note="no sbatch on PATH")
SLURM = Environment(slurm_available=True, slurm_note="partitions debug*")


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("30", 30),
        ("4:00:00", 240),
        ("1-00:00:00", 1440),
        ("0:90", 2),
        ("2-3", 51 * 60),
        ("1:30:01", 91),
    ],
)
def test_slurm_time_minutes(text: str, minutes: int) -> None:
    assert slurm_time_minutes(text) == minutes


@pytest.mark.parametrize("bad", ["4h", "", "0", "1:2:3:4", "-5"])
def test_slurm_time_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="time"):
        slurm_time_minutes(bad)


def test_models_are_frozen_and_forbid_extra() -> None:
    res = SlurmResources()
    with pytest.raises(ValidationError):
        res.gpus = 2  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Extra inputs"):
        SlurmResources(gpu=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        LaunchRequest(question="q", agent="gpt")  # type: ignore[arg-type]


def test_agent_auto_follows_the_documented_order() -> None:
    claude = Environment(
        claude_bin="/x/claude",
        claude_authenticated=True,
        claude_note="auth api_key",
        api_key_set=True,
    )
    assert choose_agent("auto", claude)[0] == "claude_code"
    unauth = claude.model_copy(
        update={"claude_authenticated": False, "claude_note": "not logged in"}
    )
    agent, why = choose_agent("auto", unauth)
    assert agent == "anthropic_api" and "not logged in" in why
    agent, why = choose_agent("auto", NO_TOOLS)
    assert agent == "builtin" and "no language model" in why
    with pytest.raises(SpecError, match="not authenticated"):
        choose_agent("claude_code", unauth)
    with pytest.raises(SpecError, match="ANTHROPIC_API_KEY"):
        choose_agent("anthropic_api", NO_TOOLS)


def test_executor_choice() -> None:
    assert choose_executor("auto", False, SLURM)[0] == "slurm"
    assert choose_executor("auto", False, NO_TOOLS)[0] == "local"
    assert choose_executor("local", False, SLURM)[0] == "local"
    with pytest.raises(SpecError, match="with --executor local"):
        choose_executor("local", True, SLURM)
    with pytest.raises(SpecError, match="does not answer"):
        choose_executor("auto", True, NO_TOOLS)
    with pytest.raises(SpecError, match="--executor slurm but SLURM does not answer"):
        choose_executor("slurm", False, NO_TOOLS)


def test_resolve_builds_a_complete_spec(tmp_path: Path) -> None:
    req = LaunchRequest(
        question="Q?", out=str(tmp_path / "runs"), slurm=SlurmResources(time="1:00:00")
    )
    spec = resolve(req, SLURM.model_copy(update={"api_key_set": True}), inv_id="inv-x")
    assert isinstance(spec, JobSpec)
    assert (spec.agent, spec.executor, spec.model) == ("anthropic_api", "slurm", "claude-opus-4-5")
    assert spec.inv_dir == str((tmp_path / "runs" / "inv-x").resolve())
    assert spec.slurm is not None and spec.slurm.time_min == 60
    assert not (tmp_path / "runs").exists(), "resolve must not touch the disk"
    local = resolve(
        LaunchRequest(question="Q?", out=str(tmp_path), model="claude-haiku-4-5"),
        NO_TOOLS.model_copy(update={"api_key_set": True}),
    )
    assert local.executor == "local" and local.slurm is None and local.model == "claude-haiku-4-5"


def test_builtin_agent_is_the_default_without_a_language_model(tmp_path: Path) -> None:
    spec = resolve(LaunchRequest(question="Q?", out=str(tmp_path)), NO_TOOLS)
    assert (
        spec.agent == "builtin"
        and spec.model == "none"
        and "no language model" in spec.agent_reason
    )
    with pytest.raises(SpecError, match="--model has no effect with the built-in agent"):
        resolve(LaunchRequest(question="Q?", out=str(tmp_path), model="opus"), NO_TOOLS)


def test_question_from_file(tmp_path: Path) -> None:
    f = tmp_path / "q.md"
    f.write_text("  Which components implement induction?\n")
    assert load_question(f"@{f}") == ("Which components implement induction?", str(f))


def test_slurm_parameters_render_through_submitit(tmp_path: Path) -> None:
    from submitit.slurm.slurm import _make_sbatch_string

    res = SlurmResources(
        partition="gpu", time="4:00:00", gpus=1, cpus=8, mem="32g", account="lab", qos="high"
    )
    params = slurm_parameters(res, "spd-investigate-inv-x")
    check_golden("slurm_parameters", params)
    script = _make_sbatch_string(command="python -m x", folder=str(tmp_path), **params)
    header = sorted(line for line in script.splitlines() if line.startswith("#SBATCH"))
    for expected in (
        "--partition=gpu",
        "--time=240",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--mem=32G",
        "--account=lab",
        "--qos=high",
        "--signal=USR2@120",
    ):
        assert f"#SBATCH {expected}" in header, f"{expected} missing from {header}"
    bare = slurm_parameters(SlurmResources(), "n")
    assert "partition" not in bare and "gpus_per_node" not in bare and bare["time"] == 480


BAD_INPUTS = [
    ([""], "question is empty"),
    (["   "], "question is empty"),
    (["@does-not-exist.md"], "question file 'does-not-exist.md' does not exist"),
    (["Q?", "--agent", "gpt"], "unknown agent 'gpt': choose one of auto, claude_code"),
    (["Q?", "--executor", "kubernetes"], "unknown executor 'kubernetes'"),
    (["Q?", "--executor", "local", "--partition", "gpu"], "with --executor local"),
    (["Q?", "--executor", "local", "--time", "1:00:00"], "with --executor local"),
    (
        ["Q?", "--run", "no/such/run", "--executor", "local"],
        "run directory 'no/such/run' does not exist",
    ),
    (["Q?", "--time", "4h"], "time"),
    (["Q?", "--max-turns", "0"], "max-turns"),
    (["Q?", "--budget-usd", "-1"], "budget-usd"),
    (["Q?", "--mem", "lots"], "mem"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS)
def test_bad_input_is_one_line_and_leaves_no_directory(
    args: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs"
    agent = [] if "--agent" in args else ["--agent", "builtin"]  # no claude probe needed
    rc = cli.main([*args, "--out", str(out), *agent])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("spd-investigate: error: "), err
    assert message in err
    assert not out.exists(), "bad input must not leave a directory behind"
    assert not any(tmp_path.iterdir()), f"bad input wrote {list(tmp_path.iterdir())}"


def test_run_path_without_run_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    rc = cli.main(
        [
            "Q?",
            "--run",
            str(tmp_path / "empty"),
            "--agent",
            "builtin",
            "--executor",
            "local",
            "--out",
            str(tmp_path / "runs"),
        ]
    )
    assert rc == 2 and "no run.json" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# What sinfo prints on a machine with SLURM's clients installed but no cluster configured.
SINFO_UNCONFIGURED = """sinfo: error: resolve_ctls_from_dns_srv: res_nsearch error: Unknown host
sinfo: error: fetch_config: DNS SRV lookup failed
sinfo: error: _establish_config_source: failed to fetch config
sinfo: fatal: Could not establish a configuration source
"""


def test_a_slurm_that_does_not_answer_is_one_short_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spd_mcp.launcher.detect import probe
    from spd_mcp.launcher.layout import InvestigationDir, write_json_atomic
    from spd_mcp.launcher.watch import status_text

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sinfo").write_text(f"#!/bin/sh\ncat >&2 <<'END'\n{SINFO_UNCONFIGURED}END\nexit 1\n")
    for tool in ("sbatch", "sinfo"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    env = probe("builtin", "auto")
    assert not env.slurm_available
    assert env.slurm_note == "sinfo rc 1: Could not establish a configuration source"
    executor, reason = choose_executor("auto", False, env)
    assert executor == "local" and "\n" not in reason and len(reason) <= 120, reason
    # a directory written before this fix (the whole stderr in its reason) still shows one line
    inv = InvestigationDir(tmp_path / "inv-old")
    inv.root.mkdir()
    old_reason = f"no SLURM here (sinfo rc 1: {SINFO_UNCONFIGURED})"
    write_json_atomic(
        inv.metadata, {"status": "completed", "executor": "local", "executor_reason": old_reason}
    )
    executor_line = next(line for line in status_text(inv).splitlines() if "executor:" in line)
    assert executor_line.endswith("job ids [], attempts 0") and "…" in executor_line
