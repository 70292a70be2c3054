"""Edits: overlays reproduce the target when empty, removal equals ablation (Linear, Conv1D,
Embedding), exports load with transformers, fine-tuning changes only the chosen vectors and respects
the KL bound."""

import pytest
import torch
import transformers

from spd_core.analysis.ablation import ablate
from spd_core.analysis.ci import compute_ci
from spd_core.analysis.editing import Objective, export_edit, finetune_edit, remove_edit, scale_edit
from spd_core.analysis.overlay import Edit, applied
from spd_core.errors import InvalidInput
from spd_core.keys import ComponentKey
from spd_core.model import ComponentModel
from tests.core.analysis.tiny_models import tiny_gpt2, tiny_llama


def _state(model: ComponentModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_empty_edit_and_ones_masks_reproduce_target(
    llama: ComponentModel, tokens: torch.Tensor
) -> None:
    with torch.no_grad():
        target = llama.target_output(tokens)
        with applied(llama, Edit("empty")):
            empty = llama.target_output(tokens)
        ci = llama.causal_importance(llama(tokens, cache_inputs=True).inputs).lower
        masks = {k: torch.ones_like(v) for k, v in ci.items()}
        delta = {k: torch.ones_like(v[..., 0]) for k, v in ci.items()}
        ones = llama(tokens, masks=masks, delta_masks=delta).output
    assert torch.equal(empty, target)
    assert (ones - target).abs().max() <= 1e-5


def _removal_matches_ablation(
    model: ComponentModel, x: torch.Tensor, keys: list[ComponentKey]
) -> None:
    before = _state(model)
    with torch.no_grad():
        with applied(model, remove_edit(model, keys)):
            removed = model.target_output(x)
        ci = model.causal_importance(model(x, cache_inputs=True).inputs).lower
        masks = {k: torch.ones_like(v) for k, v in ci.items()}
        for key in keys:
            masks[key.layer][..., key.c] = 0.0
        delta = {k: torch.ones_like(v[..., 0]) for k, v in ci.items()}
        ablated = model(x, masks=masks, delta_masks=delta).output
        target = model.target_output(x)
    assert (removed - ablated).abs().max() <= 1e-5
    assert (removed - target).abs().max() > 1e-3, "removing a component should change the output"
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before), (
        "an edit must not change the loaded model"
    )
    # the ablation route reports the same distribution
    res = ablate(model, x, components=keys, mode="remove", regime="deterministic", k=3)
    probs = removed[0, -1].softmax(-1)
    assert res.after_top[0][1] == pytest.approx(float(probs.max()), abs=1e-5)


def test_remove_equals_ablation_linear(llama: ComponentModel, tokens: torch.Tensor) -> None:
    _removal_matches_ablation(
        llama, tokens, [ComponentKey("0.mlp.down", 2), ComponentKey("1.attn.v", 5)]
    )


def test_remove_equals_ablation_conv1d_and_embedding() -> None:
    model = tiny_gpt2()
    x = torch.randint(0, 40, (1, 6), generator=torch.Generator().manual_seed(2))
    _removal_matches_ablation(
        model, x, [ComponentKey("0.attn.qkv", 1), ComponentKey("0.mlp.up", 3)]
    )
    _removal_matches_ablation(model, x, [ComponentKey("embed", 4)])


def test_remove_equals_ablation_untied_embedding() -> None:
    model = tiny_llama(embed=True)
    x = torch.randint(0, 48, (1, 6), generator=torch.Generator().manual_seed(2))
    _removal_matches_ablation(model, x, [ComponentKey("embed", 0), ComponentKey("embed", 5)])


def test_scale_edit_keeps_ci_and_applies_to_analyses(
    llama: ComponentModel, tokens: torch.Tensor
) -> None:
    edit = scale_edit(llama, {ComponentKey("1.mlp.up", 1): 3.0})
    plain, edited = compute_ci(llama, tokens), compute_ci(llama, tokens, edit=edit)
    for layer in ("0.attn.q", "1.mlp.up"):  # upstream of / at the edit: reads unchanged
        assert torch.allclose(plain.ci[layer], edited.ci[layer])
    assert (plain.output - edited.output).abs().max() > 1e-4


def test_export_loads_with_transformers(
    tmp_path, llama: ComponentModel, tokens: torch.Tensor
) -> None:
    edit = remove_edit(llama, [ComponentKey("0.mlp.up", 4), ComponentKey("1.attn.o", 2)])
    out = export_edit(llama, edit, tmp_path / "edited")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad(), applied(llama, edit):
        expected = llama.target_output(tokens)
    got = loaded(tokens, use_cache=False).logits
    assert (got - expected).abs().max() <= 1e-5


def test_export_conv1d_tied_embedding(tmp_path) -> None:
    """With tied embeddings an embedding edit also changes the unembedding, in the overlay as in the
    export."""
    model = tiny_gpt2(tied=True)
    x = torch.randint(0, 40, (1, 5), generator=torch.Generator().manual_seed(4))
    edit = remove_edit(model, [ComponentKey("embed", 2), ComponentKey("0.mlp.down", 1)])
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        export_edit(model, edit, tmp_path / "g")
    ).eval()
    with torch.no_grad(), applied(model, edit):
        expected = model.target_output(x)
    assert (loaded(x, use_cache=False).logits - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("train", ["U", "V", "both"])
def test_finetune_suppresses_within_kl_bound(train: str) -> None:
    model = tiny_llama(seed=1)
    gen = torch.Generator().manual_seed(5)
    prompts = [torch.randint(0, 48, (1, 6), generator=gen) for _ in range(3)]
    preserve = [torch.randint(0, 48, (1, 8), generator=gen) for _ in range(3)]
    heldout = [torch.randint(0, 48, (1, 8), generator=gen) for _ in range(2)]
    with torch.no_grad():
        token = int(model.target_output(prompts[0])[0, -1].argmax())
    keys = [
        ComponentKey("1.mlp.down", 0),
        ComponentKey("1.mlp.down", 3),
        ComponentKey("1.attn.o", 1),
    ]
    before = _state(model)
    res = finetune_edit(
        model,
        keys,
        Objective(prompts, token, "suppress"),
        preserve,
        heldout,
        train=train,
        steps=25,
        lr=0.05,
        kl_bound=0.05,
    )
    assert res.token_prob_after < 0.8 * res.token_prob_before
    assert res.kl_preserve <= 0.05 + 1e-6
    assert res.kl_heldout is not None and res.kl_heldout >= 0
    assert all(torch.equal(before[k], v) for k, v in _state(model).items())
    chosen = {k.layer: {kk.c for kk in keys if kk.layer == k.layer} for k in keys}
    for layer, d in res.edit.dU.items():
        changed = set(d.abs().sum(1).nonzero()[:, 0].tolist())
        assert changed and changed <= chosen[layer], (layer, changed)
    for layer, d in res.edit.dV.items():
        changed = set(d.abs().sum(0).nonzero()[:, 0].tolist())
        assert changed and changed <= chosen[layer], (layer, changed)
    assert (train == "V") == (not res.edit.dU) and (train == "U") == (not res.edit.dV)
    assert all(v > 0 for v in res.norms.weight_change.values())


def test_edit_rejects_wrong_shapes(llama: ComponentModel, tokens: torch.Tensor) -> None:
    bad = Edit("bad", dU={"0.mlp.up": torch.zeros(3, 3)})
    with pytest.raises(InvalidInput, match="valid"):
        compute_ci(llama, tokens, edit=bad)
    with pytest.raises(InvalidInput, match="valid layers"):
        scale_edit(llama, {ComponentKey("nope", 0): 2.0})
