"""ComponentModel: a frozen target whose chosen modules can run as masked rank-1 components.

Modules are chosen by fnmatch patterns over module paths and given canonical layer names
(``spd_core.keys.canonical_layer_name``). A forward pass with masks temporarily swaps the forward
of each decomposed module for its component forward; without masks the target runs untouched.
"""

import fnmatch
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from spd_core.ci import CausalImportance, CIFnType, make_ci_fn, sigmoids
from spd_core.components import ComponentKind, Components, TransposedComponents, make_components
from spd_core.errors import InvalidInput, require
from spd_core.keys import canonical_layer_name


@dataclass(frozen=True)
class LayerInfo:
    name: str
    path: str
    kind: ComponentKind
    d_in: int
    d_out: int
    C: int


@dataclass
class ForwardOutput:
    output: Tensor
    inputs: dict[str, Tensor] = field(default_factory=dict)
    outputs: dict[str, Tensor] = field(default_factory=dict)


def _decomposable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear | nn.Embedding) or type(module).__name__ == "Conv1D"


def match_modules(target: nn.Module, patterns: Sequence[tuple[str, int]]) -> dict[str, int]:
    """Module path -> C for every decomposable module matched by a pattern (first match wins).

    A pattern that matches no decomposable module is an error listing the candidates.
    """
    candidates = [name for name, m in target.named_modules() if name and _decomposable(m)]
    out: dict[str, int] = {}
    for pattern, C in patterns:
        hits = [name for name in candidates if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            raise ValueError(
                f"module pattern {pattern!r} matches no decomposable module; candidates: "
                f"{', '.join(candidates)}"
            )
        for name in hits:
            out.setdefault(name, C)
    return out


class ComponentModel(nn.Module):
    def __init__(
        self,
        target: nn.Module,
        patterns: Sequence[tuple[str, int]],
        ci_fn_type: CIFnType = "mlp",
        ci_hidden: int = 16,
        output_attr: str | None = None,
        target_kwargs: Mapping[str, Any] | None = None,
        tied: Mapping[str, str] | None = None,
    ) -> None:
        """``tied`` maps a layer to the layer whose components it shares, transposed (see
        ``TransposedComponents``); both must be decomposed."""
        super().__init__()
        target.requires_grad_(False)
        target.eval()
        self.target = target
        self.output_attr = output_attr
        self.target_kwargs = dict(target_kwargs or {})
        self.ci_fn_type: CIFnType = ci_fn_type
        self.layers: dict[str, LayerInfo] = {}
        self._modules_by_layer: dict[str, nn.Module] = {}
        components: dict[str, Components] = {}
        ci_fns: dict[str, nn.Module] = {}
        for path, C in match_modules(target, patterns).items():
            module = target.get_submodule(path)
            name = canonical_layer_name(path)
            require(name not in self.layers, f"two modules map to layer name {name!r}")
            comp = make_components(module, C)
            ci_in = (
                C if comp.kind == "embedding" else comp.d_in
            )  # embeddings feed V[token] to the CI fn
            components[_key(name)] = comp
            ci_fns[_key(name)] = make_ci_fn(ci_fn_type, ci_in, C, ci_hidden)
            self.layers[name] = LayerInfo(name, path, comp.kind, comp.d_in, comp.d_out, C)
            self._modules_by_layer[name] = module
        for layer, source in (tied or {}).items():
            require(
                layer in self.layers and source in self.layers,
                f"tie {layer!r} -> {source!r}: both must be decomposed layers; valid: "
                f"{', '.join(self.layers)}",
            )
            own = components[_key(layer)]
            components[_key(layer)] = TransposedComponents(
                components[_key(source)], own.target_weight, own.bias, source
            )
        self.components = nn.ModuleDict(components)
        self.ci_fns = nn.ModuleDict(ci_fns)

    # --- accessors -------------------------------------------------------------------------------
    def comp(self, layer: str) -> Components:
        if layer not in self.layers:  # not require: the message is built only when it is needed
            raise InvalidInput(f"unknown layer {layer!r}; valid layers: {', '.join(self.layers)}")
        out = self.components[_key(layer)]
        assert isinstance(out, Components)
        return out

    def layer_c(self) -> dict[str, int]:
        return {name: info.C for name, info in self.layers.items()}

    def trainable_state(self) -> dict[str, Tensor]:
        """Component and CI-function parameters (the target is stored separately)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("target.")}

    # --- forward ---------------------------------------------------------------------------------
    def target_output(self, x: Tensor) -> Tensor:
        out = self.target(x, **self.target_kwargs)
        return getattr(out, self.output_attr) if self.output_attr else out

    def forward(
        self,
        x: Tensor,
        masks: Mapping[str, Tensor] | None = None,
        delta_masks: Mapping[str, Tensor] | None = None,
        routing: Mapping[str, Tensor] | None = None,
        cache_inputs: bool = False,
        acts: Mapping[str, Tensor] | None = None,
        cache_outputs: bool = False,
        target_outs: Mapping[str, Tensor] | None = None,
    ) -> ForwardOutput:
        """Run the target with the layers in ``masks`` replaced by masked components.

        ``masks[layer]`` (..., C); ``delta_masks[layer]`` (...) scales the weight delta (absent: no
        delta); ``routing[layer]`` (...) bool picks components (True) or the target layer (False)
        per position. ``cache_inputs`` records each decomposed layer's input. ``acts[layer]`` may
        supply that layer's inner activations when its input is known to equal the cached one (e.g.
        when it is the only masked layer), saving the x·V product. ``cache_outputs`` records each
        unmasked decomposed layer's output; ``target_outs[layer]`` may supply it back when the
        layer's input is known to equal the cached one: an unmasked layer then returns it without
        running, a masked one uses it for its weight-delta path (x·Wᵀ + b).
        """
        masks = masks or {}
        for name in masks:
            if name not in self.layers:
                raise InvalidInput(
                    f"mask for unknown layer {name!r}; valid layers: {', '.join(self.layers)}"
                )
        inputs: dict[str, Tensor] = {}
        outputs: dict[str, tuple[Tensor, int]] = {}  # each output and its version when returned
        if not masks and not cache_inputs and not cache_outputs:
            return ForwardOutput(self.target_output(x))
        with self._patched(
            masks,
            delta_masks or {},
            routing or {},
            acts or {},
            inputs if cache_inputs else None,
            target_outs or {},
            outputs if cache_outputs else None,
        ):
            out = self.target_output(x)
        # An output the target changed in place after the layer returned it is not the layer's.
        kept = {k: t for k, (t, version) in outputs.items() if t._version == version}
        return ForwardOutput(out, inputs, kept)

    @contextmanager
    def _patched(
        self,
        masks: Mapping[str, Tensor],
        delta_masks: Mapping[str, Tensor],
        routing: Mapping[str, Tensor],
        acts: Mapping[str, Tensor],
        cache: dict[str, Tensor] | None,
        target_outs: Mapping[str, Tensor],
        out_cache: dict[str, tuple[Tensor, int]] | None,
    ) -> Iterator[None]:
        patched: list[nn.Module] = []
        watch = cache is not None or out_cache is not None
        try:
            for name, module in self._modules_by_layer.items():
                if name not in masks and name not in target_outs and not watch:
                    continue
                module.forward = self._layer_forward(
                    name,
                    module.forward,
                    masks,
                    delta_masks,
                    routing,
                    acts,
                    cache,
                    target_outs,
                    out_cache,
                )  # type: ignore[method-assign]
                patched.append(module)
            yield
        finally:
            for module in patched:
                del module.forward

    def _layer_forward(
        self,
        name: str,
        original: Callable[..., Tensor],
        masks: Mapping[str, Tensor],
        delta_masks: Mapping[str, Tensor],
        routing: Mapping[str, Tensor],
        acts: Mapping[str, Tensor],
        cache: dict[str, Tensor] | None,
        target_outs: Mapping[str, Tensor],
        out_cache: dict[str, tuple[Tensor, int]] | None,
    ) -> Callable[..., Tensor]:
        comp = self.comp(name)

        def forward(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            if cache is not None:
                cache[name] = x
            if name not in masks:
                if name in target_outs:
                    return target_outs[name]
                out = original(x, *args, **kwargs)
                if out_cache is not None:
                    out_cache[name] = (out, out._version)
                return out
            out = comp(x, masks[name], delta_masks.get(name), acts.get(name), target_outs.get(name))
            if name in routing:
                out = torch.where(routing[name].unsqueeze(-1), out, comp.target_forward(x))
            return out

        return forward

    # --- causal importance ------------------------------------------------------------------------
    def inner_acts(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """x·V of every layer from its cached input, (..., C) each."""
        return {name: self.comp(name).inner_acts(x) for name, x in inputs.items()}

    def causal_importance(
        self, inputs: Mapping[str, Tensor], acts: Mapping[str, Tensor] | None = None
    ) -> CausalImportance:
        """CI of every layer from its cached input (see ``forward(..., cache_inputs=True)``);
        ``acts`` may pass the inner activations already computed from those inputs."""
        pre: dict[str, Tensor] = {}
        for name, x in inputs.items():
            comp = self.comp(name)
            reads_acts = self.ci_fn_type == "mlp" or comp.kind == "embedding"
            feats = x
            if reads_acts:
                feats = acts[name] if acts is not None else comp.inner_acts(x)
            pre[name] = self.ci_fns[_key(name)](feats)
        return sigmoids(pre)

    def weight_deltas(self) -> dict[str, Tensor]:
        return {name: self.comp(name).weight_delta() for name in self.layers}


def _key(layer: str) -> str:
    """ModuleDict keys may not contain dots."""
    return layer.replace(".", "-")
