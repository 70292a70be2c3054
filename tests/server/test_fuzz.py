"""Schema-driven fuzzing of every tool: arguments drawn from each tool's own input schema, mixed
with wrong types, unknown and missing keys. No call may crash the server; every failure is a tool
error whose message says what is valid; every success matches the tool's output schema.

Then what an adversarial probe sends: huge integers and type coercion in every field, a lone
surrogate in every string field, lists and other non-objects as the arguments, and links planted in
the workspace before every writing tool. Every call is counted (``COUNTS``: calls, ok, refusals,
crashes, unanswered) and ``test_fuzz_counts`` prints the totals and requires 0 crashes, 0
unanswered.
"""

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.shared.exceptions import MCPError

from spd_mcp import contract
from tests.server.harvested import harvested_run
from tests.server.helpers import make_server, raw_request
from tests.server.test_tools_records import store_graph
from tests.server.wire_cases import tool_cases, with_any_of

EXAMPLES = int(os.environ.get("SPD_FUZZ_EXAMPLES", "200"))
ANSWER_BOUND_S = (
    120.0  # a call unanswered after this counts as unanswered (heavy fuzz calls take seconds)
)
COUNTS: Counter[str] = Counter()
HELPFUL = re.compile(
    r"valid|should be|must|expected|required|at most|at least|exactly|unknown|give |needs|"
    r"refus|out of range|tokeniz|no probe|not permitted|workspace|letters, digits",
    re.I,
)
INTERESTING = [
    "the cat sat on the",
    "Paris is the capital of",
    "0.mlp.up:3",
    "1.attn.q:7",
    "0.mlp.up:99",
    "h1",
    "j1",
    "copying",
    "ioi",
    "../x",
    "",
    " ",
    "é\u2028",
]
# Field names whose valid values are rare at random: drawn from meaningful values half the time.
HINTS = {
    "component": st.sampled_from(
        ["0.mlp.up:3", "1.attn.q:7", "0.attn.o:0", "1.mlp.down:7", "0.mlp.up:8", "x:1"]
    ),
    "graph_id": st.integers(0, 3),
    "mechanism": st.sampled_from(["copying", "ioi", "recall", "other"]),
    "text": st.sampled_from(["the cat sat on the", "Paris is the capital of", "the"]),
    "query": st.sampled_from(["the", "capital of", "cat sat", "zzz"]),
}
KEYS = [
    "0.mlp.up:3",
    "1.attn.o:5",
    "0.mlp.down:1",
    "1.mlp.down:0",
    "0.attn.q:2",
    "1.mlp.gate:7",
    "0.mlp.up:8",
    "x:1",
    "0.mlp.up",
]
NODES = [
    "0.mlp.up:4:3",
    "1.attn.o:-1:5",
    "0.mlp.down:0:1",
    "0.mlp.up:9:1",
    "output:4:7",
    "1.mlp.down:2",
]
TOKENS = ["mat", "the", "Paris", "mat cat", "", "output:4:7", "0.mlp.up:4:3", "1.attn.q:0:0"]
EXAMPLE = st.fixed_dictionaries(
    {"text": HINTS["text"], "target_token": st.sampled_from(TOKENS)},
    optional={"position": st.integers(-6, 6)},
)
# Field names whose values decide the cost of a call (kept tiny so each long tool's fuzz stays fast)
# or whose valid values are rare at random: always drawn from these.
FORCED = {
    "steps": st.integers(0, 3),
    "position": st.integers(-6, 6),
    "adversarial_steps": st.sampled_from([0, 1, 2, 2]),
    "max_new_tokens": st.integers(0, 3),
    "n_samples": st.sampled_from([0, 1, 2, 3]),
    "n_examples": st.sampled_from([1, 2, 3]),
    "n_controls": st.sampled_from([0, 1, 2]),
    "wait_s": st.sampled_from([0.0, 5.0, 31.0]),
    "components": st.lists(st.sampled_from(KEYS), min_size=1, max_size=3) | st.just([]),
    "nodes": st.lists(st.sampled_from(NODES), max_size=3),
    "layers": st.none() | st.lists(st.sampled_from(["0.mlp.up", "1.attn.q", "nope"]), max_size=2),
    "scales": st.dictionaries(st.sampled_from(KEYS), st.floats(-2, 2) | st.just(0.0), max_size=3),
    "target": st.none() | st.sampled_from(TOKENS),
    "target_token": st.sampled_from(TOKENS),
    "token": st.sampled_from([None, None, "mat", "Paris", "mat cat", ""]),
    "edit_id": st.sampled_from([None, None, None, "e1", "e2", "nope"]),
    "examples": st.lists(EXAMPLE, max_size=2),
    "preserve_prompts": st.lists(HINTS["text"], max_size=2),
    "objective": st.none()
    | st.fixed_dictionaries(
        {
            "token": st.sampled_from(TOKENS),
            "direction": st.sampled_from(["suppress", "promote", "x"]),
            "prompts": st.lists(HINTS["text"], max_size=2),
        }
    ),
    "regime": st.sampled_from(["deterministic", "stochastic", "adversarial", "all", "none"])
    | st.lists(st.sampled_from(["deterministic", "stochastic", "adversarial"]), max_size=3),
}
HEAVY = {
    "optimize_circuit",
    "find_components",
    "edit_component",
    "export_edit",
    "steer",
    "ablate",
    "get_attributions",
    "validate_claim",
}
ANALYSIS = HEAVY | {"get_ci", "probe_component", "run_prompt"}
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.lists(st.integers(-5, 5), max_size=3),
    st.just({"a": 1}),
)


