"""Decomposition step time on the built-in toy configs (tms_5-2, resid_mlp1), against the public
implementation's figures measured on this kind of machine (shared/reference/anchor_perf.md), and on
the demo language model's recipe (``DEMO_CONFIG``), with the subset term's routing folded into the
masks against the two-path routing it replaced (interleaved, same masks), and the whole loop with
each batch split over one and two CPU processes (``workers``)."""

import statistics
import time
from dataclasses import replace

import torch

from spd_core.allocator import pin_malloc_thresholds
from spd_core.config import DecompositionConfig
from spd_core.decompose import decompose, loss_terms, pick_device
from spd_core.demo import DEMO_CONFIG, DEMO_HARVEST, DEMO_HARVEST_PROCESSES, DEMO_HARVEST_TEXTS
from spd_core.experiments import get_experiment
from spd_core.harvest import harvest
from spd_core.losses import output_loss
from spd_core.masks import fold_routing, layer_subset_routing, stochastic_masks
from spd_core.run import build_component_model, load_run
from spd_core.targets.spec import AnySpec, corpus_texts, data_source, untrained_target

# Public implementation as configured (CPU bf16 autocast), 1 CPU thread: the fastest of its
# plain-step medians in anchor_perf.md §4.1-4.2 (TMS 31.7, resid_mlp1 205.8) and of the side-by-side
# runs the issue on training speed records (TMS 32.3-37.2, resid_mlp1 179-184 ms).
ANCHOR_MS_PER_STEP = {"tms_5-2": 31.7, "resid_mlp1": 179.0}


