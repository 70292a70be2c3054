"""How a tool is declared and registered: flat input schema from an input model, one error boundary.

A ``ToolSpec`` names a pydantic input model, a result model and an async handler
``handler(state, inp, ctx) -> result``; ``bind`` makes them from the contract's entries
(``spd_mcp.contract``) and one handler each. ``build_tool`` turns it into an SDK ``Tool`` whose
input schema has one top-level property per input field (unknown arguments are rejected with the
valid names) and whose failures are ToolErrors carrying their message.
"""

import contextvars
import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from spd_mcp.contract import ToolContract
from spd_mcp.contract.schemas import compact_schema
from spd_mcp.contract.spec import tool_hints
from spd_mcp.server.errors import BusyError, to_tool_error


@dataclass
class CallRecord:
    """Filled by the boundary, read by the call-logging middleware."""

    outcome: str | None = None
    job_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


current_call: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar(
    "current_call", default=None
)

Handler = Callable[[Any, Any, Context], Awaitable[BaseModel]]


@dataclass(frozen=True)
class ToolSpec:
    name: str
    title: str
    description: str
    input_model: type[BaseModel]
    result_model: type[BaseModel]
    handler: Handler
    read_only: bool
    destructive: bool = False
    idempotent: bool = False


def bind(contracts: Iterable[ToolContract], **handlers: Handler) -> list[ToolSpec]:
    """One ToolSpec per contract entry, with the handler of its name; a handler without an entry
    or an entry without a handler is an error naming it."""
    contracts = list(contracts)
    names = [c.name for c in contracts]
    extra, missing = sorted(set(handlers) - set(names)), [n for n in names if n not in handlers]
    if extra or missing:
        raise ValueError(
            f"handlers without a contract entry: {extra or 'none'}; "
            f"contract entries without a handler: {missing or 'none'}"
        )
    return [
        ToolSpec(
            name=c.name,
            title=c.title,
            description=c.description,
            input_model=c.input_model,
            result_model=c.result_model,
            handler=handlers[c.name],
            read_only=c.read_only,
            destructive=c.destructive,
            idempotent=c.idempotent,
        )
        for c in contracts
    ]


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "invalid arguments: " + "; ".join(parts)


class _Tool(Tool):
    """The SDK's Tool, but arguments that fail the schema reach the agent on one line
    (``validation_message``) instead of pydantic's multi-line report."""

    async def run(
        self, arguments: dict[str, Any], context: Any, convert_result: bool = False
    ) -> Any:
        try:
            self.fn_metadata.validate_arguments(arguments)
        except ValidationError as exc:
            message = validation_message(exc)
            raise ToolError(f"Error executing tool {self.name}: {message}") from exc
        return await super().run(arguments, context, convert_result)


def build_tool(spec: ToolSpec) -> Tool:
    model = spec.input_model

    async def fn(ctx: Context, **kwargs: Any) -> BaseModel:
        state = ctx.request_context.lifespan_context
        try:
            inp = model.model_validate(kwargs)
            return await spec.handler(state, inp, ctx)
        except BusyError:
            rec = current_call.get()
            if rec is not None:
                rec.outcome = "busy"
            raise
        except ValidationError as exc:
            raise to_tool_error(ValueError(validation_message(exc)), spec.name) from exc
        except Exception as exc:
            raise to_tool_error(exc, spec.name) from exc

    params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    annotations: dict[str, Any] = {"ctx": Context, "return": spec.result_model}
    for name, f in model.model_fields.items():
        fi = Field(
            description=f.description, examples=f.examples, json_schema_extra=f.json_schema_extra
        )
        ann = Annotated[(f.annotation, fi, *f.metadata)]
        default = (
            inspect.Parameter.empty if f.is_required() else f.get_default(call_default_factory=True)
        )
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=default)
        )
        annotations[name] = ann
    fn.__signature__ = inspect.Signature(params, return_annotation=spec.result_model)  # type: ignore[attr-defined]
    fn.__annotations__ = annotations
    fn.__name__ = spec.name
    fn.__doc__ = spec.description

    tool = _Tool.from_function(
        fn,
        name=spec.name,
        title=spec.title,
        description=spec.description,
        # the title is the tool's own, not repeated here
        annotations=ToolAnnotations.model_validate(
            tool_hints(spec.read_only, spec.destructive, spec.idempotent)
        ),
        structured_output=True,
    )
    tool.parameters = compact_schema(tool.parameters)
    if tool.fn_metadata.output_schema is not None:  # results are still validated against the model
        tool.fn_metadata.output_schema = compact_schema(tool.fn_metadata.output_schema, output=True)
    tool.fn_metadata.arg_model = _strict(tool.fn_metadata.arg_model, set(model.model_fields))  # pyright: ignore[reportAttributeAccessIssue]
    tool.parameters["additionalProperties"] = False
    return tool


def _strict(base: type[BaseModel], allowed: set[str]) -> type[BaseModel]:
    """The SDK's argument model, strict, rejecting unknown arguments with the list of valid ones."""
    valid = ", ".join(sorted(allowed)) or "none"

    def no_unknown(cls: type[BaseModel], data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - allowed)
            if unknown:
                raise ValueError(
                    f"unknown argument(s) {', '.join(unknown)}; valid arguments: {valid}"
                )
        return data

    model = create_model(
        base.__name__,
        __base__=base,
        __validators__={"no_unknown": model_validator(mode="before")(classmethod(no_unknown))},  # type: ignore[arg-type]
    )
    model.model_config["strict"] = (
        True  # as the input models: no booleans as integers, no strings as booleans
    )
    model.model_rebuild(force=True)
    return model