def strategy(schema: dict[str, Any], defs: dict[str, Any], depth: int = 0) -> st.SearchStrategy:
    if "$ref" in schema:
        return strategy(defs[schema["$ref"].split("/")[-1]], defs, depth)
    if "anyOf" in schema:
        return st.one_of(*(strategy(s, defs, depth) for s in schema["anyOf"]))
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        lo = schema.get("minimum", schema.get("exclusiveMinimum", -(10**4) - 1) + 1)
        hi = schema.get("maximum", schema.get("exclusiveMaximum", 10**4 + 1) - 1)
        return st.integers(lo - 1, hi + 1) if depth == 0 else st.integers(lo, hi)
    if kind == "number":
        lo, hi = schema.get("minimum", -1e4), schema.get("maximum", 1e4)
        return st.floats(lo, hi, allow_nan=False, allow_infinity=False) | st.sampled_from(
            [lo - 1, hi + 1]
        )
    if kind == "string":
        hi = min(schema.get("maxLength", 80), 80)
        text = st.text(max_size=hi) | st.sampled_from(INTERESTING)
        if "pattern" in schema:
            text = text | st.from_regex(schema["pattern"], fullmatch=True)
        return text
    if kind == "array":
        items = strategy(schema.get("items", {}), defs, depth + 1) if schema.get("items") else JUNK
        return st.lists(
            items, min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 4), 4)
        )
    if kind == "object":
        return object_strategy(schema, defs, depth + 1)
    return JUNK


def object_strategy(
    schema: dict[str, Any],
    defs: dict[str, Any],
    depth: int,
    clean: bool = False,
    forced: dict[str, Any] | None = None,
) -> st.SearchStrategy:
    """Objects of the schema; unless ``clean``, fields are sometimes junk or missing and keys
    unknown."""
    props = schema.get("properties", {})
    required = set(schema.get("required", []))

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        out: dict[str, Any] = {}
        roll = draw(st.integers(0, 9))  # drawn even for a tool without arguments
        for name, sub in props.items():
            mode = "valid" if clean else draw(st.sampled_from(["valid"] * 6 + ["junk", "skip"]))
            if mode == "skip" or (name not in required and draw(st.booleans())):
                continue
            valid = strategy(sub, defs, depth) if not clean else clean_strategy(sub, defs)
            if name in HINTS:
                valid = HINTS[name] | valid
            if forced and name in forced:
                valid = forced[name]
            out[name] = draw(JUNK if mode == "junk" and not (forced and name in forced) else valid)
        if not clean and roll == 0:
            out[draw(st.sampled_from(["extra", "topk", "Text", "x"]))] = draw(JUNK)
        return out

    return build()


def clean_strategy(schema: dict[str, Any], defs: dict[str, Any]) -> st.SearchStrategy:
    """Values inside the schema's bounds (nested objects clean too)."""
    if "$ref" in schema:
        return clean_strategy(defs[schema["$ref"].split("/")[-1]], defs)
    if "anyOf" in schema:
        return st.one_of(*(clean_strategy(s, defs) for s in schema["anyOf"]))
    if "enum" in schema or "const" in schema:
        return strategy(schema, defs, 1)
    kind = schema.get("type")
    if kind == "integer":
        return st.integers(schema.get("minimum", -100), schema.get("maximum", 100))
    if kind == "number":
        return st.floats(
            schema.get("minimum", -100.0), min(schema.get("maximum", 100.0), 3.0), allow_nan=False
        )
    if kind == "string" and "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True)
    if kind == "string":
        lo = schema.get("minLength", 0)
        return st.text(
            min_size=lo, max_size=max(lo, min(schema.get("maxLength", 40), 40))
        ) | st.sampled_from(INTERESTING[:3])
    if kind == "array":
        items = clean_strategy(schema["items"], defs) if schema.get("items") else JUNK
        return st.lists(
            items, min_size=schema.get("minItems", 0), max_size=min(schema.get("maxItems", 3), 3)
        )
    if kind == "object":
        return object_strategy(schema, defs, 1, clean=True)
    return strategy(schema, defs, 1)


