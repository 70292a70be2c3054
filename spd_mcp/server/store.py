"""The SQLite store (aiosqlite, WAL): prompts, graphs, circuits, interventions, validations, edits,
jobs, tool calls.

Rows keep their payload as JSON text; graphs are retrievable by their integer ``graph_id``.
Without a workspace the store lives in memory.
"""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite

from spd_mcp.server.safe_files import check_replaceable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, text TEXT NOT NULL, token_ids TEXT NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS graphs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, prompt_id INTEGER,
    params TEXT NOT NULL,
    data TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS circuits (
    id INTEGER PRIMARY KEY AUTOINCREMENT, graph_id INTEGER, prompt_id INTEGER, params TEXT NOT NULL,
    data TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS interventions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, params TEXT NOT NULL,
    data TEXT NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS edits (
    id TEXT PRIMARY KEY, params TEXT NOT NULL, data TEXT NOT NULL, created REAL NOT NULL,
    tensors BLOB);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, tool TEXT NOT NULL, status TEXT NOT NULL, params TEXT NOT NULL,
    result TEXT,
    error TEXT, created REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS validations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, params TEXT NOT NULL, data TEXT NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tool_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER, tool TEXT NOT NULL, args TEXT NOT NULL,
    duration_ms REAL NOT NULL, outcome TEXT NOT NULL, error TEXT, created REAL NOT NULL);
