"""Multi-hop influence: sign-preserving path sums, checked against explicit path enumeration."""

import itertools

import torch

from spd_core.analysis.attributions import AttributionGraph, attribution_graph
from spd_core.analysis.influence import influence_on, normalise_rows
from spd_core.keys import NodeKey
from spd_core.model import ComponentModel


def _graph(edges: torch.Tensor) -> AttributionGraph:
    n = edges.shape[0]
    nodes = [NodeKey("L", i, 0) for i in range(n)]
    z = torch.zeros(n)
    return AttributionGraph(
        nodes, z, z, edges, torch.zeros(n, 0), torch.zeros(1, 2), torch.zeros(1, 2), 0.0
    )


def test_signs_are_preserved_and_rows_normalised_by_abs_sums() -> None:
    e = torch.zeros(4, 4)
    e[1, 0] = -2.0  # 0 -> 1 inhibits
    e[2, 0], e[2, 1] = 1.0, 3.0
    e[3, 2], e[3, 1] = 4.0, -4.0
    a_hat = normalise_rows(e)
    assert torch.allclose(a_hat[2], torch.tensor([0.25, 0.75, 0, 0]))
    assert torch.allclose(a_hat[3], torch.tensor([0.0, -0.5, 0.5, 0]))
    inf = influence_on(_graph(e), NodeKey("L", 3, 0))
    # paths to 3: 2->3 (0.5); 1->3 (-0.5) and 1->2->3 (0.75*0.5); 0->2->3 (0.25*0.5), 0->1->3,
    # 0->1->2->3 (a_hat[1,0] = -1)
    expected = torch.tensor([0.125 + 0.5 - 0.375, -0.5 + 0.375, 0.5, 0.0])
    assert torch.allclose(inf.total, expected)
    assert inf.total[1] < 0  # net inhibitory: a plain abs normalisation would lose this


def test_matches_path_enumeration_on_random_dag() -> None:
    g = torch.Generator().manual_seed(0)
    n = 6
    e = torch.randn(n, n, generator=g).tril(-1) * (torch.rand(n, n, generator=g) > 0.3)
    a_hat = normalise_rows(e)
    inf = influence_on(_graph(e), NodeKey("L", n - 1, 0))
    for j in range(n - 1):
        total = 0.0
        for k in range(0, n - j - 1):
            for mid in itertools.combinations(range(j + 1, n - 1), k):
                path = [n - 1, *reversed(mid), j]
                total += float(
                    torch.prod(
                        torch.stack([a_hat[path[i], path[i + 1]] for i in range(len(path) - 1)])
                    )
                )
        assert abs(float(inf.total[j]) - total) < 1e-5


def test_influence_on_output_of_real_graph(llama: ComponentModel, tokens: torch.Tensor) -> None:
    graph = attribution_graph(llama, tokens, threshold=0.5)
    target = graph.nodes[-1]
    inf = influence_on(graph, target)
    assert inf.total[-1] == 0 and bool((inf.total != 0).any())
    assert inf.top(3)[0][0] != target