def args_strategy(
    schema: dict[str, Any], forced: dict[str, Any] | None = None
) -> st.SearchStrategy:
    defs = schema.get("$defs", {})
    return object_strategy(schema, defs, 0, clean=True, forced=forced) | object_strategy(
        schema, defs, 0, forced=forced
    )


def call(portal: Any, client: Client, name: str, args: Any) -> Any:
    """One tools/call, counted: ok, refused (tool error or INVALID_PARAMS), crash, or unanswered."""

    async def send() -> Any:
        with anyio.fail_after(ANSWER_BOUND_S):
            return await raw_request(client, "tools/call", {"name": name, "arguments": args})

    COUNTS["calls"] += 1
    try:
        raw = portal.call(send)
    except TimeoutError:
        COUNTS["unanswered"] += 1
        raise AssertionError(f"{name}({args!r}): no answer within {ANSWER_BOUND_S} s") from None
    except MCPError as exc:
        if exc.code != -32602:
            COUNTS["crashes"] += 1
            raise AssertionError(
                f"{name}({args!r}) -> JSON-RPC error {exc.code}: {exc.message}"
            ) from exc
        COUNTS["refusals"] += 1
        return exc
    from mcp_types import CallToolResult

    result = CallToolResult.model_validate(raw)
    if result.is_error:
        text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
        crashed = (
            not text or "internal error" in text or text.strip() == f"Error executing tool {name}"
        )
        COUNTS["crashes" if crashed else "refusals"] += 1
    else:
        COUNTS["ok"] += 1
    return result


def check_refusal(name: str, args: Any, text: str) -> None:
    assert text and "internal error" not in text, f"{name}({args!r}) -> {text!r}"
    assert text.strip() != f"Error executing tool {name}", f"{name}({args!r}) crashed"
    assert HELPFUL.search(text), f"{name}({args!r}): message does not say what is valid: {text!r}"


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory, lm):
    ws = tmp_path_factory.mktemp("fuzz")
    anyio.run(store_graph, ws)
    run = harvested_run(lm, tmp_path_factory.mktemp("fuzz-run"))
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(Client(make_server(run, ws))) as client,
    ):
        tools = {t.name: t for t in portal.call(client.list_tools).tools}
        yield portal, client, tools, ws


TOOL_NAMES = list(
    contract.TOOL_NAMES
)  # every tool of the contract (test_contract: the server has each)


