"""Tokenizer view (single-token targets) and the SQLite store, without a server."""

from pathlib import Path

import pytest

from spd_mcp.server.store import Store
from spd_mcp.server.tokens import TokenizerView
from tests.server.runs import word_tokenizer


def test_single_token_targets_and_their_errors() -> None:
    tok = TokenizerView(word_tokenizer())
    assert tok.single_token("cat") == tok.encode("cat")[0]
    with pytest.raises(ValueError) as info:
        tok.single_token("cat dog")
    msg = str(info.value)
    assert (
        "tokenizes to 2 tokens" in msg and "must be exactly one" in msg and "['cat', 'dog']" in msg
    )
    assert tok.pieces(tok.encode("the cat")) == ["the", "cat"]
    with pytest.raises(ValueError, match="at most 3"):
        tok.tokenize("the cat sat on", max_tokens=3)
    with pytest.raises(ValueError, match="0 tokens"):
        tok.tokenize("", max_tokens=3)


def test_raw_tokenizers_object_works_too() -> None:
    raw = word_tokenizer().backend_tokenizer
    view, hf = TokenizerView(raw), TokenizerView(word_tokenizer())
    assert (
        view.encode("the cat sat") == hf.encode("the cat sat") and view.vocab_size == hf.vocab_size
    )


@pytest.mark.anyio
async def test_store_round_trips(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "store.sqlite")
    pid = await store.add_prompt("the cat", [1, 3])
    gid = await store.add_graph(
        {"tokens": ["a"], "edges": []}, kind="attributions", prompt_id=pid, params={"k": 1}
    )
    assert await store.get_graph(gid) == {"tokens": ["a"], "edges": []}
    with pytest.raises(ValueError, match=f"unknown graph_id {gid + 1}; stored graph ids: {gid}"):
        await store.get_graph(gid + 1)
    await store.put_edit("e1", {"method": "scale"}, {"factor": 0.0})
    assert await store.get_edit("e1") == {"factor": 0.0}
    with pytest.raises(ValueError, match="stored edits: e1"):
        await store.get_edit("e2")
    await store.add_circuit({"nodes": []}, {"steps": 10}, graph_id=gid, prompt_id=pid)
    await store.add_intervention("ablate", {"mode": "remove"}, {"kl": 0.1})
    await store.put_job(
        "j1", "optimize_circuit", "done", {"steps": 10}, 1.0, {"summary": "s"}, None, 2.0
    )
    assert (await store.get_job("j1"))["result"] == {"summary": "s"} and await store.get_job(
        "j2"
    ) is None
    for i in range(3):
        await store.add_tool_call(i, "run_prompt", {"text": "x"}, 1.0, "ok", None)
    assert await store.count("tool_calls") == 3 and await store.count("circuits") == 1
    await store.close()
    reopened = await Store.open(tmp_path / "store.sqlite")
    assert await reopened.graph_ids() == [gid] and await reopened.count("tool_calls") == 3
    await reopened.close()
    import sqlite3

    assert (
        sqlite3.connect(tmp_path / "store.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
        == "wal"
    )


@pytest.mark.anyio
async def test_reads_by_id_name_the_valid_ids_in_each_table() -> None:
    """The three by-id reads share one lookup (Store._get_data): each names its own ids, empty or
    not."""
    store = await Store.open(None)
    empty = {
        "graph": (store.get_graph(1), "unknown graph_id 1; stored graph ids: none yet"),
        "validation": (store.get_validation(1), "unknown validation_id 1; valid: none yet"),
        "edit": (store.get_edit("e1"), "unknown edit_id 'e1'; stored edits: none"),
    }
    for read, message in empty.values():
        with pytest.raises(ValueError) as info:
            await read
        assert str(info.value).startswith(message), str(info.value)
    vids = [await store.add_validation({"n": i}, {"verdict": i}) for i in range(3)]
    await store.set_validation(vids[1], {"verdict": "updated"})
    assert [await store.get_validation(v) for v in vids] == [
        {"verdict": 0},
        {"verdict": "updated"},
        {"verdict": 2},
    ]
    with pytest.raises(ValueError) as info:
        await store.get_validation(vids[-1] + 1)
    assert str(info.value) == f"unknown validation_id {vids[-1] + 1}; valid: {vids}"
    for name in ("e1", "e2"):
        await store.put_edit(name, {}, {"edit": name})
    assert await store.get_edit("e2") == {"edit": "e2"}
    with pytest.raises(ValueError) as info:
        await store.get_edit("e3")
    listed = str(info.value).removeprefix("unknown edit_id 'e3'; stored edits: ").split(", ")
    assert sorted(listed) == ["e1", "e2"]
    await store.close()


def test_a_loaded_run_adapts_to_a_served_run(toy) -> None:
    from dataclasses import dataclass

    from spd_mcp.server.state import served_from_loaded

    @dataclass
    class Loaded:  # the shape of spd_core.run.LoadedRun
        model: object
        tokenizer: object
        target_spec: dict
        config: dict
        metrics: dict
        path: str
        probes: list

    served = served_from_loaded(
        Loaded(
            toy.model,
            None,
            {"name": "tms_5-2", "n_features": 5},
            {},
            {"faithfulness": 0.1},
            "/tmp/runs/tms",
            [{"text": "x", "target_token": "y", "mechanism": "m"}],
        )
    )
    assert (
        served.name == "tms"
        and served.input_dim == 5
        and not served.is_lm
        and served.metrics == {"faithfulness": 0.1}
    )
    assert (
        served.probes[0].mechanism == "m"
        and served.path == Path("/tmp/runs/tms")
        and not served.has_harvest
    )


@pytest.mark.parametrize("hf", [True, False])
def test_unknown_words_are_an_error_naming_them(hf: bool) -> None:
    """NUL, emoji and words outside a word-level vocabulary would all read as [UNK]: an error
    instead, naming them, showing the split and listing the vocabulary (39 words here)."""
    tok = TokenizerView(word_tokenizer() if hf else word_tokenizer().backend_tokenizer)
    with pytest.raises(ValueError) as info:
        tok.tokenize("The cat sat on the capitol \x00 \U0001f600", max_tokens=64)
    msg = str(info.value)
    assert (
        "3 word(s) outside the tokenizer's vocabulary: 'The', 'capitol', '\\x00'" not in msg
    )  # 4, not 3
    assert (
        "4 word(s) outside the tokenizer's vocabulary: 'The', 'capitol', '\\x00', '\U0001f600'"
        in msg
    ), msg
    assert "('the' is in it)" in msg
    assert "\"'capitol': unknown\"" in msg and "'cat'" in msg  # the split
    assert (
        "Valid words (38, whitespace-separated, case-sensitive): the a cat dog" in msg
    )  # [UNK] left out
    assert tok.tokenize("the cat sat", max_tokens=64) == tok.encode("the cat sat")
    with pytest.raises(ValueError, match="'Paris!' is not in the tokenizer's vocabulary"):
        tok.single_token("Paris!")


def test_the_demo_tokenizer_names_unknown_words() -> None:
    from tokenizers import Tokenizer

    from spd_core.run import DEMO_RUN

    tok = TokenizerView(Tokenizer.from_file(str(DEMO_RUN / "tokenizer" / "tokenizer.json")))
    with pytest.raises(ValueError) as info:
        tok.tokenize("Paris is the capital of", max_tokens=64)
    assert "outside the tokenizer's vocabulary: 'Paris'" in str(info.value) and "'<unk>'" in str(
        info.value
    )
    assert len(tok.tokenize("the capital of", max_tokens=64)) == 3
