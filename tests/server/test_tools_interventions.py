"""ablate, steer and edit_component through a real client; edits checked against ablation and
run_prompt."""

import copy
import math

import pytest
import torch
from mcp import Client

from tests.server.helpers import err, make_server, ok
from tests.server.runs import lm_run

pytestmark = pytest.mark.anyio
TEXT = "the cat sat on the"
SET = ["0.mlp.down:1", "0.mlp.down:2", "1.mlp.down:0", "1.mlp.down:3", "1.attn.o:5"]


def probs_of(top: list[dict]) -> dict[int, float]:
    return {t["token_id"]: t["prob"] for t in top}


async def test_deterministic_remove_equals_run_prompt_under_a_remove_edit(lm) -> None:
    async with Client(make_server(lm)) as c:
        base = await ok(c, "run_prompt", {"text": TEXT, "top_k": 100})
        abl = await ok(c, "ablate", {"text": TEXT, "components": SET, "token": "mat", "top_k": 10})
        edit = await ok(
            c, "edit_component", {"components": SET, "method": "remove", "preserve_prompts": [TEXT]}
        )
        edit_id = edit["result"]["edit_id"]
        edited = await ok(c, "run_prompt", {"text": TEXT, "top_k": 100, "edit_id": edit_id})
        again = await ok(c, "run_prompt", {"text": TEXT, "top_k": 100})
        base_all = await ok(c, "run_prompt", {"text": TEXT, "top_k": 100, "all_positions": True})
        edited_all = await ok(
            c, "run_prompt", {"text": TEXT, "top_k": 100, "all_positions": True, "edit_id": edit_id}
        )
    after = probs_of(edited["predictions"][-1]["top"])
    before = probs_of(base["predictions"][-1]["top"])
    (det,) = abl["regimes"]
    assert det["regime"] == "deterministic"
    for t in det["after"]:
        assert t["prob"] == pytest.approx(after[t["token_id"]], abs=1e-5)
    for t in abl["before"]:
        assert t["prob"] == pytest.approx(before[t["token_id"]], abs=1e-6)
    mat = lm.tokenizer.convert_tokens_to_ids("mat")
    assert det["token_prob_after"] == pytest.approx(after[mat], abs=1e-5)
    assert det["token_prob_change"] == pytest.approx(after[mat] - before[mat], abs=1e-5)
    kl = sum(p * math.log(p / after[i]) for i, p in before.items())  # full vocab is 39 < top_k
    assert det["kl"] == pytest.approx(kl, abs=1e-5) and det["kl"] > 1e-6
    kls = [
        sum(p * math.log(p / probs_of(e["top"])[i]) for i, p in probs_of(b["top"]).items())
        for b, e in zip(base_all["predictions"], edited_all["predictions"], strict=True)
    ]
    assert edit["result"]["kl_preserve"] == pytest.approx(sum(kls) / len(kls), abs=1e-5)
    assert again["predictions"] == base["predictions"]  # the base model is unchanged


async def test_ablate_reports_every_regime_and_nodes(lm) -> None:
    async with Client(make_server(lm)) as c:
        every = await ok(
            c,
            "ablate",
            {
                "text": TEXT,
                "components": SET,
                "regime": "all",
                "n_samples": 4,
                "adversarial_steps": 3,
            },
        )
        listed = await ok(
            c,
            "ablate",
            {
                "text": TEXT,
                "components": SET,
                "regime": ["stochastic", "deterministic"],
                "n_samples": 4,
            },
        )
        node_all = await ok(
            c,
            "ablate",
            {
                "text": TEXT,
                "nodes": [
                    f"{k.rsplit(':', 1)[0]}:{p}:{k.rsplit(':', 1)[1]}"
                    for k in SET
                    for p in range(5)
                ],
            },
        )
        node_last = await ok(
            c,
            "ablate",
            {
                "text": TEXT,
                "nodes": [f"{k.rsplit(':', 1)[0]}:-1:{k.rsplit(':', 1)[1]}" for k in SET],
            },
        )
        keep = await ok(c, "ablate", {"text": TEXT, "components": SET, "mode": "keep_only"})
    assert [r["regime"] for r in every["regimes"]] == ["deterministic", "stochastic", "adversarial"]
    assert [r["regime"] for r in listed["regimes"]] == ["stochastic", "deterministic"]
    assert (
        listed["regimes"][1] == every["regimes"][0] and listed["regimes"][0] == every["regimes"][1]
    )
    # a component is every (position, component) node
    assert node_all["regimes"][0] == every["regimes"][0]
    assert node_last["regimes"][0]["kl"] != every["regimes"][0]["kl"]
    assert (
        keep["mode"] == "keep_only"
        and keep["regimes"][0]["kl"] != every["regimes"][0]["kl"]
        and keep["regimes"][0]["kl"] >= 0
    )


