"""Harvest: per-component statistics of a ComponentModel over a corpus of texts (pure computation).

For every component (``layer:c``), with "fires" meaning CI > ``threshold`` (lower-leaky CI):
- firing density (firings / tokens), mean and max CI over all tokens;
- the top activating contexts: per text the position of its largest CI, the best ``n_examples``
  texts kept, each with a window of token ids and the component's CI on every token of the window;
- input-token statistics (the token at which it fires) and output-token statistics (the next token):
  count n(c,t), recall n(c,t)/n(c) (share of its firings on t), precision n(c,t)/n(t) (share of t's
  occurrences on which it fires), PMI log(n(c,t)·N / (n(c)·n(t))), N the number of (next-)tokens;
- co-firing: components firing at the same token, with count and Jaccard index;
- dataset attributions: for every (source component, target component) pair, the sum over the corpus
  of the signed one-hop gradient × activation edges between their firing nodes (any positions), the
  sum of |edge| and the number of edges. Computed with ``attribution_graph`` per text (nodes = CI >
  threshold, no output nodes), so the sums equal the per-text graphs' sums exactly.

CI is computed in batches of right-padded texts (causal models: padding never changes earlier
positions); attributions one text at a time.
"""

import heapq
import math
import multiprocessing
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from tqdm import tqdm

from spd_core.analysis.attributions import attribution_graph
from spd_core.analysis.ci import model_ci
from spd_core.errors import require
from spd_core.model import ComponentModel

Side = Literal["input", "output"]


@dataclass(frozen=True)
class HarvestConfig:
    threshold: float = 0.1
    n_examples: int = 20
    window: int = 8
    top_tokens: int = 50
    top_cofiring: int = 20
    attributions: bool = True
    max_tokens: int | None = None
    batch_size: int = 16
    attribution_top_k: int | None = None  # keep per component only its top-k partners (see below)
    max_nodes: int = 8_000  # alive nodes allowed in one text's attribution graph

    def __post_init__(self) -> None:
        require(
            0.0 <= self.threshold < 1.0,
            f"threshold must be in [0, 1) (CI is in [0, 1]); got {self.threshold}",
        )
        require(
            self.n_examples >= 1 and self.window >= 0 and self.batch_size >= 1,
            f"n_examples and batch_size must be ≥ 1 and window ≥ 0; got {self.n_examples}, "
            f"{self.batch_size}, {self.window}",
        )


@dataclass(frozen=True)
class Example:
    text_id: int
    pos: int  # position of the component's largest CI in the text
    max_ci: float
    start: int  # text position of the window's first token
    token_ids: list[int]
    ci: list[float]  # the component's CI on each window token


@dataclass(frozen=True)
class TokenStat:
    token_id: int
    count: int  # n(c, t)
    token_count: int  # n(t)
    recall: float
    precision: float
    pmi: float


@dataclass(frozen=True)
class ComponentStats:
    layer: str
    c: int
    n_firing: int
    density: float
    mean_ci: float
    max_ci: float


@dataclass(frozen=True)
class CoFiring:
    layer: str
    c: int
    count: int
    jaccard: float


@dataclass(frozen=True)
class AttributionSum:
    value: float  # signed sum of edges source -> target
    abs_value: float
    count: int


