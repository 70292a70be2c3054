"""A TMS-like component model whose components are set by hand to the per-feature rank-1 pieces of
W."""

import torch
from torch import nn

from spd_core.model import ComponentModel


class TMSLike(nn.Module):
    """x (n_features) -> W x (hidden) -> relu(Wᵀ h + b)."""

    def __init__(self, W: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        n_hidden, n_features = W.shape
        self.linear1 = nn.Linear(n_features, n_hidden, bias=False)
        self.linear2 = nn.Linear(n_hidden, n_features, bias=True)
        with torch.no_grad():
            self.linear1.weight.copy_(W)
            self.linear2.weight.copy_(W.T)
            self.linear2.bias.copy_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear2(self.linear1(x)))


def tms_like(n_features: int = 5, n_hidden: int = 2, seed: int = 0) -> ComponentModel:
    """Component j of each layer is feature j's rank-1 piece of W (so (V U)ᵀ = W exactly); every CI
    is ~1."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.arange(n_features) * (2 * torch.pi / n_features)
    W = torch.stack([angles.cos(), angles.sin()])[:n_hidden] * (
        1.0 + 0.1 * torch.rand(n_features, generator=g)
    )
    b = torch.full((n_features,), -0.2)
    model = ComponentModel(
        TMSLike(W, b), [("linear1", n_features), ("linear2", n_features)], ci_fn_type="mlp"
    )
    eye = torch.eye(n_features)
    with torch.no_grad():
        c1, c2 = model.comp("linear1"), model.comp("linear2")
        c1.V.copy_(eye)  # read feature j
        c1.U.copy_(W.T)  # write W[:, j]
        c2.V.copy_(W)  # read along W[:, j]
        c2.U.copy_(eye)  # write output j
        for fn in model.ci_fns.values():  # CI fns output a constant 1 (every component alive)
            fn.W_out.zero_()
            fn.b_out.fill_(1.0)
    return model
