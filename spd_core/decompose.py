"""The SPD training loop: faithfulness warm-up, then AdamW on components and CI functions with the
configured losses, a live progress bar, periodic evaluation, and checkpoints that resume after a
kill.
"""

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor
from tqdm import tqdm

from spd_core.allocator import pin_malloc_thresholds
from spd_core.ci import active_counts
from spd_core.config import DecompositionConfig
from spd_core.errors import require
from spd_core.losses import (
    LossWeightedLayers,
    ci_recon_loss,
    faithfulness_loss,
    importance_minimality_loss,
    masked_recon_loss,
    pgd_recon_loss,
    stochastic_recon_loss,
)
from spd_core.masks import ones_masks
from spd_core.model import ComponentModel
from spd_core.parallel import (
    SOLO,
    Group,
    average_grads,
    broadcast_params,
    gather_rng_states,
    mean_values,
    workers,
)
from spd_core.weight_delta import weight_delta_report

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


class DataSource(Protocol):
    def batch(self, batch_size: int, generator: torch.Generator) -> Tensor: ...


@dataclass
class TrainResult:
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int | None = None
    seconds: float = 0.0


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available; valid here: auto, cpu")
    return torch.device(name)


def l0_per_layer(ci_lower: dict[str, Tensor], threshold: float) -> dict[str, float]:
    """Mean number of components with CI > threshold per position, per layer."""
    return {k: float(n.float().mean()) for k, n in active_counts(ci_lower, threshold).items()}


def loss_terms(
    model: ComponentModel,
    x: Tensor,
    config: DecompositionConfig,
    step: int,
    ci_layer: str | None = None,
) -> tuple[Tensor, dict[str, float], dict[str, Tensor]]:
    """Total loss at ``step`` with each weighted term's value, and the lower CI (for logging).
    ``ci_layer`` fixes the layer of a ``random_layer`` CI-masked term (else drawn uniformly)."""
    with torch.no_grad():
        tgt = model(x, cache_inputs=True, cache_outputs=True)
    acts, outs = model.inner_acts(tgt.inputs), tgt.outputs
    ci = model.causal_importance(tgt.inputs, acts)
    y = tgt.output.float()  # once here, not in every loss term (output_loss compares in fp32)
    kind = config.output_loss
    terms: dict[str, tuple[float, Callable[[], Tensor]]] = {
        "faithfulness": (config.faithfulness_coeff, lambda: faithfulness_loss(model)),
        "importance": (
            config.importance_coeff,
            lambda: importance_minimality_loss(ci.upper, config.p_at(step)),
        ),
        "stochastic": (
            config.stochastic_recon_coeff,
            lambda: stochastic_recon_loss(
                model,
                x,
                y,
                ci.lower,
                kind,
                "all",
                config.sampling,
                config.n_mask_samples,
                acts=acts,
                target_outs=outs,
            ),
        ),
        "stochastic_layerwise": (
            config.stochastic_layerwise_coeff,
            lambda: stochastic_recon_loss(
                model,
                x,
                y,
                ci.lower,
                kind,
                "layerwise",
                config.sampling,
                config.n_mask_samples,
                acts=acts,
                target_outs=outs,
            ),
        ),
        "stochastic_subset": (
            config.stochastic_subset_coeff,
            lambda: stochastic_recon_loss(
                model, x, y, ci.lower, kind, "subset", config.sampling, config.n_mask_samples
            ),
        ),
        "ci_recon": (
            config.ci_recon_coeff,
            lambda: ci_recon_loss(
                model, x, y, ci.lower, kind, config.ci_recon_mode, acts, ci_layer, outs
            ),
        ),
        "pgd": (
            config.pgd_recon_coeff,
            lambda: pgd_recon_loss(
                model, x, y, ci.lower, kind, config.pgd_steps, config.pgd_step_size, config.pgd_mode
            ),
        ),
    }
    total = torch.zeros((), device=y.device)
    values: dict[str, float] = {}
    for name, (coeff, fn) in terms.items():
        if coeff:
            value = fn()
            total = total + coeff * value
            values[name] = float(value.detach())
    return total, values, ci.lower


