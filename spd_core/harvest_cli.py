"""spd-harvest: harvest a run's corpus statistics into RUN/harvest.sqlite (with a progress bar).

    spd-harvest runs/demo --texts corpus.txt               # one text per line
    spd-harvest runs/demo --texts corpus.txt --n-texts 500 --threshold 0.1 --batch 16

Without --texts the corpus is the run's own (``spd_core.targets.corpus_for_run``: the demo
language, or an HF run's text file); a run without one needs --texts. The defaults here are the
general ones; the shipped demo run was harvested with narrower limits
(``spd_core.demo.DEMO_HARVEST``, to stay under 10 MB), which
``python -m spd_core.demo --out RUN --harvest-only`` reproduces.
"""

import argparse
import sys
import time
from pathlib import Path

from spd_core.harvest import HarvestConfig, harvest
from spd_core.harvest_store import write_harvest
from spd_core.run import load_run


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spd-harvest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="run directory (or 'demo')")
    p.add_argument("--texts", type=Path, help="text file, one text per line")
    p.add_argument(
        "--n-texts", type=int, default=1000, help="use at most this many texts (default 1000)"
    )
    p.add_argument("--batch", type=int, default=16, help="texts per CI batch (default 16)")
    p.add_argument(
        "--threshold", type=float, default=0.1, help="CI above this counts as firing (default 0.1)"
    )
    p.add_argument(
        "--examples", type=int, default=20, help="top activating contexts kept per component"
    )
    p.add_argument(
        "--window", type=int, default=8, help="tokens kept on each side of an example's peak"
    )
    p.add_argument(
        "--no-attributions",
        action="store_true",
        help="skip dataset attributions (the slowest part)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="split the texts over this many CPU processes (default 1; same counts)",
    )
    return p


def load_texts(path: Path | None, run: object, n: int) -> list[str]:
    if path is not None:
        if not path.is_file():
            raise SystemExit(f"spd-harvest: --texts {path} is not a file")
        return [line for line in path.read_text().splitlines() if line.strip()][:n]
    from spd_core.targets import corpus_for_run

    try:
        return list(corpus_for_run(run, n))[:n]
    except ValueError as err:
        raise SystemExit(f"spd-harvest: {err}: give --texts FILE (one text per line)") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.processes < 1 or (args.processes > 1 and args.device != "cpu"):
        raise SystemExit(
            f"spd-harvest: --processes must be >= 1, and 1 with --device cuda; got {args.processes}"
        )
    run = load_run(args.run, device=args.device)
    if run.tokenizer is None or run.path is None:
        raise SystemExit(
            f"spd-harvest: run {args.run!r} has no tokenizer; harvest needs a language-model run"
        )
    texts = load_texts(args.texts, run, args.n_texts)
    ctx = getattr(getattr(run.model.target, "config", None), "max_position_embeddings", None)
    cfg = HarvestConfig(
        threshold=args.threshold,
        n_examples=args.examples,
        window=args.window,
        attributions=not args.no_attributions,
        max_tokens=ctx,
        batch_size=args.batch,
    )
    start = time.perf_counter()
    h = harvest(run.model, run.tokenizer, texts, cfg, processes=args.processes)
    path = write_harvest(run.path, h)
    sys.stderr.write(
        f"harvested {len(h.texts)} texts ({h.n_tokens} tokens) in "
        f"{time.perf_counter() - start:.1f} s -> {path}\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
