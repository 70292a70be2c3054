"""The CI functions' fast routes against plain ones: both leaky hard sigmoids from one function
equal the two separate ones (values and gradients, the bounds included); the MLP CI's sparse-row
route equals the MLP run on every row."""

import pytest
import torch
from torch.nn import functional as F

from spd_core.ci import MLPCI, lower_leaky_hard_sigmoid, sigmoids, upper_leaky_hard_sigmoid


def test_leaky_hard_pair_equals_the_separate_sigmoids_in_value_and_gradient() -> None:
    torch.manual_seed(0)
    bounds = torch.tensor([0.0, -0.0, 1.0, -1.0, 2.0, 0.5, 1e-9, 1 + 1e-6, -1e-9])
    pre = torch.cat([torch.randn(3995) * 1.5, bounds]).reshape(-1, 13)
    grad_lower, grad_upper = torch.randn_like(pre), torch.randn_like(pre)
    fused_in, plain_in = pre.clone().requires_grad_(), pre.clone().requires_grad_()
    ci = sigmoids({"a": fused_in})
    lower, upper = lower_leaky_hard_sigmoid(plain_in), upper_leaky_hard_sigmoid(plain_in)
    assert torch.equal(ci.lower["a"], lower)
    torch.testing.assert_close(ci.upper["a"], upper, rtol=0, atol=2e-7)
    (ci.lower["a"] * grad_lower + ci.upper["a"] * grad_upper).sum().backward()
    (lower * grad_lower + upper * grad_upper).sum().backward()
    assert fused_in.grad is not None and plain_in.grad is not None
    assert torch.equal(fused_in.grad, plain_in.grad)


def _dense(ci_fn: MLPCI, acts: torch.Tensor) -> torch.Tensor:
    """The MLP on every row, written out (the second route)."""
    h = F.gelu(torch.baddbmm(ci_fn.b_in, acts.T.unsqueeze(-1), ci_fn.W_in))
    return torch.bmm(h, ci_fn.W_out).squeeze(-1).T + ci_fn.b_out


@pytest.mark.parametrize("dead_frac", [0.0, 0.4, 1.0])
def test_mlp_ci_sparse_rows_equal_the_mlp_on_every_row(dead_frac: float) -> None:
    """Outputs on every row, gradients of every parameter and of the live rows' activations (a
    dead row's activations are exactly 0 and stay a constant of the sparse route)."""
    torch.manual_seed(1)
    ci_fn = MLPCI(C=6, hidden=5)
    with torch.no_grad():
        ci_fn.b_in.normal_()
        ci_fn.b_out.normal_()
    acts = torch.randn(300, 6)
    dead = torch.rand(300) < dead_frac
    acts[dead] = 0
    weight = torch.randn(300, 6)
    routes = []
    for fn in (ci_fn, lambda a: _dense(ci_fn, a)):
        ci_fn.zero_grad(set_to_none=True)
        a = acts.clone().requires_grad_()
        out = fn(a)
        (out * weight).sum().backward()
        assert a.grad is not None
        routes.append((out.detach(), a.grad[~dead], [p.grad for p in ci_fn.parameters()]))
    (out_s, ga_s, gp_s), (out_d, ga_d, gp_d) = routes
    torch.testing.assert_close(out_s, out_d)
    torch.testing.assert_close(ga_s, ga_d)
    for s, d in zip(gp_s, gp_d, strict=True):  # the dead rows' sum comes in another order
        torch.testing.assert_close(s, d, rtol=2e-5, atol=1e-4)


def test_mlp_ci_sparse_rows_under_bf16_autocast_stay_within_bf16_of_fp32() -> None:
    torch.manual_seed(2)
    ci_fn = MLPCI(C=20, hidden=16)
    acts = torch.randn(512, 20)
    acts[torch.rand(512) < 0.5] = 0
    weight = torch.randn(512, 20)
    grads = []
    for bf16 in (False, True):
        ci_fn.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = ci_fn(acts.bfloat16() if bf16 else acts)
        (out.float() * weight).sum().backward()
        grads.append([out.detach().float()] + [p.grad for p in ci_fn.parameters()])
    for lo, hi in zip(grads[1], grads[0], strict=True):
        assert lo is not None and hi is not None
        assert float((lo - hi).norm() / hi.norm()) < 2e-2
