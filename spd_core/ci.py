"""Causal-importance (CI) functions and the leaky hard sigmoids that turn their outputs into CIs.

Three CI function types, one per decomposed layer:
- ``mlp``: one tiny MLP per component reading only that component's inner activation (the paper's).
- ``vector_mlp``: one MLP per component reading the layer's whole input vector.
- ``shared_mlp``: one MLP per layer mapping the input vector to all C pre-sigmoid values.
Embedding layers feed their component activations (V[token]) to every type.
"""

from dataclasses import dataclass
from typing import Literal

import einops
import torch
from torch import Tensor, nn
from torch.nn import functional as F

CIFnType = Literal["mlp", "vector_mlp", "shared_mlp"]
LEAK = 0.01


class _LowerLeakyHard(torch.autograd.Function):
    """Forward: clamp to [0, 1]. Backward: 1 inside (0, 1]; 0 above 1; below 0 only a leak α·grad
    when the incoming gradient is negative, so that a dead component can be pushed back up."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        inside = (x > 0) & (x <= 1)
        below = (x <= 0) & (grad < 0)
        return grad * inside + ctx.alpha * grad * below, None


def lower_leaky_hard_sigmoid(x: Tensor, alpha: float = LEAK) -> Tensor:
    """Clamp to [0, 1] with a leaky backward below 0 (used for masks and for the CI that is
    reported)."""
    return _LowerLeakyHard.apply(x, alpha)  # type: ignore[return-value]


def upper_leaky_hard_sigmoid(x: Tensor, alpha: float = LEAK) -> Tensor:
    """0 below 0, identity on [0, 1], 1 + α(x − 1) above 1 (used by the importance penalty)."""
    return torch.where(x > 1, 1 + alpha * (x - 1), x.clamp(min=0.0))


class _LeakyHardPair(torch.autograd.Function):
    """Both leaky hard sigmoids of one pre-activation in one function: the same values and
    gradients as ``lower_leaky_hard_sigmoid`` and ``upper_leaky_hard_sigmoid`` applied separately,
    with about half the elementwise passes over the CI tensor (training computes both at every
    step). The upper one is written as lower + α·max(x − 1, 0)."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> tuple[Tensor, Tensor]:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        lower = x.clamp(0.0, 1.0)
        return lower, torch.add(lower, (x - 1).clamp_(min=0.0), alpha=alpha)

    @staticmethod
    def backward(ctx, grad_lower: Tensor, grad_upper: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        alpha = ctx.alpha
        # x > 1: only the upper one's slope α; 0 < x ≤ 1: both slopes 1.
        above = torch.where(x > 1, alpha * grad_upper, grad_lower + grad_upper)
        # x ≤ 0: the lower one's leak (negative gradients only), and the upper one's slope 1 at
        # exactly 0 (its clamp passes the gradient at the bound, as autograd's clamp does).
        below = torch.add(
            torch.where(x < 0, 0.0, grad_upper), grad_lower.clamp(max=0.0), alpha=alpha
        )
        return torch.where(x > 0, above, below), None


class _RowScatter(torch.autograd.Function):
    """(N, C) rows from ``vals`` (n_live + 1, C): the live rows (``idx``, where ``live``) take the
    first n_live, every other row the last one. The backward gives the last row the summed
    gradient of the other rows directly (no (N, C) expansion to sum)."""

    @staticmethod
    def forward(ctx, vals: Tensor, idx: Tensor, live: Tensor) -> Tensor:  # type: ignore[override]
        out = vals[-1:].expand(live.shape[0], vals.shape[-1]).clone()
        out.index_copy_(0, idx, vals[:-1])
        ctx.save_for_backward(idx, live)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        idx, live = ctx.saved_tensors
        dead = torch.where(live.unsqueeze(-1), 0.0, grad).sum(0, keepdim=True)
        return torch.cat([grad.index_select(0, idx), dead]), None, None


class MLPCI(nn.Module):
    """Per-component scalar MLPs 1 → hidden → 1, evaluated in parallel for all C components.

    Computed component-major, (C, N, hidden), so both layers are batched matmuls over C.
    """

    def __init__(self, C: int, hidden: int) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(C, 1, hidden) * (2.0**0.5))
        self.b_in = nn.Parameter(torch.zeros(C, 1, hidden))
        self.W_out = nn.Parameter(torch.randn(C, hidden, 1) / hidden**0.5)
        self.b_out = nn.Parameter(torch.zeros(C))

    def forward(self, acts: Tensor) -> Tensor:
        lead, C = acts.shape[:-1], acts.shape[-1]
        flat = acts.reshape(-1, C)
        live = flat.abs().sum(dim=-1) != 0  # = flat.any(-1) (no cancellation), a faster kernel
        n_live = int(live.sum())
        if n_live * 4 > flat.shape[0] * 3:
            return self._mlp(flat).reshape(*lead, C)
        # Sparse inputs (toy models): rows whose inner activations are all exactly 0 share one
        # value, so the MLP runs on the live rows plus a single zero row (one call). Same outputs
        # and gradients.
        idx = live.nonzero().squeeze(-1)
        vals = self._mlp(torch.cat([flat.index_select(0, idx), flat.new_zeros(1, C)]))
        return _RowScatter.apply(vals, idx, live).reshape(*lead, C)  # type: ignore[union-attr]

    def _mlp(self, flat: Tensor) -> Tensor:
        a = flat.T.unsqueeze(-1)  # (C, N, 1)
        h = F.gelu(torch.baddbmm(self.b_in, a, self.W_in))  # (C, N, hidden)
        return torch.bmm(h, self.W_out).squeeze(-1).T + self.b_out  # (N, C)


