"""validate_claim through a real MCP client, on the hand-built bigram LM whose circuits are known;
save_explanation takes its status and confidence from the validations it cites."""

import json
import sqlite3
from types import SimpleNamespace

import pytest
from mcp import Client

from spd_core.analysis.validation import held_out, validate
from spd_core.grader import probes_from_prompts
from spd_core.keys import ComponentKey
from spd_mcp.server.state import served_from_loaded
from tests.core.bigram_model import bigram_model, word_tokenizer
from tests.server.helpers import err, make_server, ok

pytestmark = pytest.mark.anyio

FILLER = ["x", "e", "b x", "x e", "e e", "x x", "e x", "b e", "x b", "e b", "b b", "x x x"]
PROMPTS = [{"text": f"{f} a", "target_token": "b", "mechanism": "ab"} for f in FILLER] + [
    {"text": f"{f} c", "target_token": "d", "mechanism": "cd"} for f in FILLER
]
AB = ["lin1:1", "lin2:1"]


@pytest.fixture
def served():
    loaded = SimpleNamespace(
        model=bigram_model(),
        tokenizer=word_tokenizer(),
        path=None,
        metrics={},
        target_spec=None,
        probes=PROMPTS,
    )
    return served_from_loaded(loaded)


async def _validate(c: Client, **args) -> dict:
    job = await ok(c, "validate_claim", {"wait_s": 30, **args})
    assert job["status"] == "done", job
    return job["result"]


async def test_the_known_circuit_holds_and_its_numbers_equal_the_core_on_the_same_examples(
    served, tmp_path
) -> None:
    async with Client(make_server(served, workspace=tmp_path)) as c:
        res = await _validate(
            c, components=AB, mechanism="ab", exclude=["x a"], n_examples=40, n_controls=12
        )
    # one answer (b) throughout: sufficiency is accuracy minus leak onto the cd controls, which
    # never say b
    assert (res["necessity"], res["specificity"], res["sufficiency"]) == ("holds", "holds", "holds")
    assert res["n_examples"] == 11 and res["n_controls"] == 12 and res["baseline"] == 1.0
    assert all(r["text"] != "x a" for r in res["examples"])
    # second route: the core function on the examples held_out picks, outside the server
    probes = probes_from_prompts(PROMPTS, word_tokenizer())
    excl = [probes[0].token_ids]
    mine, others = held_out(probes, "ab", excl, 40, 12, seed=0)
    v = validate(bigram_model(), mine, others, [ComponentKey("lin1", 1), ComponentKey("lin2", 1)])
    by = {r["regime"]: r for r in res["regimes"]}
    for regime, n in v.regimes.items():
        assert by[regime]["necessity"]["mean"] == pytest.approx(n.necessity.mean, abs=1e-9)
        assert by[regime]["broken"] == pytest.approx(n.broken)
        assert by[regime]["accuracy_kept"]["mean"] == pytest.approx(n.accuracy_kept.mean)
    assert [r["p_removed"] for r in res["examples"]] == pytest.approx(
        [o.p_after for o in v.regimes["deterministic"].removed]
    )
    # an excluded prompt of another mechanism (one a claim was selected on) is not a control either
    control = others[0]
    _, again = held_out(probes, "ab", [*excl, control.token_ids], 40, 12, seed=0)
    pool = sum(p.mechanism != "ab" for p in probes)
    assert control.token_ids not in [o.token_ids for o in again] and len(again) == min(12, pool - 1)


