"""The size of tools/list as an agent receives it: bytes of the JSON-RPC result, by part, per tool.

Run: OMP_NUM_THREADS=1 python -m bench.bench_tools_list [--per-tool]
The real server CLI over stdio (tests/server/serve_tiny.py, the tiny LM run); the bytes are those of
the reply line as the server wrote it, less the JSON-RPC envelope, and must equal the compact JSON
of the parsed result (checked). Parts: the tools' descriptions (JSON strings), their input schemas
(of which the field descriptions), their output schemas, and the rest (names, titles, annotations,
keys and punctuation).
"""

import argparse
import json
from typing import Any

from bench.bench_server import RawStdio


def compact_bytes(value: Any) -> int:
    """Bytes of ``value`` as compact JSON with UTF-8 unescaped, as the MCP SDK writes it."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def _description_bytes(schema: Any) -> int:
    """Bytes of the ``"description": "..."`` entries (with their comma) inside a schema."""
    if isinstance(schema, list):
        return sum(_description_bytes(s) for s in schema)
    if not isinstance(schema, dict):
        return 0
    total = 0
    for key, value in schema.items():
        if key == "description" and isinstance(value, str):
            total += compact_bytes({key: value}) - 2 + 1
        elif key in ("properties", "$defs") and isinstance(value, dict):
            total += sum(_description_bytes(s) for s in value.values())
        else:
            total += _description_bytes(value)
    return total


def sizes(result: dict[str, Any]) -> dict[str, int]:
    """The tools/list result's bytes: total and by part (see the module docstring)."""
    tools = result["tools"]
    parts = {
        "total": compact_bytes(result),
        "descriptions": sum(compact_bytes(t.get("description", "")) for t in tools),
        "input_schemas": sum(compact_bytes(t.get("inputSchema")) for t in tools),
        "input_field_descriptions": sum(_description_bytes(t.get("inputSchema")) for t in tools),
        "output_schemas": sum(
            compact_bytes(t["outputSchema"]) for t in tools if "outputSchema" in t
        ),
        "output_field_descriptions": sum(_description_bytes(t.get("outputSchema")) for t in tools),
    }
    named = parts["descriptions"] + parts["input_schemas"] + parts["output_schemas"]
    parts["rest"] = parts["total"] - named
    return parts


def per_tool(result: dict[str, Any]) -> dict[str, int]:
    ranked = sorted(result["tools"], key=lambda t: -compact_bytes(t))
    return {t["name"]: compact_bytes(t) for t in ranked}


def wire_tools_list(run: str = "lm") -> tuple[int, dict[str, Any]]:
    """(bytes of the result as sent, the parsed result) of one tools/list over stdio."""
    client = RawStdio(run)
    try:
        client.next_id += 1
        request = {"jsonrpc": "2.0", "id": client.next_id, "method": "tools/list", "params": {}}
        client._send(request)  # noqa: SLF001 (the raw line back is what is measured)
        assert client.proc.stdout is not None
        while True:  # skip notifications until our reply
            line = client.proc.stdout.readline().rstrip(b"\n")
            reply = json.loads(line)
            if reply.get("id") == client.next_id:
                break
    finally:
        client.stop()
    envelope = compact_bytes({"jsonrpc": "2.0", "id": client.next_id, "result": None}) - len("null")
    sent = len(line) - envelope
    assert sent == compact_bytes(reply["result"]), (sent, compact_bytes(reply["result"]))
    return sent, reply["result"]


def run(quick: bool = False) -> list[dict]:
    sent, result = wire_tools_list()
    return [
        {
            "bench": "tools/list bytes over stdio (tiny LM run)",
            "tools": len(result["tools"]),
            "wire_result_bytes": sent,
            **sizes(result),
        }
    ]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-tool", action="store_true")
    args = ap.parse_args()
    sent, result = wire_tools_list()
    print(json.dumps({"tools": len(result["tools"]), "wire_result_bytes": sent, **sizes(result)}))
    if args.per_tool:
        print(json.dumps(per_tool(result), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
