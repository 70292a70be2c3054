"""The demo run: the demo language model, decomposed, reported and saved as the embedded default.

``make demo-run`` (``python -m spd_core.demo``) regenerates it from scratch with fixed seeds:
train the target (or reuse ``--target-dir``), decompose every attention projection and MLP matrix of
both blocks with a KL output loss, measure the report below, and save the run directory.

Report: unmasked output vs target; KL of the stochastic-masked model; mean L0 per layer and in all;
per-mechanism accuracy (top-1 = the probe's answer) and agreement (top-1 = the target's own top-1)
under the target, CI masks, rounded masks and stochastic masks (mean and worst of several samples);
the KL when each matrix alone is CI-masked (each weight delta's relative norm and mean square come
with the decomposition's metrics: ``spd_core.weight_delta``). Then the harvest
(``DEMO_HARVEST`` over ``DEMO_HARVEST_TEXTS`` texts of the run's corpus) into ``harvest.sqlite``,
and the logged loss history into ``history.jsonl``.
"""

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor

from spd_core.config import DecompositionConfig, ModulePattern
from spd_core.decompose import decompose, l0_per_layer
from spd_core.errors import InvalidInput, require
from spd_core.harvest import HarvestConfig, harvest
from spd_core.harvest_store import write_harvest
from spd_core.losses import output_loss
from spd_core.masks import ones_masks, rounded_masks, stochastic_masks
from spd_core.model import ComponentModel
from spd_core.run import DEMO_RUN, build_component_model, save_run, write_text_atomic
from spd_core.targets.language import BEHAVIOURS, Probe, probe_prompts
from spd_core.targets.llama_native import native_copy
from spd_core.targets.spec import DemoLMSpec, corpus_texts, data_source, load_target, save_target
from spd_core.targets.tiny_lm import encode_batch, train_demo_lm
from spd_core.targets.tokenizer import build_tokenizer, word_id

log = logging.getLogger(__name__)

DEMO_CONFIG = DecompositionConfig(
    seed=0,
    steps=15000,
    batch_size=32,
    seq_len=48,
    modules=[
        ModulePattern(pattern="model.layers.*.self_attn.*_proj", C=64),
        ModulePattern(pattern="model.layers.*.mlp.*_proj", C=64),
    ],
    ci_fn_type="shared_mlp",
    ci_hidden=256,
    lr=5e-3,
    lr_schedule="cosine",
    lr_warmup_frac=0.02,
    lr_final_frac=0.05,
    grad_clip=1.0,
    faithfulness_warmup_steps=400,
    faithfulness_coeff=1e7,  # on the mean squared delta: components sum to the weights
    importance_coeff=2e-3,
    p_start=2.0,
    p_end=1.0,
    stochastic_recon_coeff=1.0,
    stochastic_layerwise_coeff=0.0,
    stochastic_subset_coeff=1.0,
    ci_recon_coeff=1.5,
    ci_recon_mode="sequence_layer",
    output_loss="kl",
    eval_freq=500,
    eval_batches=2,
    log_freq=20,
    checkpoint_freq=250,
    workers=2,
)

DEMO_HARVEST = HarvestConfig(
    threshold=0.5,
    n_examples=10,
    window=8,
    top_tokens=15,
    top_cofiring=10,
    attribution_top_k=12,
    max_nodes=20_000,
)
DEMO_HARVEST_TEXTS = 700  # texts of the run's own corpus harvested into harvest.sqlite
DEMO_HARVEST_PROCESSES = (
    2  # the harvest's texts split over this many CPU processes (one per core here)
)

Forward = Callable[[Tensor], Tensor]


def _last_logits(forward: Forward, ids: Tensor, last: Tensor) -> Tensor:
    return forward(ids)[torch.arange(ids.shape[0]), last]


def probe_batch(tokenizer, probes: Sequence[Probe]) -> tuple[Tensor, Tensor, Tensor]:
    """(ids right-padded, index of each prompt's last token, target token ids)."""
    ids, mask = encode_batch(tokenizer, [p.text for p in probes])
    targets = torch.tensor([word_id(tokenizer, p.target) for p in probes])
    return ids, mask.sum(1) - 1, targets


