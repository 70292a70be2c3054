"""Toy Models of Superposition (TMS): x̂ = ReLU(W2 · [hidden identity layers] · W1 x + b), trained
in code.

Features are independently active with probability ``feature_prob`` and then uniform in [0, 1]. A
target is clean when every feature is represented (its column of W1 has non-negligible norm and
its reconstruction is good); some seeds learn only n_hidden² features or drop one (seen with the
public training script's default seed), so ``train_tms`` scans seeds from ``seed`` until one is
clean.
"""

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn


class TMSSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["tms"] = "tms"
    n_features: int
    n_hidden: int
    n_hidden_layers: int = 0
    tied_weights: bool = True
    feature_prob: float = 0.05
    train_steps: int = 5000
    train_batch: int = 1024
    train_lr: float = 5e-3
    seed: int = 0


class TMSModel(nn.Module):
    def __init__(self, spec: TMSSpec) -> None:
        super().__init__()
        self.spec = spec
        self.linear1 = nn.Linear(spec.n_features, spec.n_hidden, bias=False)
        hidden = [
            nn.Linear(spec.n_hidden, spec.n_hidden, bias=False) for _ in range(spec.n_hidden_layers)
        ]
        for layer in hidden:
            nn.init.eye_(layer.weight)
        self.hidden_layers = nn.ModuleList(hidden)
        self.linear2 = nn.Linear(spec.n_hidden, spec.n_features, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.linear1(x)
        for layer in self.hidden_layers:
            h = layer(h)
        return torch.relu(self.linear2(h))

    def tie(self) -> None:
        """Set W2 = W1ᵀ (the TMS paper's tied weights); called after every optimiser step."""
        with torch.no_grad():
            self.linear2.weight.copy_(self.linear1.weight.T)


class SparseFeatures:
    """Batches of sparse features: each feature active with probability p, value U(0, 1)."""

    def __init__(self, n_features: int, p: float) -> None:
        self.n_features, self.p = n_features, p

    def batch(self, batch_size: int, generator: torch.Generator) -> Tensor:
        active = torch.rand(batch_size, self.n_features, generator=generator) < self.p
        return active * torch.rand(batch_size, self.n_features, generator=generator)


def _train_once(spec: TMSSpec, seed: int) -> TMSModel:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = TMSModel(spec)
    if spec.tied_weights:
        model.tie()
    for layer in model.hidden_layers:
        layer.weight.requires_grad_(False)
    data = SparseFeatures(spec.n_features, spec.feature_prob)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.train_lr, weight_decay=0.0)
    for _ in range(spec.train_steps):
        x = data.batch(spec.train_batch, gen)
        loss = (model(x) - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if spec.tied_weights:
            # Tied: W2 = W1ᵀ, so W1 receives both gradients.
            assert model.linear1.weight.grad is not None and model.linear2.weight.grad is not None
            model.linear1.weight.grad += model.linear2.weight.grad.T
            model.linear2.weight.grad = None
        opt.step()
        if spec.tied_weights:
            model.tie()
    return model.requires_grad_(False).eval()


def feature_recovery(model: TMSModel, n_samples: int = 2000) -> Tensor:
    """Per feature: 1 − MSE of reconstructing that feature alone at value 1 (1 = perfect)."""
    with torch.no_grad():
        x = torch.eye(model.spec.n_features)
        return 1 - (model(x) - x).pow(2).sum(-1)


def is_clean(model: TMSModel) -> bool:
    """Every feature has a W1 column of norm ≥ 0.5 and is reconstructed with score ≥ 0.5 alone."""
    norms = model.linear1.weight.norm(dim=0)
    return bool((norms > 0.5).all() and (feature_recovery(model) > 0.5).all())


def train_tms(spec: TMSSpec, max_seeds: int = 32) -> tuple[TMSModel, int]:
    """Train from ``spec.seed`` upward until a clean target appears; returns (model, seed used)."""
    for seed in range(spec.seed, spec.seed + max_seeds):
        model = _train_once(spec, seed)
        if is_clean(model):
            return model, seed
    raise RuntimeError(f"no clean TMS target in seeds {spec.seed}..{spec.seed + max_seeds - 1}")
