"""Edits outlive the server (reloaded from the workspace store) and export as plain transformers
models.

Second routes: the reloaded edit's outputs equal those before the restart; the exported directory,
loaded by transformers alone, gives the probabilities run_prompt gives under the edit.
"""

import os
import sqlite3
import sys
from pathlib import Path

import pytest
import torch
from mcp import Client, StdioServerParameters

from spd_mcp.server.store import Store
from tests.server.helpers import err, make_server, ok

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
TEXT = "the cat sat on the"
FINETUNE = {
    "components": ["1.mlp.down:3", "0.mlp.up:2"],
    "method": "finetune",
    "steps": 5,
    "lr": 0.05,
    "train": "both",
    "objective": {"token": "mat", "direction": "promote", "prompts": [TEXT]},
    "preserve_prompts": ["the dog ran to the"],
    "kl_bound": 10.0,
    "wait_s": 20,
}


def probs(result: dict, position: int = -1) -> dict[int, float]:
    return {t["token_id"]: t["prob"] for t in result["predictions"][position]["top"]}


async def uses(c: Client, edit_id: str) -> dict:
    """Every tool that takes edit_id, under that edit."""
    return {
        "prompt": await ok(
            c, "run_prompt", {"text": TEXT, "top_k": 100, "all_positions": True, "edit_id": edit_id}
        ),
        "ci": (
            await ok(
                c,
                "get_ci",
                {"text": TEXT, "threshold": 0.0, "top_k": 100, "limit": 500, "edit_id": edit_id},
            )
        )["entries"],
        "ablate": (
            await ok(
                c, "ablate", {"text": TEXT, "components": ["0.mlp.down:1"], "edit_id": edit_id}
            )
        )["regimes"],
        "steer": (
            await ok(
                c,
                "steer",
                {
                    "text": "the cat",
                    "scales": {"0.mlp.up:3": 0.0},
                    "max_new_tokens": 3,
                    "edit_id": edit_id,
                },
            )
        )["steered"],
    }


