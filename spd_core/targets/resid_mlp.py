"""Residual MLP (compressed computation): n_features inputs embedded in a residual stream by a fixed
random unit-norm W_E, n_layers MLPs with ReLU, read off by W_U = W_Eᵀ; labels x + ReLU(x).

The MLPs must compute ReLU of many more features than they have neurons (100 features, 50 neurons
for one layer). Features are active with probability ``feature_prob`` and then uniform in [−1, 1].
"""

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn


class ResidMLPSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["resid_mlp"] = "resid_mlp"
    n_features: int = 100
    d_embed: int = 1000
    d_mlp: int = 50
    n_layers: int = 1
    feature_prob: float = 0.01
    train_steps: int = 1000
    train_batch: int = 2048
    train_lr: float = 3e-3
    seed: int = 0


class MLPBlock(nn.Module):
    def __init__(self, d_embed: int, d_mlp: int) -> None:
        super().__init__()
        self.mlp_in = nn.Linear(d_embed, d_mlp, bias=False)
        self.mlp_out = nn.Linear(d_mlp, d_embed, bias=False)

    def forward(self, resid: Tensor) -> Tensor:
        return resid + self.mlp_out(torch.relu(self.mlp_in(resid)))


class ResidMLP(nn.Module):
    def __init__(self, spec: ResidMLPSpec) -> None:
        super().__init__()
        self.spec = spec
        gen = torch.Generator().manual_seed(spec.seed)
        W_E = torch.randn(spec.n_features, spec.d_embed, generator=gen)
        self.register_buffer("W_E", W_E / W_E.norm(dim=-1, keepdim=True))
        self.layers = nn.ModuleList(
            MLPBlock(spec.d_embed, spec.d_mlp) for _ in range(spec.n_layers)
        )

    W_E: Tensor

    def forward(self, x: Tensor) -> Tensor:
        resid = x @ self.W_E
        for layer in self.layers:
            resid = layer(resid)
        return resid @ self.W_E.T


class ResidMLPFeatures:
    """Batches of sparse features in [−1, 1], each active with probability p."""

    def __init__(self, n_features: int, p: float) -> None:
        self.n_features, self.p = n_features, p

    def batch(self, batch_size: int, generator: torch.Generator) -> Tensor:
        active = torch.rand(batch_size, self.n_features, generator=generator) < self.p
        return active * (2 * torch.rand(batch_size, self.n_features, generator=generator) - 1)


def labels(x: Tensor) -> Tensor:
    return x + torch.relu(x)


def train_resid_mlp(spec: ResidMLPSpec) -> ResidMLP:
    torch.manual_seed(spec.seed)
    gen = torch.Generator().manual_seed(spec.seed + 1)
    model = ResidMLP(spec)
    data = ResidMLPFeatures(spec.n_features, spec.feature_prob)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.train_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.train_steps)
    for _ in range(spec.train_steps):
        x = data.batch(spec.train_batch, gen)
        loss = (model(x) - labels(x)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.requires_grad_(False).eval()
