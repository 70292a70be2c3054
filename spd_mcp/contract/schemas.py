"""The JSON schemas a tool advertises, from its models, as small as they can be and mean the same:
no derived titles, no ``default: null``, a nullable field as ``type: [T, "null"]``, a ``$defs``
entry used once written in place; in an output schema only the structure (no descriptions, no
``required`` lists, no ``additionalProperties``). An input schema is closed to unknown arguments
and shows every other default."""

from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

VALUES = ("default", "examples", "enum", "const")  # keys whose values are data, not schemas
REF = "#/$defs/"


def compact_schema(schema: Any, output: bool = False) -> Any:
    """``schema`` without what an agent does not need: the titles pydantic derives from names
    ("Top K" for top_k), null defaults, ``anyOf`` with null (a type list instead), ``$defs`` used
    once, and in an output schema every description, ``required`` list and
    ``additionalProperties`` (every result field is always present, null when it does not apply:
    the server's instructions say so once). Input field descriptions stay."""
    return _compact(_inline_single_use(schema), output)


def _compact(schema: Any, output: bool) -> Any:
    if isinstance(schema, list):
        return [_compact(s, output) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if _dropped(key, value, output):
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {name: _compact(sub, output) for name, sub in value.items()}
        elif key in VALUES:
            out[key] = value
        else:
            out[key] = _compact(value, output)
    return _nullable_as_type_list(out)


def _dropped(key: str, value: Any, output: bool) -> bool:
    if key == "title" and isinstance(value, str):
        return True
    if key == "default" and value is None:
        return True
    if not output:
        return False
    return (
        (key == "description" and isinstance(value, str))
        or key == "required"
        or (key == "additionalProperties" and isinstance(value, bool))
    )


def _nullable_as_type_list(schema: dict[str, Any]) -> dict[str, Any]:
    """``{anyOf: [S, {type: null}], ...}`` as ``{...S, type: [S.type, "null"], ...}`` when S has
    one type (a ``$ref`` keeps its ``anyOf``)."""
    branches = schema.get("anyOf")
    if not isinstance(branches, list) or len(branches) != 2 or {"type": "null"} not in branches:
        return schema
    other = branches[0] if branches[1] == {"type": "null"} else branches[1]
    if not isinstance(other.get("type"), str) or "const" in other:
        return schema
    merged = {**other, "type": [other["type"], "null"]}
    if "enum" in other:
        merged["enum"] = [*other["enum"], None]
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    return {**merged, **rest}


def _refs(schema: Any) -> list[str]:
    if isinstance(schema, list):
        return [r for s in schema for r in _refs(s)]
    if not isinstance(schema, dict):
        return []
    own = [schema["$ref"][len(REF) :]] if str(schema.get("$ref", "")).startswith(REF) else []
    return own + [r for v in _subschemas(schema) for r in _refs(v)]


def _inline_single_use(schema: Any) -> Any:
    """Each ``$defs`` entry referenced once (and not from itself) written where it is used."""
    if not isinstance(schema, dict) or not isinstance(schema.get("$defs"), dict):
        return schema
    defs: dict[str, Any] = dict(schema["$defs"])
    body = {k: v for k, v in schema.items() if k != "$defs"}
    while True:
        refs = _refs([body, *defs.values()])
        once = [n for n in defs if refs.count(n) == 1 and n not in _refs(defs[n])]
        if not once:
            break
        name = once[0]
        sub = defs.pop(name)
        body, defs = (
            _replace_ref(body, name, sub),
            {n: _replace_ref(d, name, sub) for n, d in defs.items()},
        )
    return {**body, "$defs": defs} if defs else body


def _replace_ref(schema: Any, name: str, sub: Any) -> Any:
    if isinstance(schema, list):
        return [_replace_ref(s, name, sub) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("$ref") == REF + name:
        return {**sub, **{k: v for k, v in schema.items() if k != "$ref"}}
    out = {}
    for key, value in schema.items():
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {n: _replace_ref(v, name, sub) for n, v in value.items()}
        else:
            out[key] = value if key in VALUES else _replace_ref(value, name, sub)
    return out


def _subschemas(schema: dict[str, Any]) -> list[Any]:
    """The schemas directly inside ``schema`` (property and definition schemas, items, branches)."""
    out: list[Any] = []
    for key, value in schema.items():
        if key in ("properties", "$defs") and isinstance(value, dict):
            out += list(value.values())
        elif key not in VALUES:
            out.append(value)
    return out


def input_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The input schema of a tool taking ``model``: one property per field, defaults made by a
    factory shown as values, unknown arguments refused."""
    schema = compact_schema(model.model_json_schema())
    for name, field in model.model_fields.items():
        if field.default_factory is not None:
            default = field.get_default(call_default_factory=True)
            schema["properties"][name]["default"] = to_jsonable_python(default)
    schema["additionalProperties"] = False
    return schema


def output_schema(model: type[BaseModel]) -> dict[str, Any]:
    return compact_schema(model.model_json_schema(), output=True)
