"""Swarm benchmark: N built-in investigations of the demo run at once as local processes, then the
aggregation.

Run: OMP_NUM_THREADS=1 python -m bench.bench_swarm [--tasks 8]
Prints one JSON object: wall time until every task ended and until the report, whether every task
completed, and the peak RSS (VmHWM) of every task's server process, sampled from /proc while it
runs.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from spd_mcp.common.events import read_events
from spd_mcp.launcher.layout import read_json
from spd_mcp.launcher.spec import Environment, LaunchRequest
from spd_mcp.launcher.submit import submit_swarm
from spd_mcp.launcher.swarm import SwarmDir, resolve_swarm

QUESTION = "How does the model choose between he and she?"


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def bench_swarm(tasks: int = 8, timeout_s: float = 1800.0) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-swarm-"))
    req = LaunchRequest(question=QUESTION, agent="builtin", executor="local", out=str(out))
    spec = resolve_swarm(req, Environment(), swarm=tasks, parallelism=tasks)
    t0 = time.monotonic()
    job = submit_swarm(spec)["coordinator"]
    peak: dict[str, float] = {}  # task inv_id -> peak RSS of its server (MB)
    tasks_done_s = None
    while not job.done():
        assert time.monotonic() - t0 < timeout_s, f"the swarm did not finish within {timeout_s} s"
        ended = 0
        for t in spec.tasks:
            events = read_events(Path(t.inv_dir) / "events.jsonl")
            pid = next((e["pid"] for e in events if e.get("kind") == "server_started"), None)
            if pid is not None and (rss := _vm_hwm_mb(pid)) is not None:
                peak[t.inv_id] = max(peak.get(t.inv_id, 0.0), rss)
            ended += any(e.get("kind") == "job_finished" for e in events)
        if tasks_done_s is None and ended == tasks:
            tasks_done_s = time.monotonic() - t0
        time.sleep(0.2)
    total_s = time.monotonic() - t0
    outcome = job.result()
    statuses = [read_json(Path(t.inv_dir) / "metadata.json").get("status") for t in spec.tasks]
    summary = read_json(SwarmDir(Path(spec.swarm_dir)).summary)
    rss = sorted(peak.values())
    return {
        "tasks": tasks,
        "cpus": os.cpu_count(),
        "all_completed": statuses == ["completed"] * tasks,
        "statuses": ",".join(str(s) for s in statuses),
        "tasks_wall_s": round(tasks_done_s or total_s, 1),
        "with_aggregation_s": round(total_s, 1),
        "aggregation": outcome.get("status"),
        "claims_retested": len(summary.get("claims", [])),
        "server_peak_rss_mb_min": round(rss[0], 1) if rss else None,
        "server_peak_rss_mb_median": round(rss[len(rss) // 2], 1) if rss else None,
        "server_peak_rss_mb_max": round(rss[-1], 1) if rss else None,
        "servers_sampled": len(rss),
        "swarm_dir": spec.swarm_dir,
    }


def run(quick: bool = False) -> list[dict]:
    return [
        {
            "bench": "swarm (8 built-in investigations of the demo run at once, local processes)",
            **bench_swarm(tasks=8),
        }
    ]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=8)
    print(json.dumps(bench_swarm(tasks=ap.parse_args().tasks)))
