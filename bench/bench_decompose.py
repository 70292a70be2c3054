"""Decomposition step time on the built-in toy configs (tms_5-2, resid_mlp1), against the public
implementation's figures measured on this kind of machine (shared/reference/anchor_perf.md)."""

import statistics
import time

import torch

from spd_core.decompose import loss_terms, pick_device
from spd_core.experiments import get_experiment
from spd_core.run import build_component_model
from spd_core.targets.spec import data_source, untrained_target

# Public implementation, 1 CPU thread, plain-step medians (anchor_perf.md §4.1, §4.2).
ANCHOR_MS_PER_STEP = {"tms_5-2": 31.7, "resid_mlp1": 205.8}


def step_times(name: str, device: str, n_steps: int, warmup: int = 5) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``n_steps`` training steps (the loop body of ``decompose``)."""
    exp = get_experiment(name)
    config = exp.decomposition.model_copy(update={"device": device})
    dev = pick_device(device)
    target = untrained_target(exp.target)  # step cost does not depend on the target's training
    torch.manual_seed(0)
    model = build_component_model(exp.target, target, config).to(dev)
    data = data_source(exp.target, target, config.seq_len)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    wall, cpu = [], []
    for i in range(warmup + n_steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        x = data.batch(config.batch_size, gen).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=config.autocast_bf16):
            loss, _, _ = loss_terms(model, x, config, i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return wall, cpu


def run(quick: bool = False) -> list[dict]:
    rows = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name, n in (("tms_5-2", 60 if quick else 300), ("resid_mlp1", 10 if quick else 40)):
        for device in devices:
            wall, cpu = step_times(name, device, n)
            ms = statistics.median(wall) * 1000
            row = {
                "bench": f"decompose step {name} ({device})",
                "median_ms": round(ms, 2),
                "steps_per_s": round(1000 / ms, 1),
                "cpu_ms": round(statistics.median(cpu) * 1000, 2),
                "n": n,
            }
            if device == "cpu":
                ratio = ANCHOR_MS_PER_STEP[name] / ms
                verdict = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
                row["vs_public_impl"] = f"{verdict} than the public implementation ({ANCHOR_MS_PER_STEP[name]} ms/step, anchor_perf.md)"
            rows.append(row)
    return rows
