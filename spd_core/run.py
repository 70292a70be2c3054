"""The run directory: one decomposition on disk, saved and loaded by this module only.

Layout: ``run.json`` (format version, target spec, decomposition config, layer map, dtype, metrics),
``target/`` (toy weights + spec, or a transformers ``save_pretrained`` directory),
``components.safetensors`` (V, U and CI-function parameters), optional ``tokenizer/``,
``harvest.sqlite``, ``prompts.jsonl`` and ``behaviours.json`` (optional: for each probe mechanism
tag, ``{description, names}``: what the behaviour is in plain words and names people use for it).
``run.json`` is written last, so a directory without it
is not a run.
"""

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from spd_core.config import DecompositionConfig
from spd_core.errors import require
from spd_core.model import ComponentModel
from spd_core.targets.spec import AnySpec, load_target, model_kwargs, parse_target_spec, save_target

FORMAT_VERSION = 1
DEMO_RUN = Path(__file__).resolve().parent / "demo_run"


@dataclass
class LoadedRun:
    model: ComponentModel
    target_spec: AnySpec
    config: DecompositionConfig
    metrics: dict[str, Any]
    path: Path | None = None
    tokenizer: Any = None
    probes: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    behaviours: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def harvest_path(self) -> Path | None:
        if self.path is None:
            return None
        p = self.path / "harvest.sqlite"
        return p if p.exists() else None


def build_component_model(
    spec: AnySpec, target: torch.nn.Module, config: DecompositionConfig
) -> ComponentModel:
    return ComponentModel(
        target,
        [(m.pattern, m.C) for m in config.modules],
        ci_fn_type=config.ci_fn_type,
        ci_hidden=config.ci_hidden,
        tied=config.tied,
        **model_kwargs(spec),
    )


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_run(
    out_dir: Path,
    model: ComponentModel,
    target_spec: AnySpec,
    config: DecompositionConfig,
    metrics: dict[str, Any],
    tokenizer: Any = None,
    probes: list[dict[str, Any]] | None = None,
    info: dict[str, Any] | None = None,
    behaviours: dict[str, dict[str, Any]] | None = None,
) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "run.json").unlink(missing_ok=True)
    save_target(target_spec, model.target, out_dir / "target")
    state = {k: v.detach().cpu().contiguous() for k, v in model.trainable_state().items()}
    save_file(state, str(out_dir / "components.safetensors.tmp"))
    os.replace(out_dir / "components.safetensors.tmp", out_dir / "components.safetensors")
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir / TOKENIZER_DIR)
    if probes is not None:
        write_text_atomic(out_dir / "prompts.jsonl", "".join(json.dumps(p) + "\n" for p in probes))
    if behaviours is not None:
        text = json.dumps(check_behaviours(behaviours), indent=2) + "\n"
        write_text_atomic(out_dir / BEHAVIOURS_FILE, text)
    dtype = str(next(iter(state.values())).dtype).removeprefix("torch.")
    meta = {
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "target_spec": target_spec.model_dump(),
        "config": config.model_dump(),
        "layers": [asdict(info) for info in model.layers.values()],
        "dtype": dtype,
        "metrics": metrics,
        "info": info or {},
        "versions": {"torch": torch.__version__},
    }
    write_text_atomic(out_dir / "run.json", json.dumps(meta, indent=2))
    return out_dir


TOKENIZER_DIR = "tokenizer"
BEHAVIOURS_FILE = "behaviours.json"


def check_behaviours(behaviours: Any) -> dict[str, dict[str, Any]]:
    """``behaviours.json``'s content, checked: {tag: {"description": str, "names": [str, ...]}}."""
    if not isinstance(behaviours, dict):
        raise ValueError(
            f"behaviours must map mechanism tags to entries, got {type(behaviours).__name__}"
        )
    for tag, entry in behaviours.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("description"), str):
            raise ValueError(f"behaviour {tag!r} needs a 'description' string, got {entry!r}")
        names = entry.get("names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"behaviour {tag!r}: 'names' must be a list of strings, got {names!r}")
        if unknown := sorted(set(entry) - {"description", "names"}):
            raise ValueError(
                f"behaviour {tag!r}: unknown keys {unknown}; valid: description, names"
            )
    return behaviours


def load_tokenizer(directory: Path, light: bool = False) -> Any:
    """The run's tokenizer through transformers' ``AutoTokenizer``; None when the run has none.

    ``light`` (the server): a bare ``tokenizers.Tokenizer`` from ``tokenizer.json`` when there is
    one, which skips importing transformers (~0.6 s of start-up); it encodes the same ids with
    ``add_special_tokens=False``, the only way the server, harvest and grader encode."""
    if light and (directory / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(directory / "tokenizer.json"))
    if directory.is_dir():
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    return None


def load_run(
    path: str | Path, device: str | torch.device = "cpu", light_tokenizer: bool = False
) -> LoadedRun:
    """Load a run directory, or the shipped demo run by the name ``demo``; a directory written by
    the public SPD implementation (``final_config.yaml``) goes to ``spd_core.upstream``.
    ``light_tokenizer``: the tokenizer as a bare ``tokenizers.Tokenizer`` (see ``load_tokenizer``)
    instead of transformers'."""
    run_dir = DEMO_RUN if str(path) == "demo" else Path(path)
    meta_path = run_dir / "run.json"
    if not meta_path.is_file() and (run_dir / "final_config.yaml").is_file():
        from spd_core.upstream import load_upstream_run  # a run of the public implementation

        return load_upstream_run(run_dir, device, light_tokenizer)
    if not meta_path.is_file():
        hint = " (the demo run is not built yet: make demo-run)" if str(path) == "demo" else ""
        raise FileNotFoundError(
            f"{run_dir} is not a run directory: no run.json (ours) or final_config.yaml "
            f"(goodfire-ai/spd){hint}"
        )
    meta = json.loads(meta_path.read_text())
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{run_dir}: run format version {version!r}; this spd-mcp reads version "
            f"{FORMAT_VERSION}"
        )
    spec = parse_target_spec(meta["target_spec"])
    config = DecompositionConfig.model_validate(meta["config"])
    target = load_target(spec, run_dir / "target")
    model = build_component_model(spec, target, config)
    missing, unexpected = model.load_state_dict(
        load_file(str(run_dir / "components.safetensors")), strict=False
    )
    missing = [k for k in missing if not k.startswith("target.")]
    require(
        not missing and not unexpected,
        f"{run_dir}: component state mismatch: missing {missing}, unexpected {unexpected}",
    )
    tokenizer = load_tokenizer(run_dir / TOKENIZER_DIR, light_tokenizer)
    probes = []
    if (run_dir / "prompts.jsonl").is_file():
        probes = [
            json.loads(line)
            for line in (run_dir / "prompts.jsonl").read_text().splitlines()
            if line.strip()
        ]
    behaviours_path = run_dir / BEHAVIOURS_FILE
    behaviours = {}
    if behaviours_path.is_file():
        behaviours = check_behaviours(json.loads(behaviours_path.read_text()))
    model.to(device)
    return LoadedRun(
        model,
        spec,
        config,
        meta.get("metrics", {}),
        run_dir,
        tokenizer,
        probes,
        meta.get("info", {}),
        behaviours,
    )
