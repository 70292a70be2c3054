"""Harvest on a bigram model whose components fire exactly on one token: every statistic by hand."""

import math
import random
import sqlite3
from collections import Counter

import pytest
import torch

from spd_core.analysis.attributions import attribution_graph
from spd_core.harvest import HarvestConfig, harvest
from spd_core.harvest_store import (
    HarvestStore,
    activation_examples,
    component_summary,
    dataset_attributions,
    search_texts,
    write_harvest,
)
from tests.core.bigram_model import FIRING, WORDS, bigram_model, word_tokenizer


def corpus(n: int = 40, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) for _ in range(n)]


@pytest.fixture(scope="module")
def harvested(tmp_path_factory):
    model, tok, texts = bigram_model(), word_tokenizer(), corpus()
    h = harvest(
        model,
        tok,
        texts,
        HarvestConfig(threshold=0.5, n_examples=5, window=2, batch_size=7),
        progress=False,
    )
    run_dir = tmp_path_factory.mktemp("run")
    write_harvest(run_dir, h, labels={("lin1", 1): "token a"})
    return model, texts, h, HarvestStore(run_dir)


def test_density_precision_recall_pmi_by_hand(harvested) -> None:
    _, texts, h, store = harvested
    seqs = [[WORDS.index(w) for w in t.split()] for t in texts]
    n_in = Counter(t for s in seqs for t in s)
    n_out = Counter(t for s in seqs for t in s[1:])
    bigrams = Counter((a, b) for s in seqs for a, b in zip(s, s[1:], strict=False))
    fire_out = Counter(a for s in seqs for a in s[:-1])
    N, N_out = sum(n_in.values()), sum(n_out.values())
    assert h.n_tokens == N
    for layer in ("lin1", "lin2"):
        for c in range(len(WORDS)):
            s = component_summary(store, layer, c, top_k=10)
            if c not in FIRING:
                assert s["n_firing"] == 0 and s["input_tokens"] == [] and s["mean_ci"] == 0.0
                continue
            assert s["n_firing"] == n_in[c]
            assert s["density"] == pytest.approx(n_in[c] / N)
            assert s["mean_ci"] == pytest.approx(n_in[c] / N, rel=1e-4)
            (only,) = s["input_tokens"]
            assert (only["token_id"], only["recall"], only["precision"]) == (c, 1.0, 1.0)
            assert only["pmi"] == pytest.approx(math.log(N / n_in[c]))
            outs = {r["token_id"]: r for r in s["output_tokens"]}
            assert set(outs) == {b for (a, b) in bigrams if a == c}
            for b, r in outs.items():
                n = bigrams[(c, b)]
                assert r["count"] == n
                assert r["recall"] == pytest.approx(n / fire_out[c])
                assert r["precision"] == pytest.approx(n / n_out[b])
                assert r["pmi"] == pytest.approx(math.log(n * N_out / (fire_out[c] * n_out[b])))
            other = "lin2" if layer == "lin1" else "lin1"
            assert s["cofiring"][0] == {"layer": other, "c": c, "count": n_in[c], "jaccard": 1.0}
    assert component_summary(store, "lin1", 1)["label"] == "token a"


def test_examples_are_the_texts_containing_the_token(harvested) -> None:
    _, texts, _h, store = harvested
    page = activation_examples(store, "lin1", 3, limit=3, offset=1)
    holding = [i for i, t in enumerate(texts) if "c" in t.split()]
    assert page.total == min(5, len(holding))
    assert [e["text_id"] for e in page.items] == holding[1:4]  # ties: earliest texts first
    for e in page.items:
        words = texts[e["text_id"]].split()
        assert words[e["pos"]] == "c" and words.index("c") == e["pos"]
        assert e["token_ids"] == [
            WORDS.index(w) for w in words[e["start"] : e["start"] + len(e["ci"])]
        ]
        assert e["ci"] == [pytest.approx(1.0, abs=1e-4) if t == 3 else 0.0 for t in e["token_ids"]]


def test_dataset_attributions_equal_the_per_text_graph_sums(harvested) -> None:
    model, texts, h, store = harvested
    tok = word_tokenizer()
    expected: Counter[tuple[str, int, str, int]] = Counter()
    for t in texts:
        g = attribution_graph(
            model,
            torch.tensor([tok.encode(t, add_special_tokens=False)]),
            threshold=0.5,
            outputs=[],
        )
        for i, tgt in enumerate(g.nodes):
            for j, src in enumerate(g.nodes):
                if tgt.layer in model.layers and src.layer in model.layers and g.edges[i, j] != 0:
                    expected[(src.layer, src.c, tgt.layer, tgt.c)] += float(g.edges[i, j])
    got = {k: a.value for k, a in h.attributions.items()}
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, rel=1e-5)
    # by construction: lin1:c feeds lin2:c with edge 1 at each occurrence of token c
    n_c = sum(t.split().count("d") for t in texts)
    res = dataset_attributions(store, "lin2", 4, top_k=5, sign="abs")
    assert res["sources"][0]["layer"] == "lin1" and res["sources"][0]["c"] == 4
    assert res["sources"][0]["value"] == pytest.approx(n_c, rel=1e-4)
    assert res["sources"][0]["normalised"] == pytest.approx(1.0)
    assert dataset_attributions(store, "lin1", 4)["targets"][0]["c"] == 4
    assert dataset_attributions(store, "lin1", 4, sign="negative")["targets"] == []


