"""Requests with a lone UTF-16 surrogate in one string field, for every string field of every tool.

Built from the tools' own input schemas (nested objects, array items and dictionary keys included),
plus the other methods with string parameters. Each case names the field the answer must name.
"""

from typing import Any

BAD = "a\ud800b"


def with_any_of(schema: Any) -> Any:
    """``schema`` with each type list (``{"type": ["integer", "null"]}``, as the server writes a
    nullable field) spelled as ``anyOf`` of one type each, the form these walkers read."""
    if isinstance(schema, list):
        return [with_any_of(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for k, v in schema.items():
        if k in ("properties", "$defs"):
            out[k] = {n: with_any_of(s) for n, s in v.items()}
        else:
            out[k] = v if k in ("default", "enum", "const") else with_any_of(v)
    if not isinstance(out.get("type"), list):
        return out
    kept = {k: v for k, v in out.items() if k in ("default", "description")}
    shared = {k: v for k, v in out.items() if k not in kept and k != "type"}
    branches = []
    for t in out["type"]:
        branch = {"type": "null"} if t == "null" else {**shared, "type": t}
        if "enum" in branch:
            branch["enum"] = [e for e in branch["enum"] if e is not None]
        branches.append(branch)
    return {**kept, "anyOf": branches}


def _cases(schema: dict[str, Any], defs: dict[str, Any], path: str) -> list[tuple[str, Any]]:
    """(field path, a value holding BAD at that path) for each string place in ``schema``."""
    if "$ref" in schema:
        return _cases(defs[schema["$ref"].split("/")[-1]], defs, path)
    out: list[tuple[str, Any]] = []
    for sub in schema.get("anyOf", []):
        out += [c for c in _cases(sub, defs, path) if c[0] not in {p for p, _ in out}]
    kind = schema.get("type")
    if kind == "string" or ("enum" in schema and kind is None):
        out.append((path, BAD))
    elif kind == "array":
        out += [(p, [v]) for p, v in _cases(schema.get("items", {}), defs, f"{path}[0]")]
    elif kind == "object":
        for name, sub in schema.get("properties", {}).items():
            out += [(p, {name: v}) for p, v in _cases(sub, defs, f"{path}.{name}")]
        if schema.get("additionalProperties") not in (None, False):
            out.append((f"{path} key", {BAD: 1.0}))
    return out


def tool_cases(name: str, input_schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(field path as the error names it, tools/call params) for each string field of tool
    ``name``."""
    input_schema = with_any_of(input_schema)
    cases = _cases(input_schema, input_schema.get("$defs", {}), "params.arguments")
    return [(path, {"name": name, "arguments": args}) for path, args in cases]


OTHER_METHODS: list[tuple[str, str, dict[str, Any]]] = [
    ("tools/list", "params.cursor", {"cursor": BAD}),
    ("tools/call", "params.name", {"name": BAD, "arguments": {}}),
    ("prompts/list", "params.cursor", {"cursor": BAD}),
    ("resources/list", "params.cursor", {"cursor": BAD}),
]
