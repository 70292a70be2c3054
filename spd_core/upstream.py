"""Runs written by the public SPD implementation (goodfire-ai/spd), loaded as our ``LoadedRun``.

Such a directory holds ``final_config.yaml`` and ``model_<step>.pth`` (a state dict with
``target_model.<param>``, ``_components.<path with '.'->'-'>.V/.U`` and
``_ci_fns.<path>.layers.<i>.W/.b``). The target is rebuilt with our own classes (``TMSModel``,
``ResidMLP``, ``NativeLlama`` or transformers) from the checkpoint the config names, or, when that
path is not on this machine, from a copy next to the run (``target_run/``, the file at the top, a
``target/`` directory), from ``target`` passed by the caller, or (language models) from our demo
target when its weights are the ones stored in the checkpoint. Whatever is found must equal the
checkpoint's own copy of the target's weights. Anything we do not implement exactly (another CI
function type, sigmoid, identity insertion, global CI) is refused by name.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from spd_core.config import DecompositionConfig, ModulePattern
from spd_core.model import ComponentModel
from spd_core.run import DEMO_RUN, TOKENIZER_DIR, LoadedRun, build_component_model, load_tokenizer
from spd_core.targets.resid_mlp import ResidMLP, ResidMLPSpec
from spd_core.targets.spec import AnySpec, DemoLMSpec, HFSpec, load_target
from spd_core.targets.tms import TMSModel, TMSSpec

CONFIG_FILE = "final_config.yaml"
CI_TYPES = ("mlp", "vector_mlp", "shared_mlp")
SIGMOIDS = ("leaky_hard",)
TOY_CLASSES = {
    "spd.experiments.tms.models.TMSModel": "tms.pth",
    "spd.experiments.resid_mlp.models.ResidMLP": "resid_mlp.pth",
}
_CHECKPOINT = re.compile(r"^model_(\d+)\.pth$")


class UpstreamRunError(ValueError):
    """A run of the public implementation that this loader cannot serve; the message says why."""


@dataclass(frozen=True)
class UpstreamCI:
    fn_type: str
    hidden: int


def is_upstream_run(path: Path) -> bool:
    """A directory the public implementation wrote: ``final_config.yaml`` and no ``run.json`` of
    ours."""
    return (path / CONFIG_FILE).is_file() and not (path / "run.json").is_file()


def latest_checkpoint(run_dir: Path) -> Path:
    steps = {int(m.group(1)): p for p in run_dir.iterdir() if (m := _CHECKPOINT.match(p.name))}
    if not steps:
        raise UpstreamRunError(f"{run_dir}: no model_<step>.pth checkpoint next to {CONFIG_FILE}")
    return steps[max(steps)]


def read_config(run_dir: Path) -> dict[str, Any]:
    data = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    if not isinstance(data, dict):
        raise UpstreamRunError(f"{run_dir / CONFIG_FILE} is not a mapping")
    return data


def ci_settings(cfg: dict[str, Any]) -> UpstreamCI:
    """The CI function of the config (old ``ci_fn_type``/``ci_fn_hidden_dims`` keys, or a layerwise
    ``ci_config``), refused when we do not implement it exactly."""
    ci_config = cfg.get("ci_config")
    if isinstance(ci_config, dict):
        mode = ci_config.get("mode", "layerwise")
        if mode != "layerwise":
            raise UpstreamRunError(
                f"ci_config mode {mode!r} (CI function {ci_config.get('fn_type')!r}) is not "
                f"implemented here; valid: layerwise with fn_type one of {', '.join(CI_TYPES)}"
            )
        fn_type, hidden = ci_config.get("fn_type"), ci_config.get("hidden_dims")
    else:
        fn_type, hidden = cfg.get("ci_fn_type", "mlp"), cfg.get("ci_fn_hidden_dims")
    if fn_type not in CI_TYPES:
        raise UpstreamRunError(
            f"CI function type {fn_type!r} is not implemented here; valid: {', '.join(CI_TYPES)}"
        )
    if not isinstance(hidden, list) or len(hidden) != 1:
        raise UpstreamRunError(
            f"CI hidden dims {hidden!r}: our CI functions have exactly one hidden layer (e.g. [16])"
        )
    sigmoid = cfg.get("sigmoid_type", "leaky_hard")
    if sigmoid not in SIGMOIDS:
        raise UpstreamRunError(
            f"sigmoid_type {sigmoid!r} is not implemented here; valid: {', '.join(SIGMOIDS)}"
        )
    if cfg.get("identity_module_info"):
        raise UpstreamRunError(
            "identity_module_info (inserted identity layers) is not implemented here; valid: null"
        )
    if cfg.get("use_delta_component", True) is not True:
        raise UpstreamRunError(
            "use_delta_component false is not supported: our tools add the weight delta; valid: "
            "true"
        )
    return UpstreamCI(str(fn_type), int(hidden[0]))


# --- target -------------------------------------------------------------------------------------


def _first_file(candidates: list[Path]) -> Path | None:
    return next((p for p in candidates if p.is_file()), None)


def _toy_target_file(run_dir: Path, cfg: dict[str, Any], target: Path | None) -> Path:
    cls = cfg.get("pretrained_model_class")
    default = TOY_CLASSES[str(cls)]
    configured = str(cfg.get("pretrained_model_path") or "")
    name = Path(configured).name if configured and not configured.startswith("wandb:") else default
    candidates: list[Path] = []
    if target is not None:
        candidates += [target, target / name, target / default]
    if configured and not configured.startswith("wandb:"):
        candidates.append(Path(configured))
    candidates += [run_dir / "target_run" / name, run_dir / name, run_dir / "target" / name]
    found = _first_file(candidates)
    if found is None:
        where = (
            "a W&B path with no local copy"
            if configured.startswith("wandb:")
            else "not on this machine"
        )
        raise UpstreamRunError(
            f"{run_dir}: the target checkpoint {configured or name!r} is {where}; looked for "
            f"{', '.join(str(p) for p in candidates)}. Put {name} in {run_dir / 'target_run'} or "
            "pass the target path"
        )
    return found


def _train_config(target_file: Path) -> dict[str, Any]:
    for p in sorted(target_file.parent.glob("*_train_config.yaml")):
        data = yaml.safe_load(p.read_text())
        if isinstance(data, dict):
            return data
    return {}


def _check_same_weights(found: dict[str, Tensor], stored: dict[str, Tensor], where: str) -> None:
    """The target found must be the one the decomposition was made of (the checkpoint keeps a
    copy)."""
    if set(found) != set(stored):
        raise UpstreamRunError(
            f"{where}: parameters {sorted(set(found) ^ set(stored))} differ between this target "
            "and the checkpoint's target_model.*; it is not the decomposed model"
        )
    diff = [
        k
        for k in stored
        if found[k].shape != stored[k].shape or not torch.equal(found[k].float(), stored[k].float())
    ]
    if diff:
        raise UpstreamRunError(
            f"{where}: weights {diff[:5]} differ from the checkpoint's target_model.*; not the "
            "decomposed model"
        )


def _toy_target(
    run_dir: Path, cfg: dict[str, Any], stored: dict[str, Tensor], target: Path | None
) -> tuple[nn.Module, AnySpec, Path]:
    path = _toy_target_file(run_dir, cfg, target)
    weights = torch.load(path, map_location="cpu", weights_only=True)
    _check_same_weights(weights, stored, str(path))
    task = cfg.get("task_config") or {}
    p = float(task.get("feature_probability", 0.05))
    train = _train_config(path)
    if cfg["pretrained_model_class"].endswith("TMSModel"):
        n_hidden, n_features = weights["linear1.weight"].shape
        n_hl = len({k.split(".")[1] for k in weights if k.startswith("hidden_layers.")})
        tied = bool((train.get("tms_model_config") or train).get("tied_weights", True))
        spec: AnySpec = TMSSpec(
            n_features=n_features,
            n_hidden=n_hidden,
            n_hidden_layers=n_hl,
            tied_weights=tied,
            feature_prob=p,
            seed=int(train.get("seed", 0)),
        )
        model: nn.Module = TMSModel(spec)
        if "linear2.bias" not in weights:
            raise UpstreamRunError(
                f"{path}: a TMS target without linear2.bias is not supported here"
            )
        model.load_state_dict(weights)
        return model.requires_grad_(False).eval(), spec, path
    mc = train.get("resid_mlp_model_config") or {}
    unsupported = {k: mc.get(k) for k in ("act_fn_name", "in_bias", "out_bias") if k in mc}
    if unsupported and unsupported != {"act_fn_name": "relu", "in_bias": False, "out_bias": False}:
        raise UpstreamRunError(
            f"{path}: ResidMLP settings {unsupported}; valid: relu without biases"
        )
    if any(k.endswith(".bias") for k in weights):
        raise UpstreamRunError(
            f"{path}: a ResidMLP with biases is not supported here; valid: in_bias/out_bias false"
        )
    W_E, W_U = weights["W_E"], weights["W_U"]
    if not torch.equal(W_U, W_E.T):
        raise UpstreamRunError(f"{path}: W_U is not W_Eᵀ; our ResidMLP reads off with W_Eᵀ")
    n_layers = len({k.split(".")[1] for k in weights if k.startswith("layers.")})
    d_mlp = weights["layers.0.mlp_in.weight"].shape[0]
    spec = ResidMLPSpec(
        n_features=W_E.shape[0],
        d_embed=W_E.shape[1],
        d_mlp=d_mlp,
        n_layers=n_layers,
        feature_prob=p,
        seed=int(train.get("seed", 0)),
    )
    model = ResidMLP(spec)
    model.load_state_dict({k: v for k, v in weights.items() if k != "W_U"})
    return model.requires_grad_(False).eval(), spec, path


def _is_demo_target(stored: dict[str, Tensor]) -> bool:
    from safetensors.torch import load_file

    weights = DEMO_RUN / "target" / "model.safetensors"
    if not weights.is_file():
        return False
    demo = load_file(str(weights))
    demo.setdefault("lm_head.weight", demo.get("model.embed_tokens.weight", torch.empty(0)))
    return set(demo) == set(stored) and all(torch.equal(demo[k], stored[k]) for k in stored)


def _lm_target(
    run_dir: Path, cfg: dict[str, Any], stored: dict[str, Tensor], target: Path | None
) -> tuple[nn.Module, AnySpec, Path]:
    cls = str(cfg.get("pretrained_model_class"))
    if not cls.startswith("transformers."):
        valid = ", ".join([*TOY_CLASSES, "transformers.<causal LM class>"])
        raise UpstreamRunError(
            f"pretrained_model_class {cls!r} is not supported here; valid: {valid}"
        )
    configured = str(cfg.get("pretrained_model_name") or cfg.get("pretrained_model_path") or "")
    candidates = [
        p
        for p in [
            target,
            Path(configured) if configured else None,
            run_dir / "target",
            run_dir / "target_run",
        ]
        if p
    ]
    directory = next((p for p in candidates if (p / "config.json").is_file()), None)
    if directory is None and _is_demo_target(stored):
        directory = DEMO_RUN / "target"
        model = load_target(DemoLMSpec(), directory)
        return model, DemoLMSpec(), directory
    if directory is None:
        raise UpstreamRunError(
            f"{run_dir}: the target model {configured!r} is not on this machine; looked for a "
            f"transformers directory (config.json) at {', '.join(str(p) for p in candidates)}. "
            f"Copy it to {run_dir / 'target'} or pass the target path"
        )
    spec = HFSpec(source=str(directory))
    model = load_target(spec, directory)
    _check_same_weights({k: v for k, v in model.state_dict().items()}, stored, str(directory))
    return model, spec, directory


def _tokenizer(run_dir: Path, cfg: dict[str, Any], target_dir: Path, light: bool) -> Any:
    names = [cfg.get("tokenizer_name")]
    candidates = [Path(n) for n in names if n] + [
        run_dir / TOKENIZER_DIR,
        target_dir,
        target_dir.parent / TOKENIZER_DIR,
    ]
    for p in candidates:
        if (p / "tokenizer.json").is_file():
            return load_tokenizer(p, light)
    raise UpstreamRunError(
        f"{run_dir}: no tokenizer for this language model; looked for tokenizer.json in "
        f"{', '.join(str(p) for p in candidates)}. Copy the tokenizer to {run_dir / TOKENIZER_DIR}"
    )


# --- components and CI functions -----------------------------------------------------------------


def _ci_state(fn_type: str, src: dict[str, Tensor], prefix: str, ours: str) -> dict[str, Tensor]:
    """Our CI-function parameters from the public implementation's ``layers.0`` (in) and
    ``layers.2`` (out) weights; their Linear weights are stored (in, out), ours (out, in)."""
    W0, b0, W2, b2 = (
        src[f"{prefix}.layers.{i}.{n}"] for i, n in ((0, "W"), (0, "b"), (2, "W"), (2, "b"))
    )
    if fn_type == "mlp":  # W0 (C,1,h) b0 (C,h) W2 (C,h,1) b2 (C,1)
        return {
            f"{ours}.W_in": W0,
            f"{ours}.b_in": b0.unsqueeze(1),
            f"{ours}.W_out": W2,
            f"{ours}.b_out": b2.squeeze(-1),
        }
    if fn_type == "vector_mlp":  # W0 (C,d_in,h) b0 (C,h) W2 (C,h,1) b2 (C,1)
        return {
            f"{ours}.W_in": W0,
            f"{ours}.b_in": b0,
            f"{ours}.W_out": W2.squeeze(-1),
            f"{ours}.b_out": b2.squeeze(-1),
        }
    # shared_mlp: W0 (d_in,h) b0 (h) W2 (h,C) b2 (C)
    return {
        f"{ours}.net.0.weight": W0.T,
        f"{ours}.net.0.bias": b0,
        f"{ours}.net.2.weight": W2.T,
        f"{ours}.net.2.bias": b2,
    }


def _component_state(
    model: ComponentModel, fn_type: str, state: dict[str, Tensor]
) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for name, info in model.layers.items():
        theirs, ours = info.path.replace(".", "-"), name.replace(".", "-")
        for p in ("V", "U"):
            key = f"_components.{theirs}.{p}"
            if key not in state:
                raise UpstreamRunError(f"checkpoint has no {key} for module {info.path!r}")
            out[f"components.{ours}.{p}"] = state[key]
        extra = sorted(
            k
            for k in state
            if k.startswith(f"_ci_fns.{theirs}.layers.")
            and not re.match(r".*\.layers\.[02]\.[Wb]$", k)
        )
        if extra:
            raise UpstreamRunError(
                f"CI function of {info.path!r} has parameters {extra}: more than one hidden layer"
            )
        out |= _ci_state(fn_type, state, f"_ci_fns.{theirs}", f"ci_fns.{ours}")
    return out


def _decomposition_config(cfg: dict[str, Any], ci: UpstreamCI) -> DecompositionConfig:
    """Our record of their settings (informational: serving uses only the modules and CI)."""
    imp = next(
        (
            c
            for c in cfg.get("loss_metric_configs") or []
            if c.get("classname") == "ImportanceMinimalityLoss"
        ),
        {},
    )
    sched = cfg.get("lr_schedule") or {}
    task = cfg.get("task_config") or {}
    return DecompositionConfig(
        seed=int(cfg.get("seed", 0)),
        steps=int(cfg.get("steps", 1)),
        batch_size=int(cfg.get("batch_size", 1)),
        seq_len=task.get("max_seq_len"),
        modules=[
            ModulePattern(pattern=m["module_pattern"], C=int(m["C"])) for m in cfg["module_info"]
        ],
        ci_fn_type=ci.fn_type,  # type: ignore[arg-type]
        ci_hidden=ci.hidden,
        lr=float(sched.get("start_val", 1e-3)),
        lr_schedule="constant" if sched.get("fn_type") == "constant" else "cosine",
        lr_final_frac=float(sched.get("final_val_frac", 0.0)),
        importance_coeff=float(imp.get("coeff") or 0.0),
        p_start=float(imp.get("pnorm", 1.0)),
        p_end=imp.get("p_anneal_final_p"),
        sampling=cfg.get("sampling", "continuous"),
        output_loss=cfg.get("output_loss_type", "mse"),
        n_mask_samples=int(cfg.get("n_mask_samples", 1)),
        ci_alive_threshold=float(cfg.get("ci_alive_threshold", 0.1)),
        autocast_bf16=bool(cfg.get("autocast_bf16", False)),
        faithfulness_warmup_steps=int(cfg.get("faithfulness_warmup_steps", 0)),
    )


def _last_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else {}


def load_upstream_run(
    path: str | Path,
    device: str | torch.device = "cpu",
    light_tokenizer: bool = False,
    target: str | Path | None = None,
) -> LoadedRun:
    """Load a run directory of the public implementation; ``target`` overrides where its target
    is."""
    run_dir = Path(path)
    cfg = read_config(run_dir)
    for key in ("module_info", "pretrained_model_class"):
        if not cfg.get(key):
            raise UpstreamRunError(f"{run_dir / CONFIG_FILE} has no {key}")
    ci = ci_settings(cfg)
    checkpoint = latest_checkpoint(run_dir)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    stored = {
        k.removeprefix("target_model."): v
        for k, v in state.items()
        if k.startswith("target_model.")
    }
    target_path = Path(target) if target is not None else None
    is_toy = str(cfg["pretrained_model_class"]) in TOY_CLASSES
    loader = _toy_target if is_toy else _lm_target
    model_target, spec, found = loader(run_dir, cfg, stored, target_path)
    config = _decomposition_config(cfg, ci)
    model = build_component_model(spec, model_target, config)
    missing, unexpected = model.load_state_dict(
        _component_state(model, ci.fn_type, state), strict=False
    )
    missing = [k for k in missing if not k.startswith("target.")]
    if missing or unexpected:
        raise UpstreamRunError(
            f"{checkpoint}: component state mismatch: missing {missing}, unexpected {unexpected}"
        )
    tokenizer = (
        None
        if is_toy
        else _tokenizer(run_dir, cfg, found if found.is_dir() else found.parent, light_tokenizer)
    )
    info = {
        "format": "goodfire-ai/spd run directory",
        "checkpoint": checkpoint.name,
        "target_loaded_from": str(found),
        "upstream_config": cfg,
    }
    model.to(device)
    return LoadedRun(model, spec, config, _last_metrics(run_dir), run_dir, tokenizer, [], info)
