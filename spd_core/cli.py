"""spd-decompose: train (or load) a target, decompose it with a progress bar, save the run
directory.

spd-decompose tms_5-2                      # a built-in experiment
spd-decompose my_config.json --steps 500    # {"target": {...}, "decomposition": {...}}
spd-decompose --hf path/to/model_dir --module 'model.layers.*.mlp.*_proj:32' --steps 200
spd-decompose --list
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch
from pydantic import ValidationError

from spd_core.config import DecompositionConfig, ModulePattern
from spd_core.decompose import decompose
from spd_core.experiments import EXPERIMENTS, Experiment, get_experiment
from spd_core.model import match_modules
from spd_core.recovery import recovery_verdict
from spd_core.run import build_component_model, save_run
from spd_core.targets.resid_mlp import ResidMLPSpec
from spd_core.targets.spec import (
    HFSpec,
    build_target,
    data_source,
    load_hf_model,
    load_target,
    save_target,
    untrained_target,
)
from spd_core.targets.tms import TMSSpec
from spd_core.weight_delta import MEAN_SQ_KEY, REL_KEY, DeltaReport, weight_delta_report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spd-decompose",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "experiment",
        nargs="?",
        help=f"built-in experiment ({', '.join(EXPERIMENTS)}) or a JSON config file",
    )
    p.add_argument("--list", action="store_true", help="list the built-in experiments and exit")
    p.add_argument(
        "--hf",
        type=Path,
        help="a local transformers causal-LM directory (Llama-style or GPT-2) to decompose",
    )
    p.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="PATTERN:C",
        help="with --hf: module pattern and number of components (repeatable)",
    )
    p.add_argument(
        "--seq-len", type=int, default=16, help="with --hf: tokens per random training sequence"
    )
    p.add_argument("--steps", type=int, help="override the number of training steps")
    p.add_argument("--batch-size", type=int, help="override the batch size")
    p.add_argument("--seed", type=int, help="override the decomposition seed")
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="override the device (default: auto)"
    )
    p.add_argument(
        "--out",
        type=Path,
        help="run directory (default: runs/<experiment>); resumes a checkpoint found there",
    )
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    p.add_argument(
        "--workers", type=int, help="CPU processes that split each batch (data parallel; default 1)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: faster on shared machines)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def load_experiment(arg: str) -> tuple[str, Experiment]:
    path = Path(arg)
    if arg.endswith(".json") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"config file {arg} does not exist")
        try:
            return path.stem, Experiment.model_validate(json.loads(path.read_text()))
        except json.JSONDecodeError as err:
            raise ValueError(f"{arg} is not valid JSON: {err}") from err
    return arg, get_experiment(arg)


def _apply_overrides(exp: Experiment, args: argparse.Namespace) -> Experiment:
    overrides = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "device": args.device,
        "checkpoint_freq": args.checkpoint_every,
        "workers": args.workers,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if not overrides:
        return exp
    return exp.model_copy(
        update={
            "decomposition": exp.decomposition.model_validate(
                {**exp.decomposition.model_dump(), **overrides}
            )
        }
    )


def hf_experiment(path: Path, modules: list[str], seq_len: int) -> Experiment:
    """A decomposition of a local causal LM on random token sequences (KL output loss)."""
    if not modules:
        raise ValueError(
            "--hf needs at least one --module PATTERN:C, e.g. 'model.layers.*.mlp.*_proj:32'"
        )
    patterns = []
    for spec in modules:
        pattern, sep, c = spec.rpartition(":")
        if not sep or not c.isdigit() or int(c) < 1:
            raise ValueError(
                f"malformed --module {spec!r}; expected PATTERN:C with C ≥ 1, e.g. "
                "'transformer.h.*.mlp.c_fc:32'"
            )
        patterns.append(ModulePattern(pattern=pattern, C=int(c)))
    config = DecompositionConfig(
        steps=1000,
        batch_size=16,
        seq_len=seq_len,
        modules=patterns,
        importance_coeff=1e-3,
        p_start=2.0,
        p_end=1.0,
        stochastic_layerwise_coeff=0.0,
        stochastic_subset_coeff=1.0,
        ci_recon_coeff=1.0,
        ci_recon_mode="sequence_layer",
        output_loss="kl",
        faithfulness_warmup_steps=200,
        faithfulness_coeff=1e7,
        eval_freq=250,
        eval_batches=2,
    )
    return Experiment(target=HFSpec(source=str(path.resolve())), decomposition=config)


def delta_table(report: DeltaReport) -> str:
    """Each matrix's relative delta norm and mean squared delta, then the summary or warning."""
    rows = [f"{'weight delta':32s} {'‖W − (VU)ᵀ‖/‖W‖':>18s} {'mean squared':>13s}"]
    rows += [f"  {k:30s} {v:18.3g} {report.mean_sq[k]:13.3g}" for k, v in report.rel_norm.items()]
    return "\n".join([*rows, report.summary()])


