"""Benchmark of the analysis engine: batched vs per-node attribution graphs, and circuit
optimisation.

Model: a 2-block Llama, d_model 64, C = 64 on each of its 14 matrices (untrained components, which
is fine for timing). Attribution nodes: a seeded random CI with ~48 active components per token in
total (what the trained demo run shows), because untrained CI functions leave almost everything
alive. Run: ``OMP_NUM_THREADS=1 python -m bench.bench_analysis``.
"""

import json
import statistics
import time

import torch
import transformers

from spd_core.analysis.attributions import attribution_graph
from spd_core.analysis.circuits import CircuitConfig, optimize_circuit
from spd_core.analysis.regimes import RegimeSettings
from spd_core.model import ComponentModel


def demo_size_model(
    seed: int = 0, vocab: int = 128, d_model: int = 64, d_mlp: int = 128, C: int = 64
) -> ComponentModel:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    lm = transformers.LlamaForCausalLM(cfg).eval()
    return ComponentModel(
        lm,
        [("model.layers.*.self_attn.*_proj", C), ("model.layers.*.mlp.*_proj", C)],
        output_attr="logits",
        target_kwargs={"use_cache": False},
    )


def _interleaved_medians(fns: list, repeats: int) -> list[float]:  # noqa: ANN001
    """Median seconds of each function, timed alternately so that load drift hits both alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def bench_analysis(
    repeats: int = 5, seq: int = 32, active_per_token: int = 48, circuit_steps: int = 200
) -> dict:
    """Median seconds of the batched and per-node attribution graph, their ratio and max edge
    difference (default one-hop edges and the through-delta variant), and of ``circuit_steps``
    circuit steps."""
    torch.set_num_threads(1)
    model = demo_size_model()
    x = torch.randint(0, 128, (1, seq), generator=torch.Generator().manual_seed(1))
    gen = torch.Generator().manual_seed(2)
    n_entries = sum(info.C for info in model.layers.values())
    ci = {
        k: (torch.rand(seq, info.C, generator=gen) < active_per_token / n_entries).float()
        for k, info in model.layers.items()
    }
    out: dict = {"seq": seq, "alive_nodes": int(sum(int(v.sum()) for v in ci.values()))}
    for label, through_delta in (("attr", False), ("attr_through_delta", True)):
        fast = attribution_graph(model, x, ci=ci, through_delta=through_delta)  # warm-up
        ref = attribution_graph(model, x, ci=ci, through_delta=through_delta, method="reference")
        t_fast, t_ref = _interleaved_medians(
            [
                lambda td=through_delta: attribution_graph(model, x, ci=ci, through_delta=td),
                lambda td=through_delta: attribution_graph(
                    model, x, ci=ci, through_delta=td, method="reference"
                ),
            ],
            repeats,
        )
        out[f"{label}_batched_s"] = t_fast
        out[f"{label}_per_node_s"] = t_ref
        out[f"{label}_speedup"] = t_ref / t_fast
        out[f"{label}_max_abs_diff"] = float((fast.edges - ref.edges).abs().max())
        out[f"{label}_max_abs_edge"] = float(ref.edges.abs().max())
    stamps: list[float] = []
    cfg = CircuitConfig(steps=circuit_steps)
    regimes = RegimeSettings(n_samples=4, pgd_steps=10)
    t0, c0 = time.perf_counter(), time.process_time()
    optimize_circuit(
        model,
        x,
        target_token=5,
        position=-1,
        config=cfg,
        regimes=regimes,
        progress=lambda s, n, loss: stamps.append(time.perf_counter()),
    )
    out["circuit_total_s"] = time.perf_counter() - t0
    out["circuit_total_cpu_s"] = time.process_time() - c0
    out["circuit_steps"] = circuit_steps
    out["circuit_steps_s"] = stamps[-1] - t0
    return out


if __name__ == "__main__":
    print(json.dumps(bench_analysis(), indent=2))