@dataclass
class Harvest:
    config: HarvestConfig
    layers: dict[str, int]  # layer -> C, network order
    n_tokens: int
    texts: list[tuple[str, list[int]]]
    components: list[ComponentStats]
    token_stats: dict[tuple[str, int, Side], list[TokenStat]]
    examples: dict[tuple[str, int], list[Example]]
    cofiring: dict[tuple[str, int], list[CoFiring]]
    attributions: dict[tuple[str, int, str, int], AttributionSum] = field(default_factory=dict)
    attribution_inflow: dict[tuple[str, int], float] = field(
        default_factory=dict
    )  # target -> total |sum| in
    attribution_method: str = "attribution_graph per text (one hop, nodes with CI > threshold)"


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids without special tokens, for a transformers tokenizer or a
    ``tokenizers.Tokenizer``."""
    out = tokenizer.encode(text, add_special_tokens=False)
    return list(out.ids if hasattr(out, "ids") else out)


class _Accumulator:
    """Running counts over the corpus; ``finish`` turns them into a ``Harvest``."""

    def __init__(self, model: ComponentModel, config: HarvestConfig) -> None:
        self.model, self.config = model, config
        self.layers = model.layer_c()
        self.offsets: dict[str, int] = {}
        k = 0
        for name, C in self.layers.items():
            self.offsets[name] = k
            k += C
        self.K = k
        self.n_fire = torch.zeros(k, dtype=torch.float64)
        self.ci_sum = torch.zeros(k, dtype=torch.float64)
        self.ci_max = torch.zeros(k, dtype=torch.float64)
        self.cofire = torch.zeros(k, k, dtype=torch.float64)
        self.attr = torch.zeros(
            3, k, k, dtype=torch.float64
        )  # value, |value|, count; [.., target, source]
        self.pair_counts: dict[Side, Counter[tuple[int, int]]] = {
            "input": Counter(),
            "output": Counter(),
        }
        self.n_fire_out = torch.zeros(k, dtype=torch.float64)  # firings that have a next token
        self.token_counts: dict[Side, Counter[int]] = {"input": Counter(), "output": Counter()}
        self.heaps: list[list[tuple[float, int, int]]] = [[] for _ in range(k)]
        self.example_data: dict[tuple[int, int], Example] = {}
        self.n_tokens = 0
        self.n_out_tokens = 0

    def add_text(self, text_id: int, ids: list[int], ci: dict[str, Tensor]) -> None:
        """``ci[layer]`` is (seq, C) for this text."""
        seq = len(ids)
        g = torch.cat([ci[name].double() for name in self.layers], dim=-1)  # (seq, K)
        fire = g > self.config.threshold
        self.n_tokens += seq
        self.n_out_tokens += seq - 1
        self.n_fire += fire.sum(0)
        self.n_fire_out += fire[:-1].sum(0)
        self.ci_sum += g.sum(0)
        self.ci_max = torch.maximum(self.ci_max, g.max(0).values)
        f = fire.double()
        self.cofire += f.T @ f
        self.token_counts["input"].update(ids)
        self.token_counts["output"].update(ids[1:])
        for pos, k in fire.nonzero().tolist():
            self.pair_counts["input"][(k, ids[pos])] += 1
            if pos + 1 < seq:
                self.pair_counts["output"][(k, ids[pos + 1])] += 1
        best, arg = g.max(0)
        w = self.config.window
        for k in (best > self.config.threshold).nonzero()[:, 0].tolist():
            item = (float(best[k]), -text_id, int(arg[k]))
            heap = self.heaps[k]
            if len(heap) < self.config.n_examples:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                dropped = heapq.heapreplace(heap, item)
                self.example_data.pop((k, -dropped[1]), None)
            else:
                continue
            pos = item[2]
            lo, hi = max(0, pos - w), min(seq, pos + w + 1)
            self.example_data[(k, text_id)] = Example(
                text_id, pos, item[0], lo, ids[lo:hi], [round(float(v), 4) for v in g[lo:hi, k]]
            )

    def add_attributions(self, x: Tensor) -> None:
        graph = attribution_graph(
            self.model,
            x,
            threshold=self.config.threshold,
            outputs=[],
            max_nodes=self.config.max_nodes,
        )
        idx = [
            (i, self.offsets[n.layer] + n.c)
            for i, n in enumerate(graph.nodes)
            if n.layer in self.offsets
        ]
        if not idx:
            return
        rows = torch.tensor([i for i, _ in idx])
        ks = torch.tensor([k for _, k in idx])
        e = graph.edges[rows][:, rows].double()  # (target node, source node)
        flat = (ks[:, None] * self.K + ks[None, :]).flatten()
        size = self.K * self.K
        for j, vals in enumerate((e, e.abs(), (e != 0).double())):
            self.attr[j] += torch.bincount(flat, weights=vals.flatten(), minlength=size).view(
                self.K, self.K
            )

    def absorb(self, other: "_Accumulator") -> None:
        """Add the counts of another accumulator over other texts (text ids disjoint from these)."""
        for name in ("n_fire", "n_fire_out", "ci_sum", "cofire", "attr"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.ci_max = torch.maximum(self.ci_max, other.ci_max)
        for side in ("input", "output"):
            self.pair_counts[side].update(other.pair_counts[side])
            self.token_counts[side].update(other.token_counts[side])
        self.n_tokens += other.n_tokens
        self.n_out_tokens += other.n_out_tokens
        self.example_data.update(other.example_data)
        for k, theirs in enumerate(other.heaps):
            both = self.heaps[k] + theirs
            kept = heapq.nlargest(self.config.n_examples, both)  # the streaming heap's final set
            for _, neg_id, _ in set(both) - set(kept):
                self.example_data.pop((k, -neg_id), None)
            heapq.heapify(kept)
            self.heaps[k] = kept

    def key(self, k: int) -> tuple[str, int]:
        for name, off in reversed(self.offsets.items()):
            if k >= off:
                return name, k - off
        raise AssertionError(f"component index {k} out of range")

    def finish(self, texts: list[tuple[str, list[int]]]) -> Harvest:
        cfg = self.config
        keys = [self.key(k) for k in range(self.K)]
        n_tok = max(self.n_tokens, 1)
        components = [
            ComponentStats(
                layer,
                c,
                int(self.n_fire[k]),
                float(self.n_fire[k]) / n_tok,
                float(self.ci_sum[k]) / n_tok,
                float(self.ci_max[k]),
            )
            for k, (layer, c) in enumerate(keys)
        ]
        by_comp: dict[tuple[int, Side], list[tuple[int, int]]] = {}
        for side, counter in self.pair_counts.items():
            for (k, t), n in counter.items():
                by_comp.setdefault((k, side), []).append((t, n))
        token_stats: dict[tuple[str, int, Side], list[TokenStat]] = {}
        for (k, side), rows in by_comp.items():
            n_c = float(self.n_fire[k] if side == "input" else self.n_fire_out[k])
            total = self.n_tokens if side == "input" else self.n_out_tokens
            rows.sort(key=lambda r: (-r[1], r[0]))
            stats = []
            for t, n in rows[: cfg.top_tokens]:
                n_t = self.token_counts[side][t]
                stats.append(
                    TokenStat(t, n, n_t, n / n_c, n / n_t, math.log(n * total / (n_c * n_t)))
                )
            token_stats[(*keys[k], side)] = stats
        examples: dict[tuple[str, int], list[Example]] = {}
        for k, heap in enumerate(self.heaps):
            if heap:
                ranked = sorted(heap, reverse=True)
                examples[keys[k]] = [self.example_data[(k, -tid)] for _, tid, _ in ranked]
        union = self.n_fire[:, None] + self.n_fire[None, :] - self.cofire
        jac = torch.where(union > 0, self.cofire / union.clamp(min=1), torch.zeros_like(union))
        jac.fill_diagonal_(-1.0)
        cofiring: dict[tuple[str, int], list[CoFiring]] = {}
        for k in range(self.K):
            if self.n_fire[k] == 0:
                continue
            top = jac[k].topk(min(cfg.top_cofiring, self.K)).indices.tolist()
            rows = [
                CoFiring(keys[j][0], keys[j][1], int(self.cofire[k, j]), float(jac[k, j]))
                for j in top
                if self.cofire[k, j] > 0 and j != k
            ]
            if rows:
                cofiring[keys[k]] = rows
        value, present = self.attr[0], self.attr[2] > 0
        keep = (
            present
            if cfg.attribution_top_k is None
            else _top_k_pairs(value, present, cfg.attribution_top_k)
        )
        attributions: dict[tuple[str, int, str, int], AttributionSum] = {}
        for tk, sk in keep.nonzero().tolist():
            attributions[(*keys[sk], *keys[tk])] = AttributionSum(
                float(value[tk, sk]), float(self.attr[1, tk, sk]), int(self.attr[2, tk, sk])
            )
        inflow_all = torch.where(present, value.abs(), torch.zeros_like(value)).sum(1)
        inflow = {
            keys[tk]: float(inflow_all[tk]) for tk in present.any(1).nonzero().flatten().tolist()
        }
        return Harvest(
            cfg,
            dict(self.layers),
            self.n_tokens,
            texts,
            components,
            token_stats,
            examples,
            cofiring,
            attributions,
            inflow,
        )


def _top_k_pairs(value: Tensor, present: Tensor, k: int) -> Tensor:
    """(target, source) pairs among each row's or each column's top k by value, -value and
    |value|."""
    keep = torch.zeros_like(present)
    for scores in (value, -value, value.abs()):
        masked = torch.where(present, scores, torch.full_like(scores, -math.inf))
        for dim in (0, 1):
            n = min(k, masked.shape[dim])
            idx = masked.topk(n, dim=dim).indices
            keep.scatter_(dim, idx, True)
    return keep & present


def harvest(
    model: ComponentModel,
    tokenizer: Any,
    texts: Sequence[str],
    config: HarvestConfig | None = None,
    progress: bool = True,
    processes: int = 1,
) -> Harvest:
    """Harvest ``texts`` (tokenized without special tokens, cut to ``config.max_tokens``); see the
    module doc.

    Texts that tokenize to nothing are skipped. The model runs as the target (CI from its cached
    inputs). ``processes`` > 1 splits the texts into that many contiguous shards on forked CPU
    processes and adds their counts (same counts; sums of floats equal up to summation order).
    """
    config = config or HarvestConfig()
    require(processes >= 1, f"processes must be >= 1, got {processes}")
    encoded: list[tuple[str, list[int]]] = []
    for text in texts:
        ids = encode(tokenizer, text)[: config.max_tokens]
        if ids:
            encoded.append((text, ids))
    require(
        encoded,
        f"no text tokenized to at least one token (got {len(texts)} texts); give non-empty texts",
    )
    device = next(model.parameters()).device
    require(
        processes == 1 or device.type == "cpu",
        f"processes > 1 forks CPU processes; the model is on {device}",
    )
    bounds = _shards(len(encoded), config.batch_size, processes)
    if len(bounds) == 1:
        acc = _harvest_shard(model, config, encoded, *bounds[0], progress)
    else:
        global _FORKED
        _FORKED = (model, config, encoded)
        try:
            with multiprocessing.get_context("fork").Pool(len(bounds) - 1) as pool:
                others = pool.starmap_async(_forked_shard, bounds[1:])
                acc = _harvest_shard(model, config, encoded, *bounds[0], progress)
                for other in others.get():
                    acc.absorb(other)
        finally:
            _FORKED = None
    return acc.finish(encoded)


def _shards(n: int, batch_size: int, processes: int) -> list[tuple[int, int]]:
    """Contiguous [lo, hi) ranges of about equal size, cut at batch boundaries, none empty."""
    n_batches = -(-n // batch_size)
    per = -(-n_batches // min(processes, n_batches))
    return [(lo * batch_size, min(n, (lo + per) * batch_size)) for lo in range(0, n_batches, per)]


_FORKED: tuple[ComponentModel, HarvestConfig, list[tuple[str, list[int]]]] | None = None


def _forked_shard(lo: int, hi: int) -> "_Accumulator":
    """A shard in a forked worker: the model and texts come from the parent's memory, not a
    pickle."""
    assert _FORKED is not None, "a harvest worker runs only in a process forked by harvest()"
    torch.set_num_threads(1)
    acc = _harvest_shard(*_FORKED, lo, hi, progress=False)
    acc.model = None  # type: ignore[assignment]  # only the counts travel back
    return acc


def _harvest_shard(
    model: ComponentModel,
    config: HarvestConfig,
    encoded: list[tuple[str, list[int]]],
    lo: int,
    hi: int,
    progress: bool,
) -> _Accumulator:
    """Counts over ``encoded[lo:hi]`` (text ids are indices into ``encoded``)."""
    acc = _Accumulator(model, config)
    device = next(model.parameters()).device
    bar = tqdm(total=hi - lo, desc="harvest", unit="text", file=sys.stderr, disable=not progress)
    for start in range(lo, hi, config.batch_size):
        batch = encoded[start : min(hi, start + config.batch_size)]
        seq = max(len(ids) for _, ids in batch)
        x = torch.zeros(len(batch), seq, dtype=torch.long, device=device)
        for i, (_, ids) in enumerate(batch):
            x[i, : len(ids)] = torch.tensor(ids, device=device)
        with torch.no_grad():
            ci, _, _ = model_ci(model, x)
        for i, (_, ids) in enumerate(batch):
            acc.add_text(start + i, ids, {k: v[i, : len(ids)].cpu() for k, v in ci.lower.items()})
            if config.attributions:
                acc.add_attributions(x[i : i + 1, : len(ids)])
            bar.update(1)
    bar.close()
    return acc