@torch.no_grad()
def regime_report(
    model: ComponentModel, tokenizer, probes: Sequence[Probe], n_stochastic: int = 5
) -> dict:
    """Per-mechanism accuracy under each mask regime, stochastic KL, L0 and per-matrix CI-masked
    KL."""
    ids, last, targets = probe_batch(tokenizer, probes)
    tgt = model(ids, cache_inputs=True)
    ci = model.causal_importance(tgt.inputs).lower
    target_last = tgt.output[torch.arange(len(probes)), last]

    def masked(masks, delta=None) -> Tensor:
        return _last_logits(lambda x: model(x, masks=masks, delta_masks=delta).output, ids, last)

    logits = {"target": target_last, "ci": masked(ci), "rounded": masked(rounded_masks(ci, 0.0))}
    ones, ones_delta = ones_masks(ci)
    logits["unmasked"] = masked(ones, ones_delta)
    stoch = []
    for _ in range(n_stochastic):
        m, d = stochastic_masks(ci)
        stoch.append(masked(m, d))
    mechanisms = list(dict.fromkeys(p.mechanism for p in probes))

    def rate(hit: Tensor) -> dict[str, float]:
        return {
            m: float(hit[[i for i, p in enumerate(probes) if p.mechanism == m]].float().mean())
            for m in mechanisms
        }

    # accuracy: top-1 is the probe's answer; agreement: top-1 is the target model's own top-1 (what
    # a faithful decomposition must reproduce, right or wrong)
    report: dict = {}
    for name, reference in (("accuracy", targets), ("agreement", target_last.argmax(-1))):
        report |= {f"{name}_{k}": rate(v.argmax(-1) == reference) for k, v in logits.items()}
        per_sample = [rate(s.argmax(-1) == reference) for s in stoch]
        report[f"{name}_stochastic_mean"] = {
            m: sum(a[m] for a in per_sample) / len(per_sample) for m in mechanisms
        }
        report[f"{name}_stochastic_worst"] = {m: min(a[m] for a in per_sample) for m in mechanisms}
    report["kl_stochastic_last_token"] = sum(
        float(output_loss(s, target_last, "kl")) for s in stoch
    ) / len(stoch)
    report["kl_ci_last_token"] = float(output_loss(logits["ci"], target_last, "kl"))
    report["max_abs_unmasked_minus_target"] = float((logits["unmasked"] - target_last).abs().max())
    real = torch.arange(ids.shape[1]).unsqueeze(0) <= last.unsqueeze(
        1
    )  # positions holding real tokens
    ci_real = {k: g[real] for k, g in ci.items()}
    report["l0_per_layer"] = l0_per_layer(ci_real, 0.0)
    report["l0_total"] = sum(report["l0_per_layer"].values())
    report["l0_total_above"] = {str(t): sum(l0_per_layer(ci_real, t).values()) for t in (0.1, 0.5)}
    single = {}
    for layer in model.layers:
        single[layer] = float(output_loss(masked({layer: ci[layer]}), target_last, "kl"))
    report["kl_single_matrix_ci"] = single
    report["kl_single_matrix_ci_worst"] = max(single.values())
    return report