def step_times(
    spec: AnySpec,
    target: torch.nn.Module,
    config: DecompositionConfig,
    n_steps: int,
    warmup: int = 5,
    step: int | None = None,
) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``n_steps`` training steps (the loop body of ``decompose``) of
    ``config`` on ``target``; ``step`` fixes the schedule step the losses see (default: the loop
    index)."""
    dev = pick_device(config.device)
    pin_malloc_thresholds()  # as the training loop does
    torch.manual_seed(0)
    model = build_component_model(spec, target, config).to(dev)
    data = data_source(spec, target, config.seq_len)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    wall, cpu = [], []
    for i in range(warmup + n_steps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        x = data.batch(config.batch_size, gen).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=config.autocast_bf16):
            loss, _, _ = loss_terms(model, x, config, i if step is None else step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    return wall, cpu


def experiment_step_times(
    name: str, device: str, n_steps: int, warmup: int = 5, **overrides: object
) -> tuple[list[float], list[float]]:
    """``step_times`` of a built-in experiment's config (with ``overrides``) on its untrained target
    (step cost does not depend on the target's training)."""
    exp = get_experiment(name)
    config = exp.decomposition.model_copy(update={"device": device, **overrides})
    return step_times(exp.target, untrained_target(exp.target), config, n_steps, warmup)


def demo_subset_ab(n: int) -> dict:
    """The subset term (forward + backward) on the demo, routing folded into the masks vs the
    two-path routing (each routed layer's component output and target output, picked per
    position)."""
    shipped = load_run("demo")
    model = shipped.model
    x = data_source(shipped.target_spec, model.target, DEMO_CONFIG.seq_len).batch(
        DEMO_CONFIG.batch_size, torch.Generator().manual_seed(0)
    )

    def term(fold: bool, seed: int) -> float:
        torch.manual_seed(seed)
        with torch.no_grad():
            tgt = model(x, cache_inputs=True)
        ci = model.causal_importance(tgt.inputs).lower
        masks, delta = stochastic_masks(ci)
        routing = layer_subset_routing(list(model.layers), x.shape, x.device)
        if fold:
            masks, delta = fold_routing(masks, delta, routing)
        out = model(x, masks=masks, delta_masks=delta, routing=None if fold else routing).output
        loss = output_loss(out, tgt.output, "kl")
        loss.backward()
        model.zero_grad(set_to_none=True)
        return float(loss.detach())

    times: dict[bool, list[float]] = {False: [], True: []}
    diff = 0.0
    for i in range(n + 2):
        values = {}
        for fold in (False, True):
            t0 = time.perf_counter()
            values[fold] = term(fold, i)
            if i >= 2:
                times[fold].append(time.perf_counter() - t0)
        diff = max(diff, abs(values[True] - values[False]))
    folded, routed = statistics.median(times[True]) * 1000, statistics.median(times[False]) * 1000
    return {
        "bench": "demo subset term: routing folded into the masks vs two paths (cpu)",
        "folded_ms": round(folded, 1),
        "two_path_ms": round(routed, 1),
        "speedup": round(routed / folded, 2),
        "max_abs_loss_diff": diff,
        "n": n,
    }


def demo_workers(n: int, worlds: tuple[int, ...] = (1, 2)) -> dict:
    """Seconds per step of the whole loop (``decompose``) of ``DEMO_CONFIG`` split over 1 and 2 CPU
    processes: the difference of a 20-step and a (20 + n)-step run, so process start-up cancels."""
    shipped = load_run("demo")
    target = shipped.model.target
    data = data_source(shipped.target_spec, target, DEMO_CONFIG.seq_len)
    per_step: dict[int, float] = {}
    for world in worlds:
        config = DEMO_CONFIG.model_copy(
            update={"workers": world, "faithfulness_warmup_steps": 0, "device": "cpu"}
        )
        walls = []
        for steps in (20, 20 + n):
            torch.manual_seed(0)
            model = build_component_model(shipped.target_spec, target, config)
            t0 = time.perf_counter()
            decompose(model, data, config, progress=False, stop_after=steps)
            walls.append(time.perf_counter() - t0)
        per_step[world] = (walls[1] - walls[0]) / n
    row: dict = {"bench": "demo decomposition loop split over CPU processes (workers)", "n": n}
    for world, sec in per_step.items():
        row[f"workers_{world}_ms"] = round(sec * 1000, 1)
    row["speedup_2_over_1"] = round(per_step[1] / per_step[2], 2)
    row[f"minutes_for_{DEMO_CONFIG.steps}_steps_at_workers_{DEMO_CONFIG.workers}"] = round(
        DEMO_CONFIG.steps * per_step[DEMO_CONFIG.workers] / 60, 1
    )
    return row


def demo_harvest(n: int) -> dict:
    """Seconds per text of the demo's harvest (``DEMO_HARVEST``) on 1 and on 2 CPU processes, over
    the first ``n`` texts of its corpus, and the minutes that puts on ``DEMO_HARVEST_TEXTS``."""
    shipped = load_run("demo")
    cfg = replace(DEMO_HARVEST, max_tokens=int(shipped.model.target.config.max_position_embeddings))  # type: ignore[union-attr]
    texts = corpus_texts(shipped.target_spec, n)
    row: dict = {"bench": "demo harvest split over CPU processes", "n_texts": n}
    for processes in (1, 2):
        t0 = time.perf_counter()
        harvest(shipped.model, shipped.tokenizer, texts, cfg, progress=False, processes=processes)
        row[f"processes_{processes}_s_per_text"] = round((time.perf_counter() - t0) / n, 3)
    row["speedup_2_over_1"] = round(
        row["processes_1_s_per_text"] / row["processes_2_s_per_text"], 2
    )
    row[f"minutes_for_{DEMO_HARVEST_TEXTS}_texts_at_{DEMO_HARVEST_PROCESSES}"] = round(
        DEMO_HARVEST_TEXTS * row[f"processes_{DEMO_HARVEST_PROCESSES}_s_per_text"] / 60, 1
    )
    return row


def run(quick: bool = False) -> list[dict]:
    rows = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    # (recipe, steps timed, warm-up steps, overrides). The process's memory grows over its first
    # ~200 steps (page faults cost a few ms a step there), so the second resid_mlp1 row times the
    # steady state that almost all of a 20000-step run is in.
    cases = [
        ("tms_5-2", 60 if quick else 300, 5, {}),
        ("resid_mlp1", 10 if quick else 40, 5, {}),
        ("resid_mlp1", 10 if quick else 60, 20 if quick else 250, {}),
        ("resid_mlp1", 10 if quick else 40, 5, {"autocast_bf16": False}),
    ]
    for name, n, warmup, overrides in cases:
        for device in devices:
            wall, cpu = experiment_step_times(name, device, n, warmup, **overrides)
            ms = statistics.median(wall) * 1000
            precision = (
                "bf16 autocast"
                if get_experiment(name).decomposition.model_copy(update=overrides).autocast_bf16
                else "fp32"
            )
            steady = f", after {warmup} warm-up steps" if warmup > 5 else ""
            row = {
                "bench": f"decompose step {name} ({device}, {precision}{steady})",
                "median_ms": round(ms, 2),
                "steps_per_s": round(1000 / ms, 1),
                "cpu_ms": round(statistics.median(cpu) * 1000, 2),
                "n": n,
            }
            if device == "cpu":
                ratio = ANCHOR_MS_PER_STEP[name] / ms
                verdict = f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"
                row["vs_public_impl"] = (
                    f"{verdict} than the public implementation ({ANCHOR_MS_PER_STEP[name]} "
                    "ms/step, its fastest recorded)"
                )
            rows.append(row)
    n = 8 if quick else 30
    shipped = load_run("demo")  # DEMO_CONFIG on the shipped target, at mid-schedule
    wall, _ = step_times(
        shipped.target_spec,
        shipped.model.target,
        DEMO_CONFIG,
        n,
        warmup=3,
        step=DEMO_CONFIG.steps // 2,
    )
    ms = statistics.median(wall) * 1000
    rows.append(
        {
            "bench": (
                "decompose step demo LM, DEMO_CONFIG's losses on its whole batch in one process "
                "(cpu)"
            ),
            "median_ms": round(ms, 1),
            "steps_per_s": round(1000 / ms, 2),
            "n": n,
        }
    )
    rows.append(demo_subset_ab(8 if quick else 30))
    rows.append(demo_workers(40 if quick else 200))
    rows.append(demo_harvest(8 if quick else 60))
    return rows