@pytest.mark.parametrize("name", TOOL_NAMES)
def test_fuzz_tool(fuzz_client, name: str) -> None:
    portal, client, tools, _ws = fuzz_client
    tool = tools[name]
    schema = with_any_of(tool.input_schema)
    outcomes = {"ok": 0, "error": 0}
    n = max(10, EXAMPLES // 4) if name in HEAVY else EXAMPLES

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
    @given(args=args_strategy(schema, FORCED if name in ANALYSIS else None))
    def one(args: dict[str, Any]) -> None:
        r = call(portal, client, name, args)
        if isinstance(r, MCPError):
            outcomes["error"] += 1
            check_refusal(name, args, r.message)
        elif r.is_error:
            outcomes["error"] += 1
            check_refusal(name, args, r.content[0].text if r.content else "")
        else:
            outcomes["ok"] += 1
            jsonschema.validate(r.structured_content, tool.output_schema)

    one()
    print(f"\nfuzz {name}: {outcomes}")
    assert sum(outcomes.values()) >= n
    status = portal.call(client.call_tool, "server_status", {})
    assert not status.is_error  # the server survived


def fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Top-level fields with their schema (the non-null branch of an optional field)."""
    out = {}
    for name, sub in schema.get("properties", {}).items():
        branches = [b for b in sub.get("anyOf", [sub]) if b.get("type") != "null"]
        out[name] = branches[0] if branches else sub
    return out


HOSTILE = {
    "integer": [10**30, -(10**30), 2**63, -(2**63) - 1, True, False, 1.5, "3", None],
    "number": [10**30, True, "1.0", "nan", None],
    "boolean": ["yes", "true", 1, 0, "false", None],
    "string": [True, 0, ["a"], {"a": 1}],
    "array": ["a", {"a": 1}, True, [None]],
    "object": [[1, 2], "a", True],
}


@pytest.mark.parametrize("name", TOOL_NAMES)
def test_hostile_values_in_every_field(fuzz_client, name: str) -> None:
    """Huge integers and values of the wrong type in each field, the others left out: every call
    refused with a message naming the field (strict types: true is not 1, "yes" is not a
    boolean)."""
    portal, client, tools, _ws = fuzz_client
    schema = with_any_of(tools[name].input_schema)
    tried = 0
    for field, sub in fields(schema).items():
        for value in HOSTILE.get(sub.get("type", ""), []):
            if value is None and field not in schema.get("required", []):
                continue  # null is valid for an optional field
            r = call(portal, client, name, {field: value})
            text = (
                r.message
                if isinstance(r, MCPError)
                else (r.content[0].text if r.is_error and r.content else "")
            )
            assert text, f"{name}({field}={value!r}) was accepted"
            check_refusal(name, {field: value}, text)
            assert field in text, (
                f"{name}({field}={value!r}): the error does not name the field: {text!r}"
            )
            tried += 1
    print(f"\nhostile values {name}: {tried} calls, all refused naming the field")


@pytest.mark.parametrize("name", TOOL_NAMES)
def test_lone_surrogates_and_non_object_arguments(fuzz_client, name: str) -> None:
    portal, client, tools, _ws = fuzz_client
    cases = tool_cases(name, tools[name].input_schema)
    for path, params in cases:
        r = call(portal, client, name, params["arguments"])
        assert isinstance(r, MCPError) and path in r.message, (path, r)
    for args in ([1, 2], "text", 7, True):
        r = call(portal, client, name, args)
        assert isinstance(r, MCPError) and "params.arguments must be an object" in r.message, (
            args,
            r,
        )
    print(f"\nsurrogates {name}: {len(cases)} string fields; non-object arguments: 4; all refused")


WRITERS = {
    "update_research_log": ["research_log.md"],
    "record_hypothesis": ["hypotheses.jsonl", "research_log.md"],
    "save_explanation": ["explanations.jsonl"],
    "set_investigation_summary": ["summary.json"],
    "save_graph_artifact": [
        f"artifacts/{a}{x}" for a in ("graph_1", "graph_2", "a", "h1") for x in (".json", ".svg")
    ],
    "export_edit": ["exports/e1", "exports/e2"],
}


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
@pytest.mark.parametrize("name", list(WRITERS))
def test_fuzz_writers_with_links_planted(fuzz_client, tmp_path: Path, name: str, kind: str) -> None:
    """Links to a file outside planted at a writing tool's names, then fuzzed calls: outside
    unchanged."""
    portal, client, tools, ws = fuzz_client
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (tmp_path / "dir").mkdir()
    planted = []
    for rel in WRITERS[name]:
        path = ws / rel
        if os.path.lexists(path):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "symlink":
            os.symlink(tmp_path / "dir" if rel.startswith("exports/") else outside, path)
        elif not rel.startswith("exports/"):
            os.link(outside, path)
        else:
            continue
        planted.append(path)
    outcomes: Counter[str] = Counter()

    @settings(
        max_examples=max(10, EXAMPLES // 10),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )
    @given(args=args_strategy(with_any_of(tools[name].input_schema)))
    def one(args: dict[str, Any]) -> None:
        r = call(portal, client, name, args)
        text = (
            r.message
            if isinstance(r, MCPError)
            else (r.content[0].text if r.is_error and r.content else "")
        )
        outcomes["error" if text else "ok"] += 1
        if text:
            check_refusal(name, args, text)
        assert outside.read_text() == "keep" and list((tmp_path / "dir").iterdir()) == []

    try:
        one()
    finally:
        for path in planted:
            path.unlink()
    print(f"\nlinks {name} ({kind}): {dict(outcomes)}")


def test_fuzz_counts() -> None:
    """Runs last: the totals of every fuzz call above."""
    print(
        f"\nfuzz counts: calls={COUNTS['calls']} ok={COUNTS['ok']} refusals={COUNTS['refusals']} "
        f"crashes={COUNTS['crashes']} unanswered={COUNTS['unanswered']}"
    )
    assert (
        COUNTS["calls"]
        == COUNTS["ok"] + COUNTS["refusals"] + COUNTS["crashes"] + COUNTS["unanswered"]
    )
    assert COUNTS["crashes"] == 0 and COUNTS["unanswered"] == 0
