"""A plain-PyTorch forward for saved Llama checkpoints, so serving a demo run needs no
``transformers``.

Importing transformers' Llama pulls in torch._dynamo, torch.distributed.tensor and sympy (~3 s of a
~5 s server start). ``NativeLlama`` holds the same module tree and parameter names as
``LlamaForCausalLM`` (``model.layers.0.self_attn.q_proj`` ...), so module patterns, component
weights and ``save_pretrained`` directories are interchangeable;
``tests/core/targets/test_llama_native.py`` checks its logits against transformers' on the demo
target. Only the plain architecture is covered (default RoPE, no biases, untied or tied embeddings);
``supports`` says whether a config fits.
"""

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn import functional as F

from spd_core.errors import require

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def supports(config: dict[str, Any]) -> tuple[bool, str]:
    """Whether ``NativeLlama`` reproduces this config exactly; else the reason."""
    checks = {
        "model_type is llama": config.get("model_type") == "llama",
        "hidden_act is silu": config.get("hidden_act", "silu") == "silu",
        "no attention bias": not config.get("attention_bias", False),
        "no MLP bias": not config.get("mlp_bias", False),
        "default RoPE": (config.get("rope_parameters") or {}).get("rope_type", "default")
        == "default"
        and not config.get("rope_scaling"),
        "pretraining_tp 1": config.get("pretraining_tp", 1) == 1,
    }
    failed = [k for k, ok in checks.items() if not ok]
    return (not failed, "; ".join(failed))


def _rope_theta(config: dict[str, Any]) -> float:
    return float(
        (config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta", 10000.0))
    )


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, d: int, n_heads: int, n_kv: int, head_dim: int) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = n_heads, n_kv, head_dim
        self.q_proj = nn.Linear(d, n_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(d, n_kv * head_dim, bias=False)
        self.v_proj = nn.Linear(d, n_kv * head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * head_dim, d, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        if self.n_kv != self.n_heads:
            rep = self.n_heads // self.n_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))


class MLP(nn.Module):
    def __init__(self, d: int, d_mlp: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d, d_mlp, bias=False)
        self.up_proj = nn.Linear(d, d_mlp, bias=False)
        self.down_proj = nn.Linear(d_mlp, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(
        self, d: int, d_mlp: int, n_heads: int, n_kv: int, head_dim: int, eps: float
    ) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(d, eps)
        self.self_attn = Attention(d, n_heads, n_kv, head_dim)
        self.post_attention_layernorm = RMSNorm(d, eps)
        self.mlp = MLP(d, d_mlp)

    def forward(self, h: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        h = h + self.self_attn(self.input_layernorm(h), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class Decoder(nn.Module):
    def __init__(self, c: dict[str, Any]) -> None:
        super().__init__()
        d, heads = int(c["hidden_size"]), int(c["num_attention_heads"])
        head_dim = int(c.get("head_dim") or d // heads)
        kv = int(c.get("num_key_value_heads") or heads)
        eps = float(c.get("rms_norm_eps", 1e-6))
        self.embed_tokens = nn.Embedding(int(c["vocab_size"]), d)
        self.layers = nn.ModuleList(
            Block(d, int(c["intermediate_size"]), heads, kv, head_dim, eps)
            for _ in range(int(c["num_hidden_layers"]))
        )
        self.norm = RMSNorm(d, eps)
        inv_freq = 1.0 / (
            _rope_theta(c) ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim)
        )
        self.inv_freq: Tensor
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed_tokens(ids)
        freqs = (
            torch.arange(ids.shape[1], dtype=torch.float, device=ids.device)[:, None]
            * self.inv_freq
        )
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(h.dtype), emb.sin().to(h.dtype)
        for block in self.layers:
            h = block(h, cos, sin)
        return self.norm(h)


class NativeLlama(nn.Module):
    """``LlamaForCausalLM``'s forward (logits only, causal, no cache) with the same parameter
    names."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        ok, why = supports(config)
        require(
            ok, f"NativeLlama does not cover this config ({why}); load it with transformers instead"
        )
        self.config_dict = dict(config)
        self.config = SimpleNamespace(**config)
        self.model = Decoder(config)
        self.lm_head = nn.Linear(int(config["hidden_size"]), int(config["vocab_size"]), bias=False)
        if config.get("tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None, **_: Any
    ) -> SimpleNamespace:
        # Causal attention already hides right padding from every real position, so a right-padding
        # mask changes only the (unused) outputs at pad positions; any other mask is refused.
        assert attention_mask is None or bool(
            (attention_mask[:, 1:] <= attention_mask[:, :-1]).all()
        ), "NativeLlama supports only right padding (each mask row: ones, then zeros)"
        return SimpleNamespace(logits=self.lm_head(self.model(input_ids)))

    @property
    def architecture(self) -> str:
        """What the checkpoint is, for reports: e.g. ``LlamaForCausalLM (NativeLlama forward)``."""
        return (
            f"{(self.config_dict.get('architectures') or ['LlamaForCausalLM'])[0]}"
            " (NativeLlama forward)"
        )

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def save_pretrained(self, out: str | Path) -> None:
        """A directory that ``transformers.AutoModelForCausalLM.from_pretrained`` loads."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        if self.config_dict.get("tie_word_embeddings", False):
            state.pop("lm_head.weight", None)
        save_file(state, str(out / WEIGHTS), metadata={"format": "pt"})
        (out / CONFIG).write_text(json.dumps(self.config_dict, indent=2, sort_keys=True) + "\n")


def native_copy(model: nn.Module) -> nn.Module:
    """A transformers Llama as a ``NativeLlama`` with the same weights (``model`` itself when its
    config is not covered), so a freshly trained target runs the same forward as a loaded one."""
    # the config transformers' save_pretrained writes (defaults dropped, architecture and dtype
    # named), so a fresh target saves the same config.json as one trained, saved and loaded back
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    diff = model.config.to_diff_dict()  # type: ignore[union-attr, operator]
    config = {**diff, "architectures": [type(model).__name__], "dtype": dtype}
    if not supports(config)[0]:
        return model
    native = NativeLlama(config)
    native.load_state_dict(model.state_dict())
    return native.float().eval()


def load_native_llama(directory: Path) -> NativeLlama | None:
    """The checkpoint in ``directory`` as a ``NativeLlama``, or None when its config is not covered
    or its weights are sharded / not safetensors (then load it with transformers)."""
    config = json.loads((directory / CONFIG).read_text())
    if not supports(config)[0] or not (directory / WEIGHTS).is_file():
        return None
    model = NativeLlama(config)
    state = load_file(str(directory / WEIGHTS))
    if config.get("tie_word_embeddings", False):
        state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])
    missing, unexpected = model.load_state_dict(state, strict=False)
    require(
        not missing and not unexpected,
        f"{directory}: weights do not fit the config: missing {missing}, unexpected {unexpected}",
    )
    return model.float().eval()
