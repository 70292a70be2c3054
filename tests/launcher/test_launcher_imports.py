"""The launcher never loads torch, transformers, einops, spd_core or the server; --help is
instant."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    "spd_mcp.launcher."
    + ".".join(p.relative_to(ROOT / "spd_mcp" / "launcher").with_suffix("").parts)
    for p in (ROOT / "spd_mcp" / "launcher").rglob("*.py")
    if p.name != "__init__.py"
)
BANNED = ("torch", "transformers", "einops", "spd_core", "spd_mcp.server")


def test_importing_every_launcher_module_loads_nothing_banned() -> None:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES)
        + f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {BANNED!r} or "
        f"m.startswith('spd_mcp.server'))\nprint(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"launcher modules loaded {out.stdout.strip()}"
    assert len(MODULES) >= 14


def test_help_is_instant_and_light() -> None:
    code = (
        "import sys, contextlib, io\nfrom spd_mcp.launcher import cli\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    cli.main(['--help'])\n"
        "print(sorted(m for m in ('pydantic', 'mcp', 'submitit', 'anthropic') "
        "if m in sys.modules))\n"
    )
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    elapsed = time.monotonic() - t0
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"--help imported {out.stdout.strip()}"
    assert elapsed < 5.0, f"--help took {elapsed:.1f} s"
    usage = subprocess.run(
        [sys.executable, "-m", "spd_mcp.launcher.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        usage.returncode == 0 and "spd-investigate" in usage.stdout and "follow ID" in usage.stdout
    )