async def test_keep_only_in_every_regime_and_the_adversary_is_the_worst_case_for_the_claim(
    lm,
) -> None:
    args = {
        "text": TEXT,
        "components": SET,
        "regime": "all",
        "n_samples": 4,
        "adversarial_steps": 8,
        "token": "mat",
    }
    async with Client(make_server(lm)) as c:
        keep = await ok(c, "ablate", {**args, "mode": "keep_only"})
        remove = await ok(c, "ablate", {**args, "mode": "remove"})
        zero_steps = await ok(
            c,
            "ablate",
            {**args, "mode": "keep_only", "regime": "adversarial", "adversarial_steps": 1},
        )
    by_keep = {r["regime"]: r for r in keep["regimes"]}
    by_remove = {r["regime"]: r for r in remove["regimes"]}
    assert set(by_keep) == {"deterministic", "stochastic", "adversarial"}
    # keep_only: the adversary pushes the output away from the target's; remove: it pulls it back
    assert by_keep["adversarial"]["kl"] > zero_steps["regimes"][0]["kl"]
    assert by_keep["adversarial"]["kl"] > by_keep["stochastic"]["kl"]
    assert by_remove["adversarial"]["kl"] < by_remove["stochastic"]["kl"]


async def test_steer_zero_equals_deterministic_remove_and_one_changes_nothing(lm) -> None:
    scales = dict.fromkeys(SET, 0.0)
    async with Client(make_server(lm)) as c:
        zero = await ok(
            c, "steer", {"text": TEXT, "scales": scales, "max_new_tokens": 4, "top_k": 10}
        )
        one = await ok(
            c, "steer", {"text": TEXT, "scales": dict.fromkeys(SET, 1.0), "max_new_tokens": 4}
        )
        abl = await ok(c, "ablate", {"text": TEXT, "components": SET, "top_k": 10})
        sampled = await ok(
            c,
            "steer",
            {
                "text": TEXT,
                "scales": scales,
                "max_new_tokens": 3,
                "temperature": 1.0,
                "n_samples": 3,
                "seed": 5,
            },
        )
        sampled2 = await ok(
            c,
            "steer",
            {
                "text": TEXT,
                "scales": scales,
                "max_new_tokens": 3,
                "temperature": 1.0,
                "n_samples": 3,
                "seed": 5,
            },
        )
    assert [(t["token_id"], pytest.approx(t["prob"], abs=1e-5)) for t in zero["steered_top"]] == [
        (t["token_id"], t["prob"]) for t in abl["regimes"][0]["after"]
    ]
    assert one["steered"] == one["baseline"] and all(
        abs(ch["logit_change"]) < 1e-5 for ch in one["logit_changes"]
    )
    assert len(zero["baseline"][0]["token_ids"]) == 4
    assert len(sampled["steered"]) == 3 and sampled == sampled2  # seeded


async def test_finetune_edit_is_a_job_that_moves_the_objective(lm) -> None:
    args = {
        "components": ["1.mlp.down:0", "1.mlp.down:3"],
        "method": "finetune",
        "train": "both",
        "steps": 15,
        "lr": 0.05,
        "kl_bound": 10.0,
        "objective": {"token": "mat", "direction": "promote", "prompts": [TEXT]},
        "preserve_prompts": ["the dog ran to the"],
    }
    async with Client(make_server(lm)) as c:
        view = await ok(c, "edit_component", args)
        res = view["result"]
        after = await ok(c, "run_prompt", {"text": TEXT, "top_k": 100, "edit_id": res["edit_id"]})
        ci_base = await ok(
            c, "get_ci", {"text": TEXT, "threshold": 0.0, "top_k": 100, "limit": 500}
        )
        ci_edit = await ok(
            c,
            "get_ci",
            {"text": TEXT, "threshold": 0.0, "top_k": 100, "limit": 500, "edit_id": res["edit_id"]},
        )
        msg = await err(c, "ablate", {"text": TEXT, "components": SET, "edit_id": "e99"})
    mat = lm.tokenizer.convert_tokens_to_ids("mat")
    assert view["status"] == "done" and res["token"] == "mat"
    assert res["token_prob_after"] > res["token_prob_before"]
    assert probs_of(after["predictions"][-1]["top"])[mat] == pytest.approx(
        res["token_prob_after"], abs=1e-5
    )
    assert set(res["weight_change"]) == {"1.mlp.down"} and res["weight_change"]["1.mlp.down"] > 0
    assert res["kl_heldout"] is not None and res["kl_preserve"] >= 0
    assert (
        ci_edit["entries"] != ci_base["entries"]
    )  # trained read vectors V change inner activations and CI
    assert f"unknown edit_id 'e99'; known edit ids: {res['edit_id']}" in msg


