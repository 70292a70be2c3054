"""The contract (spd_mcp.contract) and the server's registered tools are the same: one walk over
each, compared name by name. The server side is what a real MCP client lists; the contract side
is computed from the contract's models alone. A tool on one side only fails the test."""

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import anyio
import pytest
from mcp import Client
from pydantic import BaseModel, Field

from spd_core.analysis import ablation, regimes
from spd_core.analysis import validation as core_validation
from spd_mcp import contract
from spd_mcp.contract import circuits, interventions, records
from spd_mcp.contract.schemas import input_schema, output_schema
from spd_mcp.contract.spec import ToolContract
from spd_mcp.contract.wire import JobView, LongInput
from tests.server.helpers import make_server
from tests.server.runs import lm_run


def contract_side(tools: Sequence[ToolContract]) -> dict[str, dict[str, Any]]:
    return {
        t.name: {
            "title": t.title,
            "description": t.description,
            "annotations": {"read_only_hint": True, "open_world_hint": False}
            if t.read_only
            else {
                "read_only_hint": False,
                "destructive_hint": t.destructive,
                "open_world_hint": False,
                **({"idempotent_hint": True} if t.idempotent else {}),
            },
            "input_schema": input_schema(t.input_model),
            "output_schema": output_schema(t.result_model),
        }
        for t in tools
    }


async def server_side(run: Any) -> dict[str, dict[str, Any]]:
    async with Client(make_server(run)) as client:
        listed = (await client.list_tools()).tools
    return {
        t.name: {
            "title": t.title,
            "description": t.description,
            "annotations": t.annotations.model_dump(exclude_none=True) if t.annotations else None,
            "input_schema": t.input_schema,
            "output_schema": t.output_schema,
        }
        for t in listed
    }


def differences(
    contract_tools: Mapping[str, dict[str, Any]], served: Mapping[str, dict[str, Any]]
) -> list[str]:
    """Every way the two sides differ: tools on one side only, then fields that differ."""
    out = [f"{n}: in the contract, not served" for n in sorted(set(contract_tools) - set(served))]
    out += [f"{n}: served, not in the contract" for n in sorted(set(served) - set(contract_tools))]
    for name in sorted(set(contract_tools) & set(served)):
        for key, want in contract_tools[name].items():
            if served[name].get(key) != want:
                out.append(f"{name}: {key} differs")
    return out


@pytest.fixture(scope="module")
def served() -> dict[str, dict[str, Any]]:
    return anyio.run(server_side, lm_run())


def test_the_server_serves_exactly_the_contract(served: dict[str, dict[str, Any]]) -> None:
    ours = contract_side(contract.TOOLS)
    problems = differences(ours, served)
    assert not problems, "the server and spd_mcp.contract differ:\n" + "\n".join(problems)
    assert len(served) == len(contract.TOOLS) == len(contract.TOOL_NAMES) >= 25


def test_a_tool_on_one_side_only_is_found(served: dict[str, dict[str, Any]]) -> None:
    ours = contract_side(contract.TOOLS)
    fewer = {k: v for k, v in ours.items() if k != "steer"}
    assert differences(fewer, served) == ["steer: served, not in the contract"]
    more = {**ours, "new_tool": ours["steer"]}
    assert differences(more, served) == ["new_tool: in the contract, not served"]
    changed = {**ours, "get_ci": {**ours["get_ci"], "description": "other"}}
    assert differences(changed, served) == ["get_ci: description differs"]


def test_groups_and_names_come_from_the_entries() -> None:
    assert list(contract.TOOL_GROUPS) == list(contract.GROUPS)
    grouped = [n for names in contract.TOOL_GROUPS.values() for n in names]
    assert sorted(grouped) == sorted(contract.TOOL_NAMES)
    assert len(set(contract.TOOL_NAMES)) == len(contract.TOOL_NAMES)
    assert {"update_research_log", "get_job"} <= contract.RECORD_TOOLS
    assert "get_ci" not in contract.RECORD_TOOLS
    assert contract.bare_tool_name(contract.claude_tool_name("get_ci")) == "get_ci"


def test_long_tools_name_their_job_results() -> None:
    for t in contract.TOOLS:
        long = issubclass(t.input_model, LongInput)
        assert long == bool(t.job_results), (
            f"{t.name}: a job (LongInput) needs job_results, only a job"
        )
        if long:
            assert t.result_model is JobView, t.name
            for model in t.job_results:
                assert "summary" in model.model_fields, (t.name, model.__name__)


def test_literals_equal_the_cores() -> None:
    """The contract cannot import spd_core, so it states the names the core uses; they must
    agree."""
    assert get_args(interventions.AblationRegime) == get_args(ablation.AblationRegime)
    assert interventions.ABLATION_REGIMES == core_validation.REGIMES
    assert get_args(records.Claim) == get_args(core_validation.Claim)
    probs = circuits.CircuitResult.model_fields["probs"].description or ""
    assert probs.endswith(", ".join(regimes.REGIMES))


