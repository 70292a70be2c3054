"""optimize_circuit over several prompts, through a real client: on the shipped demo run the
reported stochastic numbers equal masked forwards built by hand and the attached validation equals
validate_claim's; the agent's own prompts; input errors."""

import pytest
import torch
from mcp import Client

from spd_core.analysis.ci import compute_ci
from spd_core.keys import parse_component_key
from spd_core.masks import stochastic_masks
from spd_core.run import load_run
from spd_mcp.server.state import served_from_loaded
from tests.server.helpers import err, make_server, ok

pytestmark = pytest.mark.anyio
REGIMES = {"target", "stochastic", "adversarial", "ci", "alone"}


@pytest.fixture(scope="module")
def demo():
    return served_from_loaded(load_run("demo"))


async def finished(c: Client, view: dict) -> dict:
    while view["status"] in ("queued", "running"):
        view = await ok(c, "get_job", {"job_id": view["job_id"], "wait_s": 30})
    assert view["status"] == "done", view
    return view["result"]


def stochastic_by_hand(
    run, texts: list[str], targets: list[str], components: list[str], seed: int, n: int
):
    """Per prompt (mean p(target), share of samples with the target strictly on top): each prompt's
    natural CI from its own unpadded pass, the circuit's components kept at >= that CI, everything
    else and the delta uniform in [0, 1]; the prompts right-padded into one batch (seeded draws)."""
    model, tok = run.model, run.tokenizer
    ids = [tok.encode(t, add_special_tokens=False) for t in texts]
    tgt = [tok.encode(t, add_special_tokens=False)[0] for t in targets]
    seq = max(len(i) for i in ids)
    x = torch.tensor([i + [0] * (seq - len(i)) for i in ids])
    keys = [parse_component_key(k, model.layer_c()) for k in components]
    lower = {name: torch.zeros(len(ids), seq, info.C) for name, info in model.layers.items()}
    for b, row in enumerate(ids):
        ci = compute_ci(model, torch.tensor([row])).ci
        for key in keys:
            lower[key.layer][b, : len(row), key.c] = ci[key.layer][:, key.c]
    probs, hits = torch.zeros(len(ids)), torch.zeros(len(ids))
    torch.manual_seed(seed)
    with torch.no_grad():
        for _ in range(n):
            masks, delta = stochastic_masks(lower)
            out = model(x, masks=masks, delta_masks=delta).output
            for b, row in enumerate(ids):
                p = out[b, len(row) - 1].softmax(-1)
                top = p.topk(2)
                probs[b] += p[tgt[b]] / n
                hits[b] += (
                    float(int(top.indices[0]) == tgt[b] and top.values[1] < top.values[0]) / n
                )
    return probs.tolist(), hits.tolist()


