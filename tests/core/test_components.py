"""All-ones masks with the weight delta reproduce the target exactly; component weights add up."""

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.pytorch_utils import Conv1D

from spd_core.components import make_components
from spd_core.errors import InvalidInput
from spd_core.masks import ones_masks
from spd_core.model import ComponentModel, match_modules

ATOL = 1e-5


@pytest.mark.parametrize("kind", ["linear", "conv1d", "embedding"])
def test_all_ones_mask_with_delta_reproduces_module(kind: str) -> None:
    if kind == "linear":
        module, x = nn.Linear(7, 5), torch.randn(3, 4, 7)
    elif kind == "conv1d":
        module, x = Conv1D(5, 7), torch.randn(3, 4, 7)
        nn.init.normal_(module.weight)
        nn.init.normal_(module.bias)
    else:
        module, x = nn.Embedding(11, 5), torch.randint(0, 11, (3, 4))
    comp = make_components(module, C=3)
    with torch.no_grad():
        expected = module(x)
        ones = torch.ones(*x.shape[: 2 if kind == "embedding" else 2], 3)
        got = comp(x, ones, torch.ones(ones.shape[:-1]))
        without_delta = comp(x, ones)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=1e-5)
    assert (without_delta - expected).abs().max() > 1e-3, (
        "untrained components alone should not match"
    )


def test_component_weights_sum_to_weight_and_delta_closes_the_gap() -> None:
    comp = make_components(nn.Linear(6, 4), C=5)
    total = sum(comp.component_weight(c) for c in range(5))
    torch.testing.assert_close(total, comp.weight())
    torch.testing.assert_close(comp.weight() + comp.weight_delta(), comp.target_weight)


@pytest.mark.parametrize(
    ("d_in", "d_out", "mask_shape"), [(3, 2, (5,)), (2, 7, (5,)), (3, 2, (4, 5)), (2, 7, (4, 5))]
)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_grad", [True, False])
def test_masked_forward_equals_hand_computation(
    d_in: int, d_out: int, mask_shape: tuple[int, ...], bias: bool, x_grad: bool
) -> None:
    """The fused product (the delta's mask applied on the narrower side; for a narrow input one
    product [a ⊙ (m − d), d·x]·[U; Wᵀ]) against the formula with Δ formed explicitly, in values
    and in gradients (V, U, the mask and x where x needs one); also with masks that broadcast over
    more positions than x has."""
    comp = make_components(nn.Linear(d_in, d_out, bias=bias), C=4)
    x = torch.randn(5, d_in, requires_grad=x_grad)
    mask = torch.rand(*mask_shape, 4, requires_grad=True)
    dm = torch.rand(*mask_shape)
    wrt = [comp.V, comp.U, mask] + ([x] if x_grad else [])

    def grads(out: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.autograd.grad((out * torch.linspace(-1, 2, d_out)).pow(2).sum(), wrt))

    bias_term = 0.0 if comp.bias is None else comp.bias
    expected = (
        ((x @ comp.V) * mask) @ comp.U + dm[..., None] * (x @ comp.weight_delta().T) + bias_term
    )
    got = comp(x, mask, dm)
    torch.testing.assert_close(got, expected)
    for g, e in zip(grads(got), grads(expected), strict=True):
        torch.testing.assert_close(g, e)


@pytest.mark.parametrize(("d_in", "d_out"), [(30, 5), (5, 30)])
def test_masked_forward_under_bf16_autocast_stays_within_bf16_of_fp32(
    d_in: int, d_out: int
) -> None:
    """Under autocast the masks are cast to bf16 before they multiply the inner activations; the
    output and gradients stay within bf16 rounding of the fp32 computation."""
    torch.manual_seed(0)
    comp = make_components(nn.Linear(d_in, d_out), C=8)
    x = torch.randn(64, d_in, requires_grad=True)
    mask, dm = torch.rand(64, 8, requires_grad=True), torch.rand(64)
    routes = []
    for bf16 in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = comp(x, mask, dm)
        grads = torch.autograd.grad(out.float().pow(2).sum(), [comp.V, comp.U, mask, x])
        routes.append([out.detach().float(), *grads])
    for lo, hi in zip(routes[1], routes[0], strict=True):
        assert lo.dtype == hi.dtype == torch.float32
        rel = float((lo - hi).norm() / hi.norm())
        assert rel < 2e-2, rel


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("d_in", "d_out"), [(6, 3), (3, 6)])
def test_target_output_route_equals_the_computed_delta_product(
    d_in: int, d_out: int, bias: bool
) -> None:
    """Passing the target layer's own output (x·Wᵀ + b) for the delta path gives the same values
    and gradients as computing it."""
    module = nn.Linear(d_in, d_out, bias=bias)
    comp = make_components(module, C=4)
    x, mask, dm = torch.randn(7, d_in), torch.rand(7, 4, requires_grad=True), torch.rand(7)
    with torch.no_grad():
        target_out = module(x)
    computed, reused = comp(x, mask, dm), comp(x, mask, dm, target_out=target_out)
    torch.testing.assert_close(reused, computed)
    for a, b in zip(
        torch.autograd.grad(computed.pow(2).sum(), [comp.V, comp.U, mask]),
        torch.autograd.grad(reused.pow(2).sum(), [comp.V, comp.U, mask]),
        strict=True,
    ):
        torch.testing.assert_close(a, b)