@torch.no_grad()
def evaluate(
    model: ComponentModel, data: DataSource, config: DecompositionConfig, device: torch.device
) -> dict[str, float]:
    """Reconstruction under each mask regime and L0 per layer on fixed evaluation batches."""
    gen = torch.Generator().manual_seed(config.seed + 10_000)
    sums: dict[str, float] = {}
    for _ in range(config.eval_batches):
        x = data.batch(config.batch_size, gen).to(device)
        tgt = model(x, cache_inputs=True)
        ci = model.causal_importance(tgt.inputs).lower
        y, kind = tgt.output, config.output_loss
        ones, ones_delta = ones_masks(ci)
        row = {
            "recon_unmasked": masked_recon_loss(model, x, y, ones, ones_delta, kind),
            "recon_ci": ci_recon_loss(model, x, y, ci, kind),
            "recon_stochastic": stochastic_recon_loss(model, x, y, ci, kind),
            "recon_stochastic_layerwise": stochastic_recon_loss(model, x, y, ci, kind, "layerwise"),
        }
        for k, v in row.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        for layer, l0 in l0_per_layer(ci, config.ci_alive_threshold).items():
            sums[f"l0/{layer}"] = sums.get(f"l0/{layer}", 0.0) + l0
    return {k: v / config.eval_batches for k, v in sums.items()}


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _faithfulness_warmup(model: ComponentModel, config: DecompositionConfig) -> None:
    params = [p for name, p in model.named_parameters() if name.startswith("components.")]
    opt = torch.optim.AdamW(
        params, lr=config.faithfulness_warmup_lr, weight_decay=config.faithfulness_warmup_wd
    )
    for _ in range(config.faithfulness_warmup_steps):
        loss = faithfulness_loss(model)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def decompose(
    model: ComponentModel,
    data: DataSource,
    config: DecompositionConfig,
    out_dir: Path | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> TrainResult:
    """Train ``model``'s components and CI functions in place. With ``out_dir``, checkpoints are
    written there every ``checkpoint_freq`` steps and an existing checkpoint is resumed.
    ``stop_after`` ends the loop after that many steps of the same schedule (``config.steps`` still
    sets the learning-rate and p annealing), e.g. to check that a regeneration follows a recorded
    loss history. With ``config.workers`` > 1 the batch is split over that many CPU processes
    (``spd_core.parallel``); this process is the first of them and ends with the trained model."""
    require(
        stop_after is None or 0 < stop_after <= config.steps,
        f"stop_after must be in 1..{config.steps} (config.steps), got {stop_after}",
    )
    if config.workers == 1:
        result = _train(model, data, config, out_dir, progress, stop_after, SOLO)
    else:
        with workers(
            _train, (model, data, config, out_dir, False, stop_after), config.workers
        ) as group:
            result = _train(model, data, config, out_dir, progress, stop_after, group)
    assert result is not None
    return result


def _train(
    model: ComponentModel,
    data: DataSource,
    config: DecompositionConfig,
    out_dir: Path | None,
    progress: bool,
    stop_after: int | None,
    group: Group,
) -> TrainResult | None:
    """The loop of one rank; rank 0 alone evaluates, writes checkpoints and returns the result."""
    end = config.steps if stop_after is None else stop_after
    device = pick_device(config.device)
    pin_malloc_thresholds()
    require(
        group.world == 1 or device.type == "cpu",
        f"workers > 1 splits batches over CPU processes; with device {device.type} use workers 1",
    )
    model.to(device)
    lead = group.rank == 0
    torch.manual_seed(group.seed(config.seed))
    gen = torch.Generator().manual_seed(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    sampler = (
        LossWeightedLayers(list(model.layers)) if config.ci_recon_layer_sampling == "loss" else None
    )
    start, history, resumed_from = 0, [], None
    ckpt_path = None if out_dir is None else Path(out_dir) / CHECKPOINT
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=device, weights_only=False)
        require(
            state["config"] == config.model_dump(),
            f"checkpoint {ckpt_path} was written with a different config; delete it or use another "
            "--out",
        )
        model.load_state_dict(state["model"], strict=False)
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["data_rng"])
        torch.set_rng_state(
            state["torch_rng_ranks"][group.rank] if group.world > 1 else state["torch_rng"]
        )
        if device.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        start, history, resumed_from = state["step"], state["history"], state["step"]
        if sampler is not None:
            sampler.mean = dict(state["ci_layer_loss"])
        log.info("resumed from step %d (%s)", start, ckpt_path)
    else:
        _faithfulness_warmup(model, config)
    broadcast_params(params, group)

    def checkpoint(step: int) -> None:
        assert ckpt_path is not None
        rng = gather_rng_states(group)  # a collective: every rank takes part, rank 0 writes
        if not lead:
            return
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save(
            {
                "step": step,
                "model": model.trainable_state(),
                "optimizer": opt.state_dict(),
                "data_rng": gen.get_state(),
                "torch_rng": rng[0],
                "torch_rng_ranks": rng if group.world > 1 else None,
                "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                "history": history,
                "ci_layer_loss": None if sampler is None else dict(sampler.mean),
                "config": config.model_dump(),
            },
            ckpt_path,
        )

    t0 = time.perf_counter()
    # no tqdm at all off the lead: even a disabled bar makes a multiprocessing lock, which a worker
    # rank (it leaves with os._exit) would leak ("leaked semaphore objects" at shutdown)
    bar = (
        tqdm(range(start, end), initial=start, total=end, dynamic_ncols=True)
        if progress and lead
        else None
    )
    for step in bar if bar is not None else range(start, end):
        for param_group in opt.param_groups:
            param_group["lr"] = config.lr_at(step)
        x = data.batch(config.batch_size, gen)[group.rows(config.batch_size)].to(device)
        ci_layer = None if sampler is None else sampler.draw()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.autocast_bf16):
            loss, values, ci = loss_terms(model, x, config, step, ci_layer)
        if sampler is not None and ci_layer is not None and "ci_recon" in values:
            sampler.update(ci_layer, values["ci_recon"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_grads(params, group)
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {float(loss.detach())} at step {step}; terms: {values}"
            )
        if step % config.log_freq == 0 or step == config.steps - 1:
            l0 = sum(l0_per_layer(ci, config.ci_alive_threshold).values())
            row = {
                "step": float(step),
                **mean_values({"loss": float(loss.detach()), **values, "l0_total": l0}, group),
            }
            history.append(row)
            if bar is not None:
                bar.set_postfix(
                    {k: f"{v:.3g}" for k, v in row.items() if k != "step"}, refresh=False
                )
        done = step + 1
        if lead and done % config.eval_freq == 0 and done < config.steps:
            history.append({"step": float(done), **evaluate(model, data, config, device)})
        if ckpt_path is not None and done % config.checkpoint_freq == 0 and done < end:
            checkpoint(done)
    if bar is not None:
        bar.close()
    if (
        ckpt_path is not None
    ):  # before the evaluation, whose stochastic masks draw from torch's generator
        checkpoint(end)
    if not lead:
        return None
    metrics = {**evaluate(model, data, config, device), **weight_delta_report(model).metrics()}
    return TrainResult(metrics, history, resumed_from, time.perf_counter() - t0)
