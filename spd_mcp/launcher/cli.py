"""`spd-investigate`: launch an investigation, or list / status / follow / report existing ones.

Only argparse is imported before the arguments are parsed, so `--help` is instant; the launcher
never imports torch or the server (it starts the server as a process inside the job).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from spd_mcp.launcher.layout import InvestigationDir

WATCH_COMMANDS = ("list", "status", "follow", "report", "serve")
DEFAULT_OUT = "investigations/runs"
SLURM_FLAGS = ("partition", "time", "gpus", "cpus", "mem", "account", "qos")

EPILOG = """watching:
  spd-investigate list                 investigations under --out, newest last
  spd-investigate status ID            metadata, outcome and last events (ID: id, part of one, \
latest)
  spd-investigate follow ID            print the research log and events as they grow
  spd-investigate report ID            the answer: summary, components, key numbers, caveats
  spd-investigate report ID --html     the same as one self-contained page (report.html in its \
directory)
  spd-investigate serve [--port N]     every investigation's page on 127.0.0.1, live while it runs
  (ID may name a swarm, swarm-...: status shows every task, follow ends with the
   aggregation, report prints swarm_report.md; follow SWARM --task N follows one task)

examples:
  spd-investigate "How does the model choose between he and she?"
  spd-investigate @question.md --run runs/my-run --executor slurm --partition gpu --time 4:00:00
  spd-investigate "Which components implement induction?" --hypotheses hyps.txt   # a swarm
  spd-investigate "How does the model choose between he and she?" --swarm 4
