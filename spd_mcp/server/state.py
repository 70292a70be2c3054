"""The server's state: its config, the served run, and the AppState held in the lifespan context.

``ServerConfig`` (the command line) lives in ``config`` and is re-exported here.
``ServedRun`` is the seam to ``spd_core.run``: ``load_served_run`` adapts a ``LoadedRun`` (model,
tokenizer, metrics, probes, behaviours, path) into what the tools need; tests build a ``ServedRun``
in code.
"""

import asyncio
import functools
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from spd_core.analysis.ablation import TargetPasses
from spd_core.model import ComponentModel
from spd_core.weight_delta import DeltaReport, weight_delta_report
from spd_mcp.common.events import EventLog
from spd_mcp.server.config import ServerConfig
from spd_mcp.server.device import DeviceWorker
from spd_mcp.server.edits import EditRegistry
from spd_mcp.server.store import Store
from spd_mcp.server.tokens import TokenizerView
from spd_mcp.server.workspace import Workspace

T = TypeVar("T")
__all__ = [
    "AppState",
    "Behaviour",
    "ProbePrompt",
    "ServedRun",
    "ServerConfig",
    "load_served_run",
    "served_from_loaded",
]


@dataclass(frozen=True)
class ProbePrompt:
    text: str
    target_token: str
    mechanism: str
    position: int | None = None
    foil: str | None = None


@dataclass(frozen=True)
class Behaviour:
    """What a probe mechanism is, in plain words, and names people use for it (behaviours.json)."""

    description: str
    names: tuple[str, ...] = ()


@dataclass
class ServedRun:
    model: ComponentModel
    tokenizer: Any | None
    name: str
    metrics: dict[str, Any] = field(default_factory=dict)
    probes: list[ProbePrompt] = field(default_factory=list)
    path: Path | None = None
    input_dim: int | None = None  # toy runs: length of the input feature vector
    context_length: int | None = None
    description: str = ""
    behaviours: dict[str, Behaviour] = field(default_factory=dict)

    @property
    def is_lm(self) -> bool:
        return self.tokenizer is not None

    @property
    def has_harvest(self) -> bool:
        return self.path is not None and (self.path / "harvest.sqlite").exists()


def served_from_loaded(loaded: Any) -> ServedRun:
    """Adapt ``spd_core.run.LoadedRun`` (model, tokenizer, target_spec, config, metrics, path,
    probes)."""
    model: ComponentModel = loaded.model
    path = Path(loaded.path) if getattr(loaded, "path", None) else None
    probes = [
        p
        if isinstance(p, ProbePrompt)
        else ProbePrompt(
            text=_get(p, "text"),
            target_token=_get(p, "target_token", "") or _get(p, "target", ""),
            mechanism=_get(p, "mechanism", "") or "",
            position=_get(p, "position", None),
            foil=_get(p, "foil", None) or None,
        )
        for p in (getattr(loaded, "probes", None) or [])
    ]
    spec = getattr(loaded, "target_spec", None)
    cfg = getattr(model.target, "config", None)
    first = next(iter(model.layers.values()))
    tokenizer = getattr(loaded, "tokenizer", None)
    return ServedRun(
        model=model,
        tokenizer=tokenizer,
        name=path.name if path else str(_get(spec, "name", "run") if spec is not None else "run"),
        metrics=dict(getattr(loaded, "metrics", None) or {}),
        probes=probes,
        path=path,
        input_dim=None if tokenizer is not None else (_get(spec, "n_features", None) or first.d_in),
        context_length=getattr(cfg, "max_position_embeddings", None)
        or _get(spec, "context_length", None),
        description=str(_get(spec, "description", "") if spec is not None else ""),
        behaviours={
            str(tag): Behaviour(str(b["description"]), tuple(str(n) for n in b.get("names", ())))
            for tag, b in (getattr(loaded, "behaviours", None) or {}).items()
        },
    )


def _get(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, dict):
        return obj.get(key, default)
    return getattr(obj, key, default)


def load_served_run(spec: str) -> ServedRun:
    """Load ``demo`` or a run directory through ``spd_core.run.load_run``."""
    try:
        from spd_core.run import load_run  # type: ignore[import-not-found]
    except ImportError as exc:
        raise RuntimeError(
            f"cannot load run {spec!r}: spd_core.run (the run-directory loader) is not available "
            f"in this installation ({exc})"
        ) from exc
    if spec != "demo" and not Path(spec).exists():
        raise FileNotFoundError(
            f"run directory {spec!r} does not exist; pass --run demo or a run directory"
        )
    return served_from_loaded(load_run(spec, light_tokenizer=True))


@dataclass
class AppState:
    """Everything a tool handler may use; lives in the MCP lifespan context."""

    config: ServerConfig
    run: ServedRun
    device: DeviceWorker
    store: Store
    events: EventLog
    workspace: Workspace | None
    io: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="spd-io")
    )
    started: float = field(default_factory=time.time)
    calls: Counter[str] = field(default_factory=Counter)
    edits: EditRegistry = field(default_factory=EditRegistry)
    # the target passes (CI, output) of prompts validated lately: the served model never changes
    # outside an edit's overlay, and validate_claim applies none
    target_passes: TargetPasses = field(default_factory=TargetPasses)

    @functools.cached_property
    def tok(self) -> TokenizerView:
        if self.run.tokenizer is None:
            raise ValueError(
                f"run {self.run.name!r} is a toy model without a tokenizer; it takes a feature "
                f"vector of length {self.run.input_dim} (use the 'features' argument), not text"
            )
        return TokenizerView(self.run.tokenizer)

    @functools.cached_property
    def device_name(self) -> str:
        """Where the model lives ('cpu', 'cuda:0'); the model never moves after loading."""
        return str(next(self.run.model.parameters()).device)

    @functools.cached_property
    def weight_delta(self) -> DeltaReport:
        """How far the components are from summing to the weights; measured at start-up, before any
        edit is overlaid (the model's own parameters never change)."""
        return weight_delta_report(self.run.model)

    def require_workspace(self) -> Workspace:
        if self.workspace is None:
            raise ValueError(
                "the server was started without --workspace DIR, so it keeps no investigation files"
            )
        return self.workspace

    async def run_io(self, fn: Callable[..., T], *args: Any) -> T:
        """Blocking file I/O on the single I/O thread (keeps order, never blocks the loop)."""
        return await asyncio.wrap_future(self.io.submit(fn, *args))

    def layer_c(self) -> dict[str, int]:
        return self.run.model.layer_c()