def close(a: object, b: object, tol: float = 1e-6) -> bool:
    """Equal structures whose floats agree to ``tol``."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b, strict=True))
    return a == b


def assert_same(before: dict, after: dict) -> None:
    for pos in range(len(before["prompt"]["predictions"])):
        a, b = probs(before["prompt"], pos), probs(after["prompt"], pos)
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-6 for k in a), pos
    assert close(before["ci"], after["ci"]) and close(before["ablate"], after["ablate"])
    assert before["steer"] == after["steer"]


async def test_edits_are_reloaded_by_a_new_server_on_the_same_workspace(lm, tmp_path: Path) -> None:
    async with Client(make_server(lm, tmp_path)) as c:
        ft = (await ok(c, "edit_component", FINETUNE))["result"]
        rm = (
            await ok(
                c,
                "edit_component",
                {"components": ["0.mlp.down:1", "1.attn.o:5"], "method": "remove"},
            )
        )["result"]
        before = {e: await uses(c, e) for e in (ft["edit_id"], rm["edit_id"])}
        base = await ok(c, "run_prompt", {"text": TEXT, "top_k": 100})
    async with Client(make_server(lm, tmp_path)) as c:
        after = {e: await uses(c, e) for e in before}
        new = (
            await ok(
                c,
                "edit_component",
                {"components": ["0.mlp.up:1"], "method": "scale", "factor": 2.0},
            )
        )["result"]
        status = await ok(c, "server_status")
    for e in before:
        assert_same(before[e], after[e])
    assert probs(after[ft["edit_id"]]["prompt"]) != probs(base)  # the edit really changes the model
    assert new["edit_id"] not in before  # fresh ids do not collide with reloaded ones
    assert status["events_logged"] > 0


async def test_edits_of_another_run_are_not_reloaded(lm, toy, tmp_path: Path) -> None:
    async with Client(make_server(lm, tmp_path)) as c:
        await ok(c, "edit_component", {"components": ["0.mlp.down:1"], "method": "remove"})
    async with Client(make_server(toy, tmp_path)) as c:
        assert "unknown edit_id 'e1'; known edit ids: none yet" in await err(
            c, "run_prompt", {"features": [0.0] * 5, "edit_id": "e1"}
        )


async def test_a_store_from_before_edit_tensors_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE edits (id TEXT PRIMARY KEY, params TEXT NOT NULL, data TEXT NOT NULL, "
            "created REAL NOT NULL)"
        )
        conn.execute("INSERT INTO edits VALUES ('e1', '{}', '{}', 0)")
    store = await Store.open(path)
    try:
        await store.put_edit("e2", {}, {}, b"blob")
        assert await store.edit_blobs() == [("e2", b"blob")]
        assert await store.count("edits") == 2
    finally:
        await store.close()


async def test_exported_directory_loads_with_transformers_and_matches_run_prompt(
    lm, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    async with Client(make_server(lm, tmp_path)) as c:
        ft = (await ok(c, "edit_component", FINETUNE))["result"]
        edited = await ok(
            c,
            "run_prompt",
            {"text": TEXT, "top_k": 100, "all_positions": True, "edit_id": ft["edit_id"]},
        )
        base = await ok(c, "run_prompt", {"text": TEXT, "top_k": 100})
        exp = await ok(c, "export_edit", {"edit_id": ft["edit_id"], "name": "promote_mat"})
        again = await err(c, "export_edit", {"edit_id": ft["edit_id"], "name": "promote_mat"})
        replaced = await ok(
            c, "export_edit", {"edit_id": ft["edit_id"], "name": "promote_mat", "overwrite": True}
        )
        escapes = [
            await err(c, "export_edit", {"edit_id": ft["edit_id"], "name": n})
            for n in ("../x", "/tmp/x", "a/b", ".hidden")
        ]
        unknown = await err(c, "export_edit", {"edit_id": "e9"})
    out = tmp_path / "exports" / "promote_mat"
    assert exp["path"] == str(out.resolve()) and exp["workspace_path"] == "exports/promote_mat"
    assert (
        "config.json" in exp["files"]
        and "model.safetensors" in exp["files"]
        and "tokenizer.json" in exp["files"]
    )
    assert set(exp["layers"]) == {"1.mlp.down", "0.mlp.up"} and replaced["files"] == exp["files"]
    assert "already exists" in again and "overwrite" in again
    assert all("valid" in m for m in escapes) and "unknown edit_id 'e9'" in unknown
    assert sorted(p.name for p in (tmp_path / "exports").iterdir()) == [
        "promote_mat"
    ]  # nothing else written

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = lm.tokenizer(TEXT, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        p = torch.softmax(model(ids).logits[0].double(), -1)
    for pos, row in enumerate(edited["predictions"]):
        for t in row["top"]:
            assert abs(p[pos, t["token_id"]].item() - t["prob"]) <= 1e-6, (pos, t)
    assert any(
        abs(p[-1, k].item() - v) > 1e-4 for k, v in probs(base).items()
    )  # not the base model


async def test_export_needs_a_workspace_and_a_transformers_model(lm, toy, tmp_path: Path) -> None:
    async with Client(make_server(lm)) as c:
        rm = (await ok(c, "edit_component", {"components": ["0.mlp.down:1"], "method": "remove"}))[
            "result"
        ]
        assert "--workspace" in await err(c, "export_edit", {"edit_id": rm["edit_id"]})
    async with Client(make_server(toy, tmp_path)) as c:
        rm = (await ok(c, "edit_component", {"components": ["linear2:1"], "method": "remove"}))[
            "result"
        ]
        assert "needs a transformers model" in await err(
            c, "export_edit", {"edit_id": rm["edit_id"]}
        )


@pytest.mark.slow
async def test_edit_survives_a_server_process_restart(tmp_path: Path) -> None:
    """The real CLI over stdio, stopped and started again on the same workspace."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "tests.server.serve_tiny",
            "lm",
            "--workspace",
            str(tmp_path),
            "--device",
            "cpu",
        ],
        cwd=str(ROOT),
        env=env,
    )
    async with Client(params) as c:
        edit_id = (await ok(c, "edit_component", FINETUNE))["result"]["edit_id"]
        before = await uses(c, edit_id)
    async with Client(params) as c:
        after = await uses(c, edit_id)
    assert_same(before, after)
    log = (tmp_path / "server.log").read_text()
    assert f"reloaded 1 stored edits: {edit_id}" in log