class VectorMLPCI(nn.Module):
    """Per-component MLPs d_in → hidden → 1 reading the whole input vector."""

    def __init__(self, d_in: int, C: int, hidden: int) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.randn(C, d_in, hidden) / d_in**0.5)
        self.b_in = nn.Parameter(torch.zeros(C, hidden))
        self.W_out = nn.Parameter(torch.randn(C, hidden) / hidden**0.5)
        self.b_out = nn.Parameter(torch.zeros(C))

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(
            einops.einsum(x, self.W_in, "... d_in, C d_in hidden -> ... C hidden") + self.b_in
        )
        return einops.einsum(h, self.W_out, "... C hidden, C hidden -> ... C") + self.b_out


class SharedMLPCI(nn.Module):
    """One MLP per layer, d_in → hidden → C."""

    def __init__(self, d_in: int, C: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, C))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def make_ci_fn(fn_type: CIFnType, d_in: int, C: int, hidden: int) -> nn.Module:
    if fn_type == "mlp":
        return MLPCI(C, hidden)
    if fn_type == "vector_mlp":
        return VectorMLPCI(d_in, C, hidden)
    if fn_type == "shared_mlp":
        return SharedMLPCI(d_in, C, hidden)
    raise ValueError(f"unknown CI function type {fn_type!r}; valid: mlp, vector_mlp, shared_mlp")


@dataclass
class CausalImportance:
    """Per layer: ``lower`` (masks, reporting), ``upper`` (sparsity penalty), ``pre``
    (pre-sigmoid)."""

    lower: dict[str, Tensor]
    upper: dict[str, Tensor]
    pre: dict[str, Tensor]


def sigmoids(pre: dict[str, Tensor]) -> CausalImportance:
    """Lower and upper leaky hard sigmoids of every layer's pre-activation."""
    pairs = {k: _LeakyHardPair.apply(v, LEAK) for k, v in pre.items()}
    return CausalImportance(
        lower={k: lo for k, (lo, _) in pairs.items()},  # type: ignore[misc]
        upper={k: up for k, (_, up) in pairs.items()},  # type: ignore[misc]
        pre=pre,
    )


def active_counts(ci: dict[str, Tensor], threshold: float) -> dict[str, Tensor]:
    """Per layer, how many components have CI above ``threshold`` at each position: the L0 (shape
    of ``ci[layer]`` without its last axis)."""
    return {k: (g > threshold).sum(-1) for k, g in ci.items()}
