"""Rank-1 component layers for Linear, transformers Conv1D and Embedding targets.

A decomposed weight W (d_out × d_in) is C rank-1 components: W ≈ (V U)ᵀ with V (d_in × C) the read
vectors and U (C × d_out) the write vectors. The inner activation is a = x·V; the output is
(a ⊙ mask)·U + bias, plus the weight delta Δ = W − (V U)ᵀ applied to x and scaled by its own mask.
With an all-ones mask and delta mask 1 the output equals the target's exactly.
"""

import math
from typing import Literal

import einops
import torch
from torch import Tensor, nn

from spd_core.errors import require

ComponentKind = Literal["linear", "conv1d", "embedding"]


class Components(nn.Module):
    """C rank-1 components of one frozen weight; subclasses say how the input is read."""

    kind: ComponentKind
    tied_to: str | None = None

    def __init__(self, weight: Tensor, bias: Tensor | None, C: int) -> None:
        """``weight`` is the target weight in Linear orientation (d_out × d_in), detached and
        frozen."""
        super().__init__()
        require(
            weight.ndim == 2, f"weight must be 2-D (d_out × d_in), got shape {tuple(weight.shape)}"
        )
        require(C >= 1, f"C must be ≥ 1, got {C}")
        d_out, d_in = weight.shape
        self.C, self.d_in, self.d_out = C, d_in, d_out
        self.register_buffer("target_weight", weight.detach().clone(), persistent=False)
        self.register_buffer(
            "bias", None if bias is None else bias.detach().clone(), persistent=False
        )
        self.V = nn.Parameter(torch.empty(d_in, C, dtype=weight.dtype, device=weight.device))
        self.U = nn.Parameter(torch.empty(C, d_out, dtype=weight.dtype, device=weight.device))
        nn.init.normal_(self.V, std=1.0 / math.sqrt(d_in))
        nn.init.normal_(self.U, std=1.0 / math.sqrt(C))

    target_weight: Tensor
    bias: Tensor | None

    def weight(self) -> Tensor:
        """The summed component weight (V U)ᵀ, shape (d_out, d_in)."""
        return einops.einsum(self.V, self.U, "d_in C, C d_out -> d_out d_in")

    def weight_delta(self) -> Tensor:
        """Δ = W − (V U)ᵀ, shape (d_out, d_in); differentiable in V and U."""
        return self.target_weight - self.weight()

    def component_weight(self, c: int) -> Tensor:
        """The rank-1 weight of component c, shape (d_out, d_in)."""
        return torch.outer(self.U[c], self.V[:, c])

    def inner_acts(self, x: Tensor) -> Tensor:
        """a = x·V, shape (..., C)."""
        return x @ self.V

    def target_forward(self, x: Tensor) -> Tensor:
        """The frozen target layer's own output."""
        out = einops.einsum(x, self.target_weight, "... d_in, d_out d_in -> ... d_out")
        return out if self.bias is None else out + self.bias

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        delta_mask: Tensor | None = None,
        acts: Tensor | None = None,
        target_out: Tensor | None = None,
    ) -> Tensor:
        """Masked component output. ``mask`` (..., C) defaults to ones; ``delta_mask`` (...) to no
        delta.

        ``acts`` may pass precomputed inner activations (x·V) to avoid computing them twice, and
        ``target_out`` the target layer's own output on this x (x·Wᵀ + b), used by the delta path
        where it saves a product.
        """
        a = self.inner_acts(x) if acts is None else acts
        return self._masked_out(x, a, mask, delta_mask, target_out)

    def _masked_out(
        self,
        x: Tensor,
        a: Tensor,
        mask: Tensor | None,
        delta_mask: Tensor | None,
        target_out: Tensor | None = None,
    ) -> Tensor:
        """(a ⊙ m)·U + d·(x·Δᵀ) + b, computed as (a ⊙ (m − d))·U + d·(x·Wᵀ) + b: the same function
        of V and U without forming Δ or its weight gradient. The sum is one fused matmul-add, with
        the bias inside the products, in their dtype (bf16 under autocast, as in the target's own
        layer); where the input is the narrower side of W it is a single product,
        [a ⊙ (m − d), d·x]·[U; Wᵀ] + b. Masks are cast to the dtype of a (the autocast dtype) before
        they multiply it, so that the masked activations are not promoted to fp32 and cast back."""
        if delta_mask is None:
            return _matmul_add(a if mask is None else a * _like(mask, a), self.U, self.bias)
        d = delta_mask.unsqueeze(-1)
        masked = a * _like((mask if mask is not None else 1.0) - d, a)
        if self.d_in < self.d_out and self.kind != "embedding":
            scaled_x = x * _like(d, x)
            if scaled_x.shape[:-1] == masked.shape[:-1]:
                return _NarrowProduct.apply(
                    masked, scaled_x.to(masked.dtype), self.U, self.target_weight.T, self.bias
                )  # type: ignore[no-any-return]
        return _matmul_add(masked, self.U, self._scaled_frozen_out(x, d, target_out))

    def _scaled_frozen_out(self, x: Tensor, d: Tensor, target_out: Tensor | None = None) -> Tensor:
        """d·(x·Wᵀ) + b with the frozen target weight, scaling x instead of the output when the
        input is the narrower side (a per-position scalar commutes with the product); x·Wᵀ is
        taken from ``target_out`` (the target layer's output on x) when given."""
        if self.d_in < self.d_out and target_out is None:
            return _matmul_add(x * _like(d, x), self.target_weight.T, self.bias)
        if target_out is None:
            prod = x @ self.target_weight.T
        else:
            prod = target_out if self.bias is None else target_out - self.bias
        d = d.to(prod.dtype)
        return d * prod if self.bias is None else torch.addcmul(self.bias.to(prod.dtype), d, prod)


