"""Built-in experiments: a target spec and a decomposition config per name.

Hyper-parameters follow the SPD paper and the public implementation's configs, with these
differences: none in the TMS parametrisation (linear2's components are linear1's, transposed, as
the target's weights are tied); step counts are the public configs' (TMS 10k rather than the paper's
40k). Precision: the public implementation trains everything under CPU bf16 autocast. We train TMS
in fp32 (with bf16 autocast our TMS 5-2 run merged linear2's five features into two components, seen
once; its step is also slower in bf16) and the residual MLPs under bf16 autocast (the step is about
2x faster; resid_mlp1 still gives each feature its own mlp_in component,
tests/core/test_recovery.py).
"""

from pydantic import BaseModel, ConfigDict

from spd_core.config import DecompositionConfig, ModulePattern
from spd_core.targets.resid_mlp import ResidMLPSpec
from spd_core.targets.spec import HFSpec
from spd_core.targets.tms import TMSSpec


class Experiment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    target: TMSSpec | ResidMLPSpec | HFSpec
    decomposition: DecompositionConfig


def _tms(
    n_features: int, n_hidden: int, hidden_layers: int, C: int, imp: float, p: float, steps: int
) -> Experiment:
    modules = [ModulePattern(pattern="linear1", C=C), ModulePattern(pattern="linear2", C=C)]
    if hidden_layers:
        modules.append(ModulePattern(pattern="hidden_layers.*", C=C))
    return Experiment(
        target=TMSSpec(n_features=n_features, n_hidden=n_hidden, n_hidden_layers=hidden_layers),
        decomposition=DecompositionConfig(
            steps=steps,
            batch_size=4096,
            modules=modules,
            tied={"linear2": "linear1"},
            importance_coeff=imp,
            p_start=p,
            lr=1e-3,
            lr_schedule="cosine",
            faithfulness_warmup_steps=200,
            eval_freq=1000,
            checkpoint_freq=1000,
        ),
    )


def _resid(
    n_layers: int,
    n_features: int,
    d_mlp: int,
    C: int,
    imp: float,
    lr: float,
    hidden: int,
    steps: int,
) -> Experiment:
    return Experiment(
        target=ResidMLPSpec(n_features=n_features, d_mlp=d_mlp, n_layers=n_layers),
        decomposition=DecompositionConfig(
            steps=steps,
            batch_size=2048,
            modules=[
                ModulePattern(pattern="layers.*.mlp_in", C=C),
                ModulePattern(pattern="layers.*.mlp_out", C=C),
            ],
            importance_coeff=imp,
            p_start=2.0,
            lr=lr,
            lr_schedule="constant",
            ci_hidden=hidden,
            faithfulness_warmup_steps=200,
            eval_freq=1000,
            checkpoint_freq=1000,
            autocast_bf16=True,
        ),
    )


EXPERIMENTS: dict[str, Experiment] = {
    "tms_5-2": _tms(5, 2, 0, 20, 3e-3, 1.0, 10_000),
    "tms_5-2-id": _tms(5, 2, 1, 20, 3e-3, 1.0, 10_000),
    "tms_40-10": _tms(40, 10, 0, 200, 1e-4, 2.0, 10_000),
    "tms_40-10-id": _tms(40, 10, 1, 200, 1e-4, 2.0, 20_000),
    "resid_mlp1": _resid(1, 100, 50, 100, 1e-5, 2e-3, 16, 20_000),
    "resid_mlp2": _resid(2, 100, 25, 400, 1e-5, 1e-3, 16, 50_000),
    "resid_mlp3": _resid(3, 102, 17, 500, 0.5e-5, 1e-3, 128, 200_000),
}


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise KeyError(
            f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)} (or a JSON config file)"
        )
    return EXPERIMENTS[name]
