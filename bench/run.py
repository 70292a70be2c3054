"""Run every benchmark and write bench/RESULTS.md (medians, ratios, the command and the machine).

make bench                    # all benchmarks
python -m bench.run --quick   # fewer repeats
"""

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

MODULES = [
    "bench.bench_decompose",
    "bench.bench_analysis",
    "bench.bench_server",
    "bench.bench_swarm",
    "bench.bench_behaviour",
    "bench.bench_findings",
    "bench.bench_tools_list",
]


def _rows(name: str, quick: bool) -> list[dict]:
    """Each bench module's results as rows: ``run()`` returns rows; the others return one dict."""
    mod = importlib.import_module(name)
    if hasattr(mod, "run"):
        return mod.run(quick=quick)
    if name.endswith("bench_analysis"):
        return [
            {
                "bench": "analysis (attributions batched vs per-node; 200 circuit steps)",
                **mod.bench_analysis(repeats=3 if quick else 5),
            }
        ]
    return [
        {
            "bench": "server (MCP overhead, start-up, RSS)",
            **mod.bench_server(
                calls=50 if quick else 200, repeats=2 if quick else 3, mixed=200 if quick else 1000
            ),
        }
    ]


RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), "
        f"Python {platform.python_version()}; load average at start {load:.2f}"
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help="comma-separated module names (e.g. bench_decompose)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    wanted = [m for m in MODULES if not args.only or m.split(".")[-1] in args.only.split(",")]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    header = f"## {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} · commit {commit}\n\n"
    header += (
        f"- command: `{' '.join(['python -m bench.run', *sys.argv[1:]])}` (via `make bench`)\n"
        f"- machine: {machine()}\n\n"
    )
    lines = []
    for name in wanted:
        rows = _rows(name, args.quick)
        for row in rows:
            print(json.dumps(row), flush=True)
            label = row.pop("bench")
            lines.append(f"- **{label}**: " + ", ".join(f"{k}={v}" for k, v in row.items()) + "\n")
    section = header + "".join(lines) + "\n"
    old = (
        RESULTS.read_text()
        if RESULTS.exists()
        else "# Benchmark results\n\n"
        "Newest first. Timings on shared CPUs are noisy: compare ratios within one run.\n\n"
    )
    head, _, rest = old.partition("\n## ")
    RESULTS.write_text(head.rstrip() + "\n\n" + section + ("## " + rest if rest else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