async def finished_results(run: Any) -> dict[str, list[dict[str, Any]]]:
    """One small call of every form of every long tool, each job's result once done."""
    ex = [{"text": "the cat sat on the", "target_token": "mat"}]
    async with Client(make_server(run)) as client:
        info = (await client.call_tool("get_model_info", {})).structured_content or {}
        comp = f"{info['layers'][0]['layer']}:0"
        mech = next(
            iter(
                (await client.call_tool("list_probe_prompts", {})).structured_content["mechanisms"]
            )
        )
        calls = [
            ("find_components", {"examples": ex, "method": "ci"}),
            ("optimize_circuit", {"text": ex[0]["text"], "target_token": "mat", "steps": 2}),
            ("optimize_circuit", {"mechanism": mech, "n_prompts": 1, "n_heldout": 1, "steps": 2}),
            ("edit_component", {"components": [comp], "method": "remove"}),
            (
                "validate_claim",
                {"components": [comp], "mechanism": mech, "n_examples": 2, "n_controls": 1},
            ),
            (
                "optimize_circuit",
                {"mechanism": mech, "remove": True, "n_prompts": 2, "n_heldout": 1, "steps": 10},
            ),
        ]
        out: dict[str, list[dict[str, Any]]] = {}
        for tool, args in calls:
            r = await client.call_tool(tool, {**args, "wait_s": 30})
            assert not r.is_error, (tool, r.content)
            view = JobView.model_validate(r.structured_content)
            while view.status in ("queued", "running"):
                got = await client.call_tool("get_job", {"job_id": view.job_id, "wait_s": 30})
                view = JobView.model_validate(got.structured_content)
            assert view.status == "done" and view.result is not None, (tool, view.error)
            out.setdefault(tool, []).append(view.result)
    return out


def test_every_long_tools_result_parses_into_its_job_results() -> None:
    """The second route for job results (their schema is not in tools/list): real results parse
    into the models the contract names, each form of optimize_circuit into its own."""
    results = anyio.run(finished_results, lm_run())
    for tool, found in results.items():
        models = contract.BY_NAME[tool].job_results
        for result in found:
            parsed = [m for m in models if _fits(m, result)]
            assert len(parsed) == 1, (tool, [m.__name__ for m in parsed], sorted(result))
    one, shared, removal = results["optimize_circuit"]
    assert circuits.RemovalResult.model_validate(removal).kept_others >= 0
    assert circuits.CircuitResult.model_validate(one).graph_id >= 1
    assert circuits.SharedCircuitResult.model_validate(shared).circuit_id >= 1
    assert len(results) == sum(bool(t.job_results) for t in contract.TOOLS)


def _fits(model: type[Any], data: dict[str, Any]) -> bool:
    try:
        model.model_validate(data)
    except ValueError:
        return False
    return True


def test_compact_schemas_mean_what_pydantic_says() -> None:
    """A nullable field as a type list, a model used once written in place, one used twice kept
    in $defs, null defaults gone, other defaults kept; an output schema without descriptions,
    required lists or additionalProperties flags, but with a dictionary's value type."""

    class Once(BaseModel):
        a: int = Field(description="kept in an input schema")

    class Twice(BaseModel):
        b: str

    class M(BaseModel):
        once: Once
        left: Twice
        right: Twice | None = None
        mode: Literal["x", "y"] | None = None
        n: int | None = Field(None, ge=0, le=9)
        k: int = 3
        counts: dict[str, int] = Field(default_factory=dict, description="dropped in an output")

    inp = input_schema(M)
    props = inp["properties"]
    a = {"description": "kept in an input schema", "type": "integer"}
    assert props["once"] == {"properties": {"a": a}, "required": ["a"], "type": "object"}
    assert props["left"] == {"$ref": "#/$defs/Twice"} and set(inp["$defs"]) == {"Twice"}
    assert props["right"] == {"anyOf": [{"$ref": "#/$defs/Twice"}, {"type": "null"}]}
    assert props["mode"] == {"enum": ["x", "y", None], "type": ["string", "null"]}
    assert props["n"] == {"maximum": 9, "minimum": 0, "type": ["integer", "null"]}
    assert props["k"] == {"default": 3, "type": "integer"} and props["counts"]["default"] == {}
    assert inp["additionalProperties"] is False and inp["required"] == ["once", "left"]
    out = output_schema(M)
    assert "required" not in out and "description" not in out["properties"]["counts"]
    counts = {"additionalProperties": {"type": "integer"}, "type": "object"}
    assert out["properties"]["counts"] == counts
    assert out["properties"]["once"] == {"properties": {"a": {"type": "integer"}}, "type": "object"}