def test_search_texts_pages_through_every_occurrence(harvested) -> None:
    _, texts, _h, store = harvested
    total = sum(t.count("a b") for t in texts)
    first = search_texts(store, "A B", limit=2)
    assert first.total == total and len(first.items) == min(2, total)
    rest = search_texts(store, "a b", limit=100, offset=2)
    for item in first.items + rest.items:
        text = texts[item["text_id"]]
        assert text[item["char_offset"] : item["char_offset"] + 3] == "a b"
        assert item["snippet"][item["snippet_offset"] :].startswith("a b")
    assert search_texts(store, "zzz").total == 0


def test_errors_say_what_is_valid_and_writes_are_atomic(harvested, tmp_path) -> None:
    _, _, h, store = harvested
    with pytest.raises(ValueError, match="valid layers: lin1, lin2"):
        component_summary(store, "lin3", 0)
    with pytest.raises(ValueError, match=r"valid: 0\.\.5"):
        activation_examples(store, "lin1", 6)
    with pytest.raises(FileNotFoundError, match="spd-harvest"):
        HarvestStore(tmp_path)
    path = write_harvest(tmp_path, h)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "harvest.sqlite"
    ]  # no temp file left behind
    tables = {
        r[0]
        for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")
    }
    assert tables == {
        "meta",
        "texts",
        "components",
        "token_stats",
        "examples",
        "cofiring",
        "attributions",
        "attribution_inflow",
        "labels",
    }


def test_top_k_cut_keeps_every_ranked_query_of_at_most_k_rows(harvested, tmp_path) -> None:
    """Dense random attributions stored whole and cut to each component's top k give identical
    queries."""
    from dataclasses import replace

    from spd_core.harvest import AttributionSum, _top_k_pairs

    _, _, h, _ = harvested
    keys = [(layer, c) for layer, n in h.layers.items() for c in range(n)]
    gen = torch.Generator().manual_seed(0)
    value = torch.randn(
        len(keys), len(keys), generator=gen, dtype=torch.float64
    )  # (target, source)
    present = torch.rand(len(keys), len(keys), generator=gen) < 0.7
    k = 2
    keep = _top_k_pairs(value, present, k)
    assert keep.sum() < present.sum()
    for t in range(
        len(keys)
    ):  # brute force: a kept pair is in its row's or column's top k by some score
        for s in range(len(keys)):
            if not present[t, s]:
                continue
            ranks = []
            for score in (value, -value, value.abs()):
                row = score[t][present[t]]
                col = score[:, s][present[:, s]]
                ranks += [int((row > score[t, s]).sum()), int((col > score[t, s]).sum())]
            assert bool(keep[t, s]) == (min(ranks) < k), (t, s)

    def stored(mask: torch.Tensor, name: str) -> HarvestStore:
        attrs = {
            (*keys[s], *keys[t]): AttributionSum(float(value[t, s]), abs(float(value[t, s])), 1)
            for t, s in mask.nonzero().tolist()
        }
        inflow_all = torch.where(present, value.abs(), torch.zeros_like(value)).sum(1)
        inflow = {keys[t]: float(inflow_all[t]) for t in range(len(keys)) if present[t].any()}
        run_dir = tmp_path / name
        run_dir.mkdir()
        write_harvest(run_dir, replace(h, attributions=attrs, attribution_inflow=inflow))
        return HarvestStore(run_dir)

    whole, cut = stored(present, "whole"), stored(keep, "cut")
    for layer, c in keys:
        for sign in ("positive", "negative", "abs"):
            for top in (1, k):
                assert dataset_attributions(cut, layer, c, top, sign) == dataset_attributions(
                    whole, layer, c, top, sign
                )


def test_sharded_over_processes_gives_the_serial_harvest(harvested) -> None:
    """The second route: three forked processes, each over a shard of the texts, then their counts
    added, against the one-process harvest of the fixture (top examples kept across shards, ties
    broken by text id as the streaming heap does)."""
    model, texts, serial, _ = harvested
    sharded = harvest(
        model,
        word_tokenizer(),
        texts,
        HarvestConfig(threshold=0.5, n_examples=5, window=2, batch_size=7),
        progress=False,
        processes=3,
    )
    assert sharded.n_tokens == serial.n_tokens and sharded.texts == serial.texts
    assert sharded.components == serial.components
    assert sharded.token_stats == serial.token_stats
    assert sharded.examples == serial.examples
    assert sharded.cofiring == serial.cofiring
    assert sharded.attributions.keys() == serial.attributions.keys()
    for key, s in serial.attributions.items():
        got = sharded.attributions[key]
        assert (got.count, got.value, got.abs_value) == (
            s.count,
            pytest.approx(s.value),
            pytest.approx(s.abs_value),
        )
    assert sharded.attribution_inflow == pytest.approx(serial.attribution_inflow)