async def test_demo_mechanism_circuit_numbers_equal_a_recomputation(demo) -> None:
    async with Client(make_server(demo)) as c:
        view = await ok(
            c,
            "optimize_circuit",
            {"mechanism": "induction", "n_prompts": 8, "n_heldout": 8, "steps": 100, "limit": 1000},
        )
        res = await finished(c, view)
        probes = [p for p in demo.probes if p.mechanism == "induction"][:8]
        again = await finished(
            c,
            await ok(
                c,
                "validate_claim",
                {
                    "components": [r["component"] for r in res["components"]],
                    "mechanism": "induction",
                    "exclude": [p.text for p in probes],
                    "n_examples": 8,
                    "n_controls": 8,
                },
            ),
        )
    assert res["mask"] == "stochastic" and res["mechanism"] == "induction" and res["n_prompts"] == 8
    assert set(res["regimes"]) == set(res["full"]) == set(res["heldout"]) == REGIMES
    assert res["total"] == len(res["components"]) == sum(res["l0"].values()) <= res["n_candidates"]
    gates = [r["gate"] for r in res["components"]]
    assert gates == sorted(gates, reverse=True) and all(0 < g <= 1 for g in gates)
    probs, hits = stochastic_by_hand(
        demo,
        [p.text for p in probes],
        [p.target_token for p in probes],
        [r["component"] for r in res["components"]],
        seed=0,
        n=8,
    )
    stochastic = res["regimes"]["stochastic"]
    assert stochastic["probs"] == pytest.approx(probs, abs=1e-4)
    assert stochastic["correct"] == hits
    assert stochastic["accuracy"] == pytest.approx(sum(hits) / len(hits))
    held = res["heldout"]
    assert (
        len(held["target"]["probs"]) == 8 and held["target"]["accuracy"] >= 0.75
    )  # the model does induction
    v = res["validation"]  # validate_claim's numbers on held-out probes, never the 8 optimised on
    assert v is not None and [r["regime"] for r in v["regimes"]] == [
        "deterministic",
        "stochastic",
        "adversarial",
    ]
    assert (
        v["n_controls"] == 8 and v["n_examples"] + v["n_dropped"] == 8 and v["validation_id"] >= 1
    )
    assert v["components"] == [r["component"] for r in res["components"]]
    assert {v["necessity"], v["sufficiency"], v["specificity"]} <= {
        "holds",
        "fails",
        "inconclusive",
    }
    held_texts = {r["text"] for r in v["examples"]}
    induction = {p.text for p in demo.probes if p.mechanism == "induction"}
    assert held_texts and held_texts <= induction and not held_texts & {p.text for p in probes}
    strip = {
        "summary",
        "validation_id",
        "behaviour",
    }  # validate_claim, called by hand, gives the same numbers
    assert {k: x for k, x in again.items() if k not in strip} == {
        k: x for k, x in v.items() if k not in strip
    }
    assert f"{res['total']} components" in res["summary"] and "held-out" in res["summary"]


async def test_agent_prompts_form_and_its_errors(lm) -> None:
    prompts = [
        {"text": "the cat sat on the", "target_token": "mat"},
        {"text": "the dog ran to the", "target_token": "park"},
    ]
    async with Client(make_server(lm)) as c:
        view = await ok(
            c,
            "optimize_circuit",
            {
                "prompts": prompts,
                "heldout_prompts": [prompts[0], {"text": "a dog sat on", "target_token": "the"}],
                "control_prompts": [{"text": "Paris is the capital of"}],
                "steps": 5,
                "limit": 3,
            },
        )
        res = await finished(c, view)
        one = await ok(
            c, "optimize_circuit", {"text": "the cat sat on the", "target_token": "mat", "steps": 3}
        )
        both = await err(
            c, "optimize_circuit", {"text": "the cat", "target_token": "mat", "prompts": prompts}
        )
        none = await err(c, "optimize_circuit", {"steps": 3})
        unknown = await err(c, "optimize_circuit", {"mechanism": "nope"})
        too_many = await err(c, "optimize_circuit", {"mechanism": "copying", "n_prompts": 3})
        no_target = await err(c, "optimize_circuit", {"text": "the cat"})
        bad_pos = await err(
            c,
            "optimize_circuit",
            {"prompts": [{"text": "the cat", "target_token": "mat", "position": 5}]},
        )
    assert res["mask"] == "stochastic" and res["mechanism"] is None and res["n_prompts"] == 2
    assert len(res["components"]) == min(3, res["total"]) and res["limit"] == 3
    assert (
        len(res["regimes"]["target"]["probs"]) == 2 and len(res["heldout"]["target"]["probs"]) == 1
    )
    assert res["loss"]["steps"] == 5
    v = res["validation"]  # the copy of an optimised prompt is not validated on
    assert v["n_controls"] == 1 and v["behaviour"] == "your 1 held-out prompts"
    assert v["n_examples"] + v["n_dropped"] == 1
    assert len(one["result"]["nodes"]) == min(100, one["result"]["total"])  # one-prompt form
    assert set(one["result"]["probs"]) == {"target", "ci", "stochastic", "adversarial", "unmasked"}
    assert "exactly one of 'text'" in both and "got text, prompts" in both and "got none" in none
    assert "valid: copying, ioi, recall" in unknown and "at most 2" in too_many
    assert "needs 'target_token'" in no_target and "valid: -2..1" in bad_pos
