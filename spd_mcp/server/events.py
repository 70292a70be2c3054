"""What a tool call's event records of its arguments: inline when small, else a hash and a size.

The event log itself (schema, numbering, lock, reader) is `spd_mcp.common.events`, shared with the
launcher; the server writes its events with `source="server"`.
"""

import hashlib
import json
from typing import Any

MAX_INLINE_ARGS_BYTES = 2048


def summarize_args(args: Any) -> dict[str, Any]:
    """Arguments inline when small, else their sha256 and size (keeps lines short)."""
    try:
        text = json.dumps(args, sort_keys=True, default=str, ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN/Inf: strict JSON cannot hold them
        return {"args_repr": repr(args)[:MAX_INLINE_ARGS_BYTES]}
    data = text.encode("utf-8", "backslashreplace")
    if len(data) <= MAX_INLINE_ARGS_BYTES:
        return {"args": args}
    return {"args_sha256": hashlib.sha256(data).hexdigest(), "args_bytes": len(data)}