def build_demo(
    out: Path,
    steps: int | None,
    target_dir: Path | None,
    progress: bool,
    harvest_texts: int = DEMO_HARVEST_TEXTS,
) -> dict:
    spec = DemoLMSpec()
    config = DEMO_CONFIG if steps is None else DEMO_CONFIG.model_copy(update={"steps": steps})
    tokenizer = build_tokenizer()
    t0 = time.perf_counter()
    info: dict = {}
    if target_dir is not None and (target_dir / "config.json").is_file():
        target = load_target(spec, target_dir)
    else:
        trained, tokenizer, lm_report = train_demo_lm(spec.lm, progress=progress)
        info["target_train_seconds"] = lm_report.train_seconds
        if target_dir is not None:
            save_target(spec, trained, target_dir)
        target = native_copy(
            trained
        )  # the forward load_target gives, so a reloaded run retraces this one
    target.requires_grad_(False).eval()
    target_seconds = time.perf_counter() - t0
    torch.manual_seed(config.seed)
    model = build_component_model(spec, target, config)
    data = data_source(spec, target, config.seq_len)
    result = decompose(model, data, config, out_dir=out, progress=progress)
    probes = probe_prompts(spec.lm.seed, spec.lm.n_probes_per_mechanism)
    report = regime_report(model, tokenizer, probes)
    metrics = {
        **result.metrics,
        **report,
        "train_seconds": result.seconds,
        "target_seconds": target_seconds,
    }
    save_run(
        out,
        model,
        spec,
        config,
        metrics,
        tokenizer=tokenizer,
        probes=[
            {"text": p.text, "target_token": p.target, "mechanism": p.mechanism, "foil": p.foil}
            for p in probes
        ],
        info=info,
        behaviours=BEHAVIOURS,
    )
    write_history(out, result.history)
    (out / "checkpoint.pt").unlink(missing_ok=True)
    if harvest_texts:
        metrics["harvest_seconds"] = harvest_demo(
            out, model, tokenizer, spec, harvest_texts, progress
        )
    return metrics


def harvest_demo(
    out: Path, model: ComponentModel, tokenizer, spec: DemoLMSpec, n_texts: int, progress: bool
) -> float:
    """Harvest ``n_texts`` of the run's corpus with ``DEMO_HARVEST`` into ``out/harvest.sqlite``,
    over ``DEMO_HARVEST_PROCESSES`` CPU processes; seconds taken."""
    t0 = time.perf_counter()
    cfg = replace(DEMO_HARVEST, max_tokens=int(model.target.config.max_position_embeddings))  # type: ignore[union-attr]
    texts = corpus_texts(spec, n_texts)
    write_harvest(
        out,
        harvest(model, tokenizer, texts, cfg, progress=progress, processes=DEMO_HARVEST_PROCESSES),
    )
    return time.perf_counter() - t0


HISTORY_FILE = "history.jsonl"


def write_history(out: Path, history: Sequence[dict]) -> None:
    """The decomposition's logged rows (every ``log_freq`` steps, plus evals), one JSON per line."""
    write_text_atomic(out / HISTORY_FILE, "".join(json.dumps(row) + "\n" for row in history))


def read_history(run_dir: Path) -> list[dict]:
    return [
        json.loads(line)
        for line in (run_dir / HISTORY_FILE).read_text().splitlines()
        if line.strip()
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m spd_core.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=DEMO_RUN,
        help=f"run directory (default: the shipped {DEMO_RUN})",
    )
    ap.add_argument("--steps", type=int, help=f"decomposition steps (default {DEMO_CONFIG.steps})")
    ap.add_argument("--target-dir", type=Path, help="reuse (or save) the trained target here")
    ap.add_argument(
        "--harvest-texts",
        type=int,
        default=DEMO_HARVEST_TEXTS,
        help=f"corpus texts to harvest into harvest.sqlite (default {DEMO_HARVEST_TEXTS}; 0 skips)",
    )
    ap.add_argument(
        "--harvest-only", action="store_true", help="only (re)harvest the run already in --out"
    )
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    require(args.harvest_texts >= 0, f"--harvest-texts must be >= 0, got {args.harvest_texts}")

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    torch.set_num_threads(1)
    if args.harvest_only:
        from spd_core.run import load_run

        run = load_run(args.out)
        if not isinstance(run.target_spec, DemoLMSpec):
            raise InvalidInput(f"{args.out} is not a demo run")
        seconds = harvest_demo(
            args.out,
            run.model,
            run.tokenizer,
            run.target_spec,
            args.harvest_texts,
            not args.no_progress,
        )
        print(json.dumps({"harvest_seconds": seconds}))
        return 0
    metrics = build_demo(
        args.out, args.steps, args.target_dir, not args.no_progress, args.harvest_texts
    )
    print(json.dumps(metrics, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