async def test_a_shortcut_is_refuted_and_the_explanation_says_so(served, tmp_path) -> None:
    examples = [{"text": p["text"], "target_token": p["target_token"]} for p in PROMPTS]
    base = {
        "subject_prompt": "x a",
        "behaviour": "next word after the last",
        "explanation": "the a->b pair",
        "components": [{"component": k, "role": "r"} for k in AB],
    }
    async with Client(make_server(served, workspace=tmp_path)) as c:
        shortcut = await _validate(c, components=AB, examples=examples, exclude=["x a"])
        assert shortcut["sufficiency"] == "fails" and shortcut["baseline"] == pytest.approx(12 / 23)
        full = await _validate(c, components=[*AB, "lin1:3", "lin2:3"], examples=examples)
        assert full["sufficiency"] == "holds" and full["sufficient_alone"] == "holds"
        assert full["validation_id"] == shortcut["validation_id"] + 1
        refuted = await ok(
            c,
            "save_explanation",
            {
                **base,
                "validation_ids": [shortcut["validation_id"]],
                "claims": ["sufficient"],
                "confidence": "high",
            },
        )
        assert refuted["status"] == "refuted" and refuted["confidence"] == "low"
        unvalidated = await ok(c, "save_explanation", {**base, "confidence": "high"})
        assert unvalidated["status"] == "unvalidated" and unvalidated["confidence"] == "low"
        wrong_set = await err(
            c, "save_explanation", {**base, "validation_ids": [full["validation_id"]]}
        )
        assert "validate exactly the set you explain" in wrong_set
        unknown = await err(c, "save_explanation", {**base, "validation_ids": [99]})
        assert "unknown validation_id 99" in unknown
    store = sqlite3.connect(tmp_path / "store.sqlite")
    stored = {vid: json.loads(d) for vid, d in store.execute("SELECT id, data FROM validations")}
    assert {vid: v["validation_id"] for vid, v in stored.items()} == {vid: vid for vid in stored}
    lines = [json.loads(x) for x in (tmp_path / "explanations.jsonl").read_text().splitlines()]
    assert [x["status"] for x in lines] == ["refuted", "unvalidated"]
    assert (
        lines[0]["agent_confidence"] == "high"
        and lines[0]["validations"][0]["sufficiency"] == "fails"
    )


async def test_bad_arguments_say_what_is_valid(served) -> None:
    async with Client(make_server(served)) as c:
        assert "exactly one of 'mechanism'" in await err(c, "validate_claim", {"components": AB})
        assert "valid: ab, cd" in await err(
            c, "validate_claim", {"components": AB, "mechanism": "induction"}
        )
        assert "no example is left" in await err(
            c,
            "validate_claim",
            {
                "components": AB,
                "examples": [{"text": "x a", "target_token": "b"}],
                "exclude": ["x a"],
            },
        )
        assert "regimes" in await err(
            c, "validate_claim", {"components": AB, "mechanism": "ab", "regimes": ["lucky"]}
        )


async def test_optimize_circuit_remove_finds_the_known_set_and_validates_it_on_held_out_probes(
    served, tmp_path
) -> None:
    args = {
        "mechanism": "ab",
        "remove": True,
        "n_prompts": 4,
        "n_heldout": 8,
        "steps": 120,
        "wait_s": 30,
    }
    async with Client(make_server(served, workspace=tmp_path)) as c:
        job = await ok(c, "optimize_circuit", args)
        assert job["status"] == "done", job
        res = job["result"]
        assert "valid: ab, cd" in await err(c, "optimize_circuit", {**args, "mechanism": "xy"})
    assert res["components"] and set(res["components"]) <= set(AB), res["components"]
    assert res["n_examples"] == 4 and res["n_controls"] == 6 and res["kept_behaviour"] < 0.3
    v = res["validation"]
    assert (v["necessity"], v["specificity"]) == ("holds", "holds") and v["n_examples"] == 8
    # second route: the same seeded samples outside the server; held-out never trained on
    probes = probes_from_prompts(PROMPTS, word_tokenizer())
    mine, others = held_out(probes, "ab", [], 4, 6, seed=0)  # the others: 1.5 x 4
    used = [p.token_ids for p in (*mine, *others)]
    held, controls = held_out(probes, "ab", used, 8, 9, seed=0)  # controls: 9/8 x 8
    keys = [ComponentKey(k.split(":")[0], int(k.split(":")[1])) for k in res["components"]]
    core = validate(bigram_model(), held, controls, keys)
    det = next(r for r in v["regimes"] if r["regime"] == "deterministic")
    assert det["necessity"]["mean"] == pytest.approx(core.regimes["deterministic"].necessity.mean)
    train_texts = {word_tokenizer().decode(p.token_ids) for p in (*mine, *others)}
    assert not {r["text"] for r in v["examples"]} & train_texts
