"""Direct logit effect of a component's write vector: U[c] read out through the unembedding.

For a layer that writes into the residual stream (the embedding, ``*.attn.o``, ``*.mlp.down``), the
direct effect is W_U · (g ⊙ U[c]), with W_U (vocab × d_model) the output embedding and g the final
norm's gain when the model has one; the norm's per-token scale and every later layer are ignored
(the direct path only, as in a logit lens). For a decomposed unembedding the effect is U[c] itself.
Layers that write elsewhere (q, k, v, up, gate) have no direct path.
"""

import re
from dataclasses import dataclass

from torch import Tensor, nn

from spd_core.errors import require
from spd_core.model import ComponentModel

_RESIDUAL_WRITERS = re.compile(r"^(embed|\d+\.attn\.o|\d+\.mlp\.down)$")
_FINAL_NORMS = (
    "model.norm",
    "transformer.ln_f",
    "model.final_layernorm",
    "gpt_neox.final_layer_norm",
)


@dataclass(frozen=True)
class Readout:
    logits: Tensor | None  # (vocab,) direct logit change per unit of inner activation, or None
    method: str  # how it was computed, or why it is not applicable


def _final_gain(target: nn.Module, d_model: int) -> Tensor | None:
    for path in _FINAL_NORMS:
        try:
            norm = target.get_submodule(path)
        except AttributeError:
            continue
        w = getattr(norm, "weight", None)
        if isinstance(w, Tensor) and w.shape == (d_model,):
            return w.detach()
    return None


def write_vector_logits(model: ComponentModel, layer: str, c: int) -> Readout:
    """The direct logit effect of ``layer:c`` per unit of its inner activation (see the module
    doc)."""
    require(
        layer in model.layers, f"unknown layer {layer!r}; valid layers: {', '.join(model.layers)}"
    )
    info = model.layers[layer]
    require(
        0 <= c < info.C,
        f"component index {c} out of range for layer {layer!r}; valid: 0..{info.C - 1}",
    )
    u = model.comp(layer).U[c].detach()
    get = getattr(model.target, "get_output_embeddings", None)
    unembed = get() if callable(get) else None
    if layer == "unembed":
        return Readout(u.float(), "the layer is the unembedding: U[c] is a logit vector")
    w_u = getattr(unembed, "weight", None)
    if not isinstance(w_u, Tensor):
        return Readout(
            None, "not applicable: the model has no output embedding (not a language model)"
        )
    w_u = w_u.detach()
    if not _RESIDUAL_WRITERS.match(layer) or w_u.shape[1] != info.d_out:
        return Readout(
            None,
            f"not applicable: {layer} does not write into the residual stream "
            f"(d_out={info.d_out}); "
            "only the embedding, attn.o and mlp.down have a direct path to the logits",
        )
    gain = _final_gain(model.target, info.d_out)
    vec = u * gain if gain is not None else u
    how = "W_U · (final-norm gain ⊙ U[c])" if gain is not None else "W_U · U[c]"
    return Readout(
        (w_u @ vec).float(),
        f"{how}: direct path only, ignoring the norm's per-token scale and later layers",
    )


def top_promoted_token(model: ComponentModel, layer: str, c: int) -> int | None:
    """The token id whose logit ``layer:c``'s write vector raises most (direct path), or None where
    the layer has no direct path to the logits."""
    r = write_vector_logits(model, layer, c)
    return None if r.logits is None else int(r.logits.argmax())