async def test_scale_edit_of_one_changes_nothing(lm) -> None:
    async with Client(make_server(lm)) as c:
        view = await ok(
            c,
            "edit_component",
            {"components": SET, "method": "scale", "factor": 1.0, "preserve_prompts": [TEXT]},
        )
    res = view["result"]
    assert res["kl_preserve"] == pytest.approx(0.0, abs=1e-9) and res[
        "kl_heldout"
    ] == pytest.approx(0.0, abs=1e-9)
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in res["weight_change"].values())


@pytest.mark.parametrize(
    ("tool", "args", "needle"),
    [
        ("ablate", {"text": TEXT, "components": ["9.mlp.up:1"]}, "valid layers"),
        ("ablate", {"text": TEXT, "components": ["0.mlp.up:8"]}, "valid: 0..7"),
        ("ablate", {"text": TEXT, "nodes": ["0.mlp.up:5:1"]}, "valid: -5..4"),
        ("ablate", {"text": TEXT, "components": SET, "position": 5}, "valid: -5..4"),
        ("ablate", {"text": TEXT, "components": SET, "token": "mat cat"}, "must be exactly one"),
        ("ablate", {"text": TEXT}, "give at least one component"),
        ("ablate", {"text": TEXT, "components": SET, "regime": []}, "valid: deterministic"),
        ("ablate", {"text": TEXT, "components": SET, "edit_id": "e1"}, "unknown edit_id 'e1'"),
        ("steer", {"text": TEXT, "scales": {}}, "give at least one component"),
        ("steer", {"text": TEXT, "scales": {"0.mlp.up:9": 0.0}}, "valid: 0..7"),
        ("steer", {"text": TEXT, "scales": {"0.mlp.up:1": 0.0}, "edit_id": "x"}, "unknown edit_id"),
        (
            "edit_component",
            {"components": ["0.mlp.up:1"], "method": "finetune", "preserve_prompts": [TEXT]},
            "needs an objective",
        ),
        (
            "edit_component",
            {
                "components": ["0.mlp.up:1"],
                "method": "finetune",
                "objective": {"token": "mat", "direction": "promote", "prompts": [TEXT]},
            },
            "at least one preserve prompt",
        ),
        (
            "edit_component",
            {
                "components": ["0.mlp.up:1"],
                "method": "finetune",
                "preserve_prompts": [TEXT],
                "objective": {"token": "mat cat", "direction": "promote", "prompts": [TEXT]},
            },
            "must be exactly one",
        ),
        ("edit_component", {"components": ["x:1"], "method": "remove"}, "valid layers"),
        (
            "run_prompt",
            {"text": TEXT, "edit_id": "e5"},
            "unknown edit_id 'e5'; known edit ids: none yet",
        ),
    ],
)
async def test_intervention_errors(lm, tool, args, needle) -> None:
    async with Client(make_server(lm)) as c:
        assert needle in await err(c, tool, args)


async def test_toy_edits_apply_to_run_prompt_and_lm_only_tools_say_so(toy) -> None:
    x = [1.0, 0.0, 0.5, 0.0, 0.25]
    async with Client(make_server(toy)) as c:
        view = await ok(
            c, "edit_component", {"components": ["linear2:1", "linear2:3"], "method": "remove"}
        )
        edited = await ok(c, "run_prompt", {"features": x, "edit_id": view["result"]["edit_id"]})
        base = await ok(c, "run_prompt", {"features": x})
        for tool, args in [
            ("ablate", {"text": "a", "components": ["linear1:0"]}),
            ("steer", {"text": "a", "scales": {"linear1:0": 0}}),
        ]:
            assert "needs a language model" in await err(c, tool, args)
    model = toy.model
    with torch.no_grad():
        w = model.target.linear2.weight.clone()
        for c_ in (1, 3):
            w -= torch.outer(model.comp("linear2").U[c_], model.comp("linear2").V[:, c_])
        h = model.target.linear1(torch.tensor([x]))
        ref = torch.relu(h @ w.T + model.target.linear2.bias)[0].tolist()
    assert (
        edited["outputs"] == pytest.approx(ref, abs=1e-5) and edited["outputs"] != base["outputs"]
    )


async def test_non_finite_weights_are_named(lm) -> None:
    broken = lm_run()
    broken.model = copy.deepcopy(lm.model)
    with torch.no_grad():
        broken.model.target.model.layers[1].mlp.down_proj.weight[0, 0] = math.inf
    async with Client(make_server(broken)) as c:
        for tool, args in [
            ("get_ci", {"text": TEXT}),
            ("ablate", {"text": TEXT, "components": SET}),
            ("get_attributions", {"text": TEXT}),
        ]:
            msg = await err(c, tool, args)
            assert "non-finite" in msg and "1.mlp.down" in msg, (tool, msg)