def run(args: argparse.Namespace) -> Path:
    if args.hf is not None:
        name, exp = args.hf.name, hf_experiment(args.hf, args.module, args.seq_len)
    else:
        name, exp = load_experiment(args.experiment)
    exp = _apply_overrides(exp, args)
    out = args.out or Path("runs") / name
    target_dir = out / "target"
    saved = (target_dir / "model.safetensors").is_file() or (target_dir / "config.json").is_file()
    # A saved or HF target is loaded once; a toy target to be trained is checked untrained first.
    target: torch.nn.Module | None = None
    if saved:
        target = load_target(exp.target, target_dir)
    elif isinstance(exp.target, HFSpec):
        target = load_hf_model(Path(exp.target.source))
    patterns = [(m.pattern, m.C) for m in exp.decomposition.modules]
    match_modules(
        target if target is not None else untrained_target(exp.target), patterns
    )  # before any training
    info: dict = {}
    if target is None:
        target, info = build_target(exp.target)
    if not saved:
        save_target(exp.target, target, target_dir)
    torch.manual_seed(exp.decomposition.seed)  # component and CI-function initialisation
    model = build_component_model(exp.target, target, exp.decomposition)
    data = data_source(exp.target, target, exp.decomposition.seq_len)
    result = decompose(model, data, exp.decomposition, out_dir=out, progress=not args.no_progress)
    metrics = {**result.metrics, "train_seconds": result.seconds}
    save_run(out, model, exp.target, exp.decomposition, metrics, info=info)
    per_matrix = (f"{REL_KEY}/", f"{MEAN_SQ_KEY}/")  # shown below, one row per matrix
    for k, v in metrics.items():
        if not k.startswith(per_matrix):
            print(f"{k:32s} {v:.6g}")
    print(delta_table(weight_delta_report(model)))
    if isinstance(exp.target, TMSSpec | ResidMLPSpec):
        verdict = recovery_verdict(model, exp.target.kind, exp.target.n_features)
        if verdict is not None:
            print(verdict.line())
    resumed = (
        f" (resumed from step {result.resumed_from})" if result.resumed_from is not None else ""
    )
    print(f"run directory: {out}{resumed}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.list:
        for name, exp in EXPERIMENTS.items():
            d = exp.decomposition
            print(
                f"{name:14s} {exp.target.kind:10s} steps={d.steps} batch={d.batch_size} "
                f"modules={[m.pattern for m in d.modules]}"
            )
        return 0
    if not args.experiment and args.hf is None:
        print(
            f"spd-decompose: name an experiment ({', '.join(EXPERIMENTS)}) or a JSON config file",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    try:
        run(args)
    except (KeyError, ValueError, FileNotFoundError, ValidationError) as err:
        msg = err.args[0] if isinstance(err, KeyError) else str(err)
        print(f"spd-decompose: {msg}", file=sys.stderr)
        return 2
    print(f"total time: {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
