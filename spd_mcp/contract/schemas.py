"""The JSON schemas a tool advertises, from its models: compact (no derived titles; in an output
schema no docstrings, ``required`` lists or ``additionalProperties: false``), an input schema closed
to unknown arguments and showing every default."""

from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python


def compact_schema(schema: Any, output: bool = False) -> Any:
    """A JSON schema without what an agent does not need: the titles pydantic derives from names
    ("Top K" for top_k) and, in an output schema, the result models' docstrings, their
    ``additionalProperties: false`` and their ``required`` lists (every result field is always
    present, null when it does not apply: the server's instructions say so once). Field
    descriptions stay."""
    if isinstance(schema, list):
        return [compact_schema(s, output) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    is_model = "properties" in schema
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if (
            output
            and is_model
            and (
                key in ("description", "required")
                or (key == "additionalProperties" and value is False)
            )
        ):
            continue
        if key in ("properties", "$defs") and isinstance(value, dict):
            out[key] = {name: compact_schema(sub, output) for name, sub in value.items()}
        else:
            out[key] = compact_schema(value, output)
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