"""


def launch_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spd-investigate",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run an agent that investigates a decomposed model through the spd MCP server.",
    )
    p.add_argument("question", help="the research question, or @path to a file holding it")
    p.add_argument(
        "--run", default="demo", help="run directory, or 'demo' (default) for the shipped demo run"
    )
    p.add_argument(
        "--agent",
        default="auto",
        help="auto (default: claude if authenticated, else Anthropic API if "
        "ANTHROPIC_API_KEY is set, else built-in) | claude_code | anthropic_api | builtin",
    )
    p.add_argument(
        "--executor",
        default="auto",
        help="auto (default: SLURM if sbatch answers, else local) | local | slurm",
    )
    p.add_argument("--max-turns", type=int, default=50, help="agent turns (default 50)")
    p.add_argument(
        "--budget-usd", type=float, default=10.0, help="dollar budget of the agent (default 10)"
    )
    p.add_argument(
        "--model",
        default=None,
        help="model name (default: opus for Claude Code, claude-opus-4-5 for the API agent)",
    )
    p.add_argument(
        "--follow", action="store_true", help="after submitting, follow the log until the job ends"
    )
    p.add_argument(
        "--out", default=DEFAULT_OUT, help=f"investigations root (default {DEFAULT_OUT})"
    )
    w = p.add_argument_group(
        "swarm (several agents, then an aggregation that re-tests their claims)"
    )
    w.add_argument(
        "--hypotheses",
        metavar="FILE",
        help="one task per line of FILE, each starting from that hypothesis",
    )
    w.add_argument(
        "--swarm", type=int, metavar="N", help="N tasks, each with a different starting strategy"
    )
    w.add_argument(
        "--parallel",
        type=int,
        metavar="P",
        help="tasks at once (default: all on SLURM, one per CPU core locally)",
    )
    w.add_argument(
        "--fail-task", type=int, action="append", default=[], help=argparse.SUPPRESS
    )  # tests
    s = p.add_argument_group("SLURM (only with a SLURM executor)")
    s.add_argument("--partition", help="partition (cluster default if unset)")
    s.add_argument("--time", help="time limit, e.g. 4:00:00 (default 8:00:00)")
    s.add_argument("--gpus", type=int, help="GPUs per node (default 0)")
    s.add_argument("--cpus", type=int, help="CPUs per task (default 4)")
    s.add_argument("--mem", help="memory per node, e.g. 32G")
    s.add_argument("--account", help="account to charge")
    s.add_argument("--qos", help="quality of service")
    p.add_argument(
        "--server-cmd", help=argparse.SUPPRESS
    )  # tests: replaces `python -m spd_mcp.server`
    return p


def watch_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spd-investigate", description="Watch investigations.")
    p.add_argument("command", choices=WATCH_COMMANDS)
    p.add_argument(
        "ref",
        nargs="?",
        default="latest",
        help="investigation or swarm id, part of one, 'latest', 'latest-swarm' or a path",
    )
    p.add_argument("--task", type=int, help="with a swarm: the task to follow or show")
    p.add_argument(
        "--out", default=DEFAULT_OUT, help=f"investigations root (default {DEFAULT_OUT})"
    )
    p.add_argument(
        "--html",
        nargs="?",
        const="",
        metavar="FILE",
        help="report: write one self-contained HTML page (default: report.html in its directory)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=8765,
        help="serve: port on 127.0.0.1 (default 8765; 0: any free)",
    )
    return p


def fail(message: str) -> int:
    sys.stderr.write(f"spd-investigate: error: {message}\n")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in WATCH_COMMANDS:
        return watch_main(watch_parser().parse_args(argv))
    return launch_main(launch_parser().parse_args(argv))


def build_request(a: argparse.Namespace):  # -> LaunchRequest
    import shlex

    from pydantic import ValidationError

    from spd_mcp.launcher.spec import (
        LaunchRequest,
        SlurmResources,
        SpecError,
        load_question,
        one_line,
    )

    question, source = load_question(a.question)
    given = {k: getattr(a, k) for k in SLURM_FLAGS if getattr(a, k) is not None}
    try:
        return LaunchRequest(
            question=question,
            question_file=source,
            run=a.run,
            agent=a.agent,
            executor=a.executor,
            slurm=SlurmResources(**given) if given else None,
            max_turns=a.max_turns,
            budget_usd=a.budget_usd,
            model=a.model,
            follow=a.follow,
            out=a.out,
            server_argv=tuple(shlex.split(a.server_cmd)) if a.server_cmd else None,
        )
    except ValidationError as err:
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        if field in ("agent", "executor"):
            from spd_mcp.launcher.spec import AGENT_CHOICES, EXECUTOR_CHOICES

            choices = AGENT_CHOICES if field == "agent" else EXECUTOR_CHOICES
            raise SpecError(
                f"unknown {field} {getattr(a, field)!r}: choose one of {', '.join(choices)}"
            ) from None
        raise SpecError("--" + one_line(err).replace("_", "-").replace("slurm.", "", 1)) from None


def launch_main(a: argparse.Namespace) -> int:
    if a.hypotheses is not None or a.swarm is not None:
        return swarm_main(a)
    if a.parallel is not None or a.fail_task:
        return fail("--parallel applies to a swarm only: add --hypotheses FILE or --swarm N")
    from spd_mcp.launcher.spec import SpecError, resolve

    try:
        request = build_request(a)
        from spd_mcp.launcher.detect import probe

        env = probe(request.agent, request.executor)
        spec = resolve(request, env)
    except SpecError as err:
        return fail(str(err))
    out = sys.stdout
    out.write(f"agent: {spec.agent} ({spec.agent_reason})\n")
    out.write(f"executor: {spec.executor} ({spec.executor_reason})\n")
    from spd_mcp.launcher.submit import submit

    job = submit(spec)
    out.write(f"submitted job {job.job_id}: {spec.inv_dir}\n")
    out.write(f"follow it with: spd-investigate follow {spec.inv_id} --out {a.out}\n")
    out.flush()
    if not request.follow:
        return 0
    from spd_mcp.launcher.layout import InvestigationDir
    from spd_mcp.launcher.watch import follow, report_text

    inv = InvestigationDir(Path(spec.inv_dir))
    try:
        outcome = follow(inv, out, job_done=job.done)
    except KeyboardInterrupt:
        out.write(
            f"\nstopped following ({spec.executor} jobs started from this terminal stop with it "
            f"when local); status: spd-investigate status {spec.inv_id} --out {a.out}\n"
        )
        return 130
    out.write(report_text(inv))
    return 0 if outcome.get("ok") else 1


def swarm_main(a: argparse.Namespace) -> int:
    from spd_mcp.launcher.spec import SpecError
    from spd_mcp.launcher.swarm import BOTH_FLAGS, load_hypotheses, resolve_swarm

    if a.hypotheses is not None and a.swarm is not None:
        return fail(BOTH_FLAGS)
    try:
        request = build_request(a)
        hypotheses = load_hypotheses(a.hypotheses) if a.hypotheses is not None else None
        from spd_mcp.launcher.detect import probe

        env = probe(request.agent, request.executor)
        spec = resolve_swarm(
            request,
            env,
            hypotheses=hypotheses,
            swarm=a.swarm,
            parallelism=a.parallel,
            fail_tasks=tuple(a.fail_task),
        )
    except SpecError as err:
        return fail(str(err))
    out = sys.stdout
    out.write(f"agent: {spec.agent} ({spec.tasks[0].agent_reason})\n")
    out.write(
        f"executor: {spec.executor} ({spec.tasks[0].executor_reason}), {spec.parallelism} task(s) "
        "at once\n"
    )
    for t in spec.tasks:
        out.write(f"  t{t.task_index:02d} {t.inv_id}: {t.hypothesis or t.strategy}\n")
    from spd_mcp.launcher.submit import submit_swarm

    jobs = submit_swarm(spec)
    out.write(
        f"submitted swarm {spec.swarm_id} (jobs "
        f"{', '.join(f'{k}={j.job_id}' for k, j in jobs.items())}): {spec.swarm_dir}\n"
    )
    out.write(f"watch it with: spd-investigate status {spec.swarm_id} --out {a.out}\n")
    out.flush()
    if not a.follow:
        return 0
    from spd_mcp.launcher.swarm import SwarmDir
    from spd_mcp.launcher.swarm_watch import follow_swarm, swarm_report_text

    sd = SwarmDir(Path(spec.swarm_dir))
    last = jobs.get("aggregate") or jobs["coordinator"]
    try:
        outcome = follow_swarm(sd, out, job_done=last.done)
    except KeyboardInterrupt:
        out.write(
            f"\nstopped following; status: spd-investigate status {spec.swarm_id} --out {a.out}\n"
        )
        return 130
    out.write(swarm_report_text(sd))
    return 0 if outcome.get("status") == "completed" else 1


def watch_swarm(a: argparse.Namespace, root: Path) -> int | None:
    """The watch command on a swarm, or None when the reference names no swarm."""
    from spd_mcp.launcher import swarm_watch
    from spd_mcp.launcher.layout import InvestigationDir, read_json

    sd = swarm_watch.find_swarm(a.ref, root)
    if sd is None:
        return None
    out = sys.stdout
    if a.task is not None:
        tasks = {t["index"]: t for t in read_json(sd.meta).get("tasks", [])}
        if a.task not in tasks:
            return fail(
                f"swarm {sd.root.name} has tasks {sorted(tasks)}; --task {a.task} is not one"
            )
        return show_investigation(
            a.command, InvestigationDir(Path(tasks[a.task]["inv_dir"])), out, a.html
        )

    if a.command == "report" and a.html is not None:
        from spd_mcp.launcher.html_swarm import swarm_html

        return write_html(swarm_html(sd.root), a.html or sd.root / "report.html", out)

    def follow() -> None:
        swarm_watch.follow_swarm(sd, out)
        out.write(swarm_watch.swarm_report_text(sd))

    return show(
        a.command,
        lambda: swarm_watch.swarm_status_text(sd),
        lambda: swarm_watch.swarm_report_text(sd),
        follow,
        out,
    )


def show(
    command: str,
    status: Callable[[], str],
    report: Callable[[], str],
    follow: Callable[[], object],
    out: TextIO,
) -> int:
    """``status``, ``report`` or (any other command) ``follow`` one investigation or swarm; 130 when
    following is interrupted."""
    if command == "status":
        out.write(status() + "\n")
    elif command == "report":
        out.write(report())
    else:
        try:
            follow()
        except KeyboardInterrupt:
            return 130
    return 0


def write_html(text: str, path: str | Path, out: TextIO) -> int:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    out.write(f"wrote {target} ({len(text.encode()) // 1024} KB)\n")
    return 0


def show_investigation(
    command: str, inv: InvestigationDir, out: TextIO, html: str | None = None
) -> int:
    from spd_mcp.launcher import watch

    if command == "report" and html is not None:
        from spd_mcp.launcher.findings import read_findings
        from spd_mcp.launcher.html_report import investigation_html

        return write_html(
            investigation_html(read_findings(inv)), html or inv.root / "report.html", out
        )

    return show(
        command,
        lambda: watch.status_text(inv),
        lambda: watch.report_text(inv),
        lambda: watch.follow(inv, out),
        out,
    )


def watch_main(a: argparse.Namespace) -> int:
    from spd_mcp.launcher import watch

    root = Path(a.out)
    out = sys.stdout
    if a.html is not None and a.command != "report":
        return fail("--html applies to report: spd-investigate report ID --html")
    if a.command == "serve":
        from spd_mcp.launcher.live import serve

        return serve(root, a.port, out)
    if a.command == "list":
        from spd_mcp.launcher.swarm_watch import list_swarms

        rows = watch.list_investigations(root)
        for r in rows:
            out.write(
                f"{r['id']}  {r['status']:<22} {r['agent'] or '?':<14} {r['executor'] or '?':<6} "
                f"{r['question']}\n"
            )
        for r in list_swarms(root):
            out.write(
                f"{r['id']}  {r['status']:<22} {str(r['tasks']) + ' tasks':<14} "
                f"{r['executor'] or '?':<6} {r['question']}\n"
            )
        if not rows:
            out.write(f"no investigations under {root}\n")
        return 0
    done = watch_swarm(a, root)
    if done is not None:
        return done
    if a.task is not None:
        return fail(f"--task applies to a swarm; {a.ref!r} names no swarm under {root}")
    try:
        inv = watch.find_investigation(a.ref, root)
    except ValueError as err:
        return fail(str(err))
    return show_investigation(a.command, inv, out, a.html)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
