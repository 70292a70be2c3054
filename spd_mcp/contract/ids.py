"""Agent-chosen names (hypothesis and artifact ids, export names): what is valid, and the check."""

import functools
import re
from typing import Annotated

from pydantic import AfterValidator
from pydantic.config import JsonDict

ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
ID_RULE = (
    "1-64 characters: letters, digits, '_' or '-', starting with a letter or digit "
    "(e.g. 'h1', 'graph_001')"
)
_ID_RE = re.compile(ID_PATTERN)


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a safe id, else raise ValueError saying what is valid."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise ValueError(f"invalid {what} {value!r}; valid: {ID_RULE}")
    return value


SafeId = Annotated[str, AfterValidator(functools.partial(validate_id, what="id"))]
ID_SCHEMA: JsonDict = {"pattern": f"^{ID_PATTERN}$"}