"""


_KEYED = ("graphs", "validations", "edits")  # tables whose rows are read back by id (_get_data)


def _text(s: str) -> str:
    """``s`` storable as UTF-8 (a lone surrogate from a client becomes its escape, never a failed
    write)."""
    return s.encode("utf-8", "backslashreplace").decode("utf-8")


def _dump(obj: Any) -> str:
    return _text(json.dumps(obj, ensure_ascii=False, default=str))


class Store:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self._calls: list[tuple[Any, ...]] = []  # tool_calls rows not yet handed to SQLite

    @classmethod
    async def open(cls, path: Path | None) -> "Store":
        if path is not None:  # SQLite would follow a planted link at the file or its journals
            check_replaceable(
                path.parent, [path.name + suffix for suffix in ("", "-wal", "-shm", "-journal")]
            )
        conn = await aiosqlite.connect(":memory:" if path is None else str(path))
        if path is not None:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.executescript(_SCHEMA)
        async with conn.execute("PRAGMA table_info(edits)") as cur:
            columns = {row[1] for row in await cur.fetchall()}
        if "tensors" not in columns:  # a store written before edits kept their tensors
            await conn.execute("ALTER TABLE edits ADD COLUMN tensors BLOB")
        await conn.commit()
        return cls(conn)

    async def close(self) -> None:
        await self.commit()
        await self._conn.close()

    async def _insert(self, sql: str, values: tuple[Any, ...]) -> int:
        await self._flush_calls()
        cur = await self._conn.execute(sql, values)
        await self._conn.commit()
        assert cur.lastrowid is not None
        return cur.lastrowid

    # --- prompts and graphs -----------------------------------------------------------------------
    async def add_prompt(self, text: str, token_ids: list[int]) -> int:
        return await self._insert(
            "INSERT INTO prompts (text, token_ids, created) VALUES (?, ?, ?)",
            (_text(text), _dump(token_ids), time.time()),
        )

    async def add_graph(
        self,
        data: dict[str, Any],
        kind: str,
        prompt_id: int | None = None,
        params: dict[str, Any] | None = None,
    ) -> int:
        """Store a graph payload (see ``schemas.StoredGraph``); returns its graph_id."""
        return await self._insert(
            "INSERT INTO graphs (kind, prompt_id, params, data, created) VALUES (?, ?, ?, ?, ?)",
            (kind, prompt_id, _dump(params or {}), _dump(data), time.time()),
        )

    async def _get_data(
        self, table: str, key: int | str, order: str, unknown: Callable[[list[Any]], str]
    ) -> dict[str, Any]:
        """The JSON ``data`` of row ``key`` of ``table``; if there is none, ValueError with the
        message ``unknown(ids)`` (the table's ids in ``order``), so that it can say what is
        valid."""
        assert table in _KEYED and order in ("id", "created"), (table, order)
        async with self._conn.execute(f"SELECT data FROM {table} WHERE id = ?", (key,)) as cur:
            row = await cur.fetchone()
        if row is None:
            async with self._conn.execute(f"SELECT id FROM {table} ORDER BY {order}") as cur:
                ids = [r[0] for r in await cur.fetchall()]
            raise ValueError(unknown(ids))
        return json.loads(row[0])

    async def get_graph(self, graph_id: int) -> dict[str, Any]:
        def unknown(ids: list[Any]) -> str:
            none = "none yet (get_attributions and optimize_circuit store graphs)"
            valid = ", ".join(map(str, ids[-20:])) if ids else none
            return f"unknown graph_id {graph_id}; stored graph ids: {valid}"

        return await self._get_data("graphs", graph_id, "id", unknown)

    async def graph_ids(self) -> list[int]:
        async with self._conn.execute("SELECT id FROM graphs ORDER BY id") as cur:
            return [r[0] for r in await cur.fetchall()]

    # --- circuits, interventions, edits -----------------------------------------------------------
    async def add_circuit(
        self,
        data: dict[str, Any],
        params: dict[str, Any],
        graph_id: int | None = None,
        prompt_id: int | None = None,
    ) -> int:
        return await self._insert(
            "INSERT INTO circuits (graph_id, prompt_id, params, data, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (graph_id, prompt_id, _dump(params), _dump(data), time.time()),
        )

    async def add_intervention(
        self, kind: str, params: dict[str, Any], data: dict[str, Any]
    ) -> int:
        return await self._insert(
            "INSERT INTO interventions (kind, params, data, created) VALUES (?, ?, ?, ?)",
            (kind, _dump(params), _dump(data), time.time()),
        )

    async def add_validation(self, params: dict[str, Any], data: dict[str, Any]) -> int:
        """Store a validation (its arguments and result); returns its validation_id."""
        return await self._insert(
            "INSERT INTO validations (params, data, created) VALUES (?, ?, ?)",
            (_dump(params), _dump(data), time.time()),
        )

    async def set_validation(self, validation_id: int, data: dict[str, Any]) -> None:
        await self._flush_calls()
        await self._conn.execute(
            "UPDATE validations SET data = ? WHERE id = ?", (_dump(data), validation_id)
        )
        await self._conn.commit()

    async def get_validation(self, validation_id: int) -> dict[str, Any]:
        return await self._get_data(
            "validations",
            validation_id,
            "id",
            lambda ids: (
                f"unknown validation_id {validation_id}; "
                f"valid: {ids or 'none yet (call validate_claim)'}"
            ),
        )

    async def put_edit(
        self,
        edit_id: str,
        params: dict[str, Any],
        data: dict[str, Any],
        tensors: bytes | None = None,
    ) -> None:
        """Record an edit: its tool arguments, its result and (to reload it) ``edits.edit_to_bytes``
        output."""
        await self._flush_calls()
        await self._conn.execute(
            "INSERT OR REPLACE INTO edits (id, params, data, created, tensors) "
            "VALUES (?, ?, ?, ?, ?)",
            (edit_id, _dump(params), _dump(data), time.time(), tensors),
        )
        await self._conn.commit()

    async def edit_blobs(self) -> list[tuple[str, bytes]]:
        """``(edit_id, tensors)`` of every edit stored with its tensors, oldest first."""
        async with self._conn.execute(
            "SELECT id, tensors FROM edits WHERE tensors IS NOT NULL ORDER BY created"
        ) as cur:
            return [(r[0], bytes(r[1])) for r in await cur.fetchall()]

    async def get_edit(self, edit_id: str) -> dict[str, Any]:
        return await self._get_data(
            "edits",
            edit_id,
            "created",
            lambda ids: f"unknown edit_id {edit_id!r}; stored edits: {', '.join(ids) or 'none'}",
        )

    # --- jobs and tool calls ----------------------------------------------------------------------
    async def put_job(
        self,
        job_id: str,
        tool: str,
        status: str,
        params: dict[str, Any],
        created: float,
        result: Any = None,
        error: str | None = None,
        finished: float | None = None,
    ) -> None:
        await self._flush_calls()
        await self._conn.execute(
            "INSERT OR REPLACE INTO jobs "
            "(id, tool, status, params, result, error, created, finished) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job_id,
                tool,
                status,
                _dump(params),
                None if result is None else _dump(result),
                None if error is None else _text(error),
                created,
                finished,
            ),
        )
        await self._conn.commit()

    async def get_job(self, job_id: str) -> dict[str, Any] | None:
        async with self._conn.execute(
            "SELECT id, tool, status, result, error, created, finished FROM jobs WHERE id = ?",
            (job_id,),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        keys = ("id", "tool", "status", "result", "error", "created", "finished")
        out: dict[str, Any] = dict(zip(keys, row, strict=True))
        out["result"] = None if out["result"] is None else json.loads(out["result"])
        return out

    async def add_tool_call(
        self,
        seq: int,
        tool: str,
        args: dict[str, Any],
        duration_ms: float,
        outcome: str,
        error: str | None,
    ) -> None:
        """Buffered; written with the next write, every 50 calls, or at close (events.jsonl is the
        durable record)."""
        err = None if error is None else _text(error)
        self._calls.append((seq, _text(tool), _dump(args), duration_ms, outcome, err, time.time()))
        if len(self._calls) >= 50:
            await self.commit()

    async def _flush_calls(self) -> None:
        if self._calls:
            rows, self._calls = self._calls, []
            await self._conn.executemany(
                "INSERT INTO tool_calls (seq, tool, args, duration_ms, outcome, error, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    async def commit(self) -> None:
        await self._flush_calls()
        await self._conn.commit()

    async def count(self, table: str) -> int:
        assert table in {
            "prompts",
            "graphs",
            "circuits",
            "interventions",
            "edits",
            "jobs",
            "tool_calls",
        }, table
        await self.commit()
        async with self._conn.execute(f"SELECT COUNT(*) FROM {table}") as cur:
            row = await cur.fetchone()
        assert row is not None
        return int(row[0])