class _NarrowProduct(torch.autograd.Function):
    """[m, s]·[U; F] + b as one product (m: masked inner activations, s: the scaled input, F the
    frozen transposed target weight): one pass over the wide output instead of a product, a second
    product and their sum. The backward forms only the gradients needed: none for F or b, and for
    s only where s needs one."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx, masked: Tensor, scaled_x: Tensor, U: Tensor, frozen: Tensor, bias: Tensor | None
    ) -> Tensor:
        dtype = masked.dtype
        weight = torch.cat([U.to(dtype), frozen.to(dtype)])
        lhs = torch.cat([masked, scaled_x], dim=-1)
        ctx.save_for_backward(masked, weight)
        ctx.U_dtype = U.dtype
        return _matmul_add(lhs, weight, None if bias is None else bias.to(dtype))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        masked, weight = ctx.saved_tensors
        C = masked.shape[-1]
        rows = grad.reshape(-1, grad.shape[-1])
        grad_masked = grad_x = grad_U = None
        if ctx.needs_input_grad[0] and ctx.needs_input_grad[1]:
            grad_lhs = (rows @ weight.T).view(*grad.shape[:-1], -1)
            grad_masked, grad_x = grad_lhs[..., :C], grad_lhs[..., C:]
        elif ctx.needs_input_grad[0]:
            grad_masked = (rows @ weight[:C].T).view(*grad.shape[:-1], C)
        elif ctx.needs_input_grad[1]:
            grad_x = (rows @ weight[C:].T).view(*grad.shape[:-1], -1)
        if ctx.needs_input_grad[2]:
            grad_U = (masked.reshape(-1, C).T @ rows).to(ctx.U_dtype)
        return grad_masked, grad_x, grad_U, None, None


def _like(mask: Tensor, a: Tensor) -> Tensor:
    """``mask`` in the dtype of ``a`` where ``a`` is in a lower-precision float dtype (the autocast
    dtype), else ``mask`` itself: a · mask then stays in that dtype for the product it feeds."""
    if a.is_floating_point() and a.dtype != mask.dtype and a.element_size() < mask.element_size():
        return mask.to(a.dtype)
    return mask


def _matmul_add(a: Tensor, b: Tensor, base: Tensor | None) -> Tensor:
    """base + a·b, one fused product when ``base`` is a bias or has a's rows (else a plain sum)."""
    if base is None:
        return a @ b
    if base.ndim == 1:
        return torch.addmm(base, a.reshape(-1, a.shape[-1]), b).view(*a.shape[:-1], b.shape[-1])
    if base.shape[:-1] != a.shape[:-1]:  # masks broadcast over more positions than x has
        return a @ b + base
    return torch.addmm(base.reshape(-1, base.shape[-1]), a.reshape(-1, a.shape[-1]), b).view(
        base.shape
    )