def _tiny_llama() -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=23,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(cfg).eval()


def _tiny_gpt2() -> GPT2LMHeadModel:
    cfg = GPT2Config(vocab_size=19, n_embd=16, n_layer=2, n_head=2, n_positions=32)
    return GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize(
    ("make", "patterns", "layers"),
    [
        (
            _tiny_llama,
            [
                ("model.embed_tokens", 8),
                ("model.layers.*.self_attn.*_proj", 4),
                ("model.layers.*.mlp.*_proj", 6),
            ],
            {"embed", "0.attn.q", "1.mlp.down"},
        ),
        (
            _tiny_gpt2,
            [
                ("transformer.wte", 8),
                ("transformer.h.*.attn.c_*", 4),
                ("transformer.h.*.mlp.c_*", 6),
            ],
            {"embed", "0.attn.qkv", "1.attn.o", "1.mlp.up"},
        ),
    ],
)
def test_component_model_all_ones_reproduces_language_model(make, patterns, layers) -> None:
    lm = make()
    model = ComponentModel(lm, patterns, output_attr="logits", target_kwargs={"use_cache": False})
    assert layers <= set(model.layers)
    ids = torch.randint(0, lm.config.vocab_size, (2, 9))
    with torch.no_grad():
        target = model(ids, cache_inputs=True)
        ci = model.causal_importance(target.inputs).lower
        masks, delta = ones_masks(ci)
        got = model(ids, masks=masks, delta_masks=delta).output
        no_delta = model(ids, masks=masks).output
    torch.testing.assert_close(got, target.output, atol=ATOL, rtol=1e-5)
    assert (no_delta - target.output).abs().max() > 1e-3
    assert set(target.inputs) == set(model.layers)
    assert all(ci[k].shape == (2, 9, model.layers[k].C) for k in model.layers)


def test_pattern_matching_no_module_lists_candidates() -> None:
    with pytest.raises(
        ValueError,
        match=r"matches no decomposable module; candidates: .*model\.layers\.0\.mlp\.up_proj",
    ):
        match_modules(_tiny_llama(), [("model.layers.*.nonexistent", 4)])


def test_unsupported_module_is_an_error_naming_supported_ones() -> None:
    with pytest.raises(TypeError, match="supported: nn.Linear, nn.Embedding, transformers Conv1D"):
        make_components(nn.Conv2d(2, 2, 3), C=2)


def test_target_untouched_after_masked_forward() -> None:
    lm = _tiny_llama()
    model = ComponentModel(
        lm,
        [("model.layers.*.mlp.*_proj", 4)],
        output_attr="logits",
        target_kwargs={"use_cache": False},
    )
    ids = torch.randint(0, 23, (1, 5))
    with torch.no_grad():
        before = lm(ids).logits
        zeros = {k: torch.zeros(1, 5, 4) for k in model.layers}
        changed = model(ids, masks=zeros).output
        after = lm(ids).logits
    torch.testing.assert_close(before, after)
    assert (changed - before).abs().max() > 1e-4


def test_tied_layer_shares_transposed_components_and_stays_exact() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear1 = nn.Linear(5, 2, bias=False)
            self.linear2 = nn.Linear(2, 5)
            with torch.no_grad():
                self.linear2.weight.copy_(self.linear1.weight.T)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.linear2(self.linear1(x)))

    model = ComponentModel(Tied(), [("linear*", 3)], tied={"linear2": "linear1"})
    a, b = model.comp("linear1"), model.comp("linear2")
    assert torch.equal(b.V, a.U.T) and torch.equal(b.U, a.V.T) and b.tied_to == "linear1"
    assert not any(k.startswith("components.linear2") for k in model.trainable_state())
    x = torch.rand(4, 5)
    with torch.no_grad():
        tgt = model(x, cache_inputs=True)
        masks, delta = ones_masks(model.causal_importance(tgt.inputs).lower)
        torch.testing.assert_close(model(x, masks=masks, delta_masks=delta).output, tgt.output)
    with pytest.raises(InvalidInput, match="both must be decomposed layers"):
        ComponentModel(Tied(), [("linear1", 3)], tied={"linear2": "linear1"})
