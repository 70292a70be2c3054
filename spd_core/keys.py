"""Canonical layer names and the one place where component and node keys are parsed and formatted.

A component is ``<layer>:<c>`` (e.g. ``1.mlp.up:17``); a graph node is ``<layer>:<pos>:<c>``.
Layer names may contain dots but never colons, so keys split from the right.
"""

import re
from collections.abc import Mapping
from typing import NamedTuple


class ComponentKey(NamedTuple):
    layer: str
    c: int

    def __str__(self) -> str:
        return f"{self.layer}:{self.c}"


class NodeKey(NamedTuple):
    layer: str
    pos: int
    c: int

    def __str__(self) -> str:
        return f"{self.layer}:{self.pos}:{self.c}"


def _check_layer_and_c(layer: str, c: int, layer_c: Mapping[str, int]) -> None:
    if layer not in layer_c:
        raise ValueError(f"unknown layer {layer!r}; valid layers: {', '.join(layer_c)}")
    n = layer_c[layer]
    if not 0 <= c < n:
        raise ValueError(f"component index {c} out of range for layer {layer!r}; valid: 0..{n - 1}")


def parse_component_key(key: str, layer_c: Mapping[str, int]) -> ComponentKey:
    """Parse ``layer:c`` and check it against ``layer_c`` (layer name -> number of components)."""
    layer, sep, c_str = key.strip().rpartition(":")
    if not sep or not c_str.lstrip("-").isdigit():
        raise ValueError(
            f"malformed component key {key!r}; expected '<layer>:<c>', e.g. '{_example(layer_c)}:0'"
        )
    out = ComponentKey(layer, int(c_str))
    _check_layer_and_c(out.layer, out.c, layer_c)
    return out


def parse_node_key(key: str, layer_c: Mapping[str, int], seq_len: int | None = None) -> NodeKey:
    """Parse ``layer:pos:c``; a negative pos counts from the end when ``seq_len`` is given."""
    parts = key.strip().rsplit(":", 2)
    if len(parts) != 3 or not all(re.fullmatch(r"-?\d+", p) for p in parts[1:]):
        raise ValueError(
            f"malformed node key {key!r}; expected '<layer>:<pos>:<c>', e.g. "
            f"'{_example(layer_c)}:0:0'"
        )
    layer, pos, c = parts[0], int(parts[1]), int(parts[2])
    _check_layer_and_c(layer, c, layer_c)
    if seq_len is not None:
        pos = resolve_position(pos, seq_len)
    return NodeKey(layer, pos, c)


def resolve_position(pos: int, seq_len: int) -> int:
    """Map a possibly negative position to 0..seq_len-1, or raise naming the valid range."""
    if not -seq_len <= pos < seq_len:
        raise ValueError(
            f"position {pos} out of range for {seq_len} tokens; valid: {-seq_len}..{seq_len - 1}"
        )
    return pos % seq_len


def _example(layer_c: Mapping[str, int]) -> str:
    return next(iter(layer_c), "layer")


# Canonical names for transformer modules, independent of the library that built the model.
_CANONICAL_RULES: list[tuple[str, str]] = [
    (r"^(?:model\.)?embed_tokens$", "embed"),
    (r"^transformer\.wte$", "embed"),
    (r"^lm_head$", "unembed"),
    (r"^(?:model\.)?layers\.(\d+)\.self_attn\.(q|k|v|o)_proj$", r"\1.attn.\2"),
    (r"^(?:model\.)?layers\.(\d+)\.mlp\.(up|gate|down)_proj$", r"\1.mlp.\2"),
    (r"^transformer\.h\.(\d+)\.attn\.c_attn$", r"\1.attn.qkv"),
    (r"^transformer\.h\.(\d+)\.attn\.c_proj$", r"\1.attn.o"),
    (r"^transformer\.h\.(\d+)\.mlp\.c_fc$", r"\1.mlp.up"),
    (r"^transformer\.h\.(\d+)\.mlp\.c_proj$", r"\1.mlp.down"),
]


def canonical_layer_name(module_path: str) -> str:
    """Canonical name of a module path: ``model.layers.0.mlp.up_proj`` -> ``0.mlp.up``.

    Toy targets keep their own module names (``linear1``, ``layers.0.mlp_in``).
    """
    for pattern, repl in _CANONICAL_RULES:
        if re.match(pattern, module_path):
            return re.sub(pattern, repl, module_path)
    return module_path