class LinearComponents(Components):
    kind: ComponentKind = "linear"

    @classmethod
    def from_module(cls, module: nn.Linear, C: int) -> "LinearComponents":
        return cls(module.weight, module.bias, C)


class Conv1DComponents(Components):
    """transformers' Conv1D stores its weight as (d_in × d_out); components use Linear
    orientation."""

    kind: ComponentKind = "conv1d"

    @classmethod
    def from_module(cls, module: nn.Module, C: int) -> "Conv1DComponents":
        weight = module.weight
        assert isinstance(weight, Tensor)
        return cls(weight.T, getattr(module, "bias", None), C)


class EmbeddingComponents(Components):
    """Embedding W (vocab × d_embed) as components: V (vocab × C) indexed by token id, U (C ×
    d_embed).

    In Linear orientation the weight is Wᵀ (d_embed × vocab) with a one-hot input; the one-hot
    product is done by indexing.
    """

    kind: ComponentKind = "embedding"

    def __init__(self, weight: Tensor, C: int, padding_idx: int | None = None) -> None:
        super().__init__(weight.T, None, C)
        self.padding_idx = padding_idx

    @classmethod
    def from_module(cls, module: nn.Embedding, C: int) -> "EmbeddingComponents":
        return cls(module.weight, C, module.padding_idx)

    def inner_acts(self, x: Tensor) -> Tensor:
        require(
            not x.is_floating_point(), f"embedding components take token ids, got dtype {x.dtype}"
        )
        return self.V[x]

    def target_forward(self, x: Tensor) -> Tensor:
        return self.target_weight.T[x]

    def _scaled_frozen_out(self, x: Tensor, d: Tensor, target_out: Tensor | None = None) -> Tensor:
        rows = self.target_weight.T[x]
        return d.to(rows.dtype) * rows


def is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def make_components(module: nn.Module, C: int) -> Components:
    """Components for a supported module; anything else is an error naming what is supported."""
    if isinstance(module, nn.Linear):
        return LinearComponents.from_module(module, C)
    if isinstance(module, nn.Embedding):
        return EmbeddingComponents.from_module(module, C)
    if is_conv1d(module):
        return Conv1DComponents.from_module(module, C)
    raise TypeError(
        f"cannot decompose a {type(module).__name__}; supported: nn.Linear, nn.Embedding, "
        "transformers Conv1D"
    )


class TransposedComponents(Components):
    """Components tied to another layer's, transposed: V = source.Uᵀ and U = source.Vᵀ.

    For targets whose weights are tied the same way (TMS: W2 = W1ᵀ); the source owns the parameters.
    """

    def __init__(
        self, source: Components, weight: Tensor, bias: Tensor | None, source_layer: str
    ) -> None:
        nn.Module.__init__(self)
        require(
            weight.shape == (source.d_in, source.d_out),
            f"a layer tied to {source_layer!r} needs weight shape {(source.d_in, source.d_out)}, "
            f"got {tuple(weight.shape)}",
        )
        self.C, self.d_in, self.d_out = source.C, source.d_out, source.d_in
        self.kind = source.kind
        self.tied_to = source_layer
        object.__setattr__(
            self, "_source", source
        )  # not a submodule: its parameters live in one place
        self.register_buffer("target_weight", weight.detach().clone(), persistent=False)
        self.register_buffer(
            "bias", None if bias is None else bias.detach().clone(), persistent=False
        )

    @property
    def V(self) -> Tensor:  # type: ignore[override]
        return self._source.U.T  # type: ignore[union-attr]

    @property
    def U(self) -> Tensor:  # type: ignore[override]
        return self._source.V.T  # type: ignore[union-attr]
