"""harvest.sqlite: the only module that writes or reads a run's harvest database, and its query API.

Written atomically: built in a temporary file in the run directory, then ``os.replace``d, so a
reader sees either the old file or the complete new one. Tables:

- ``meta(key TEXT PRIMARY KEY, value TEXT)``: JSON values: schema_version, created, config,
  layers ({layer: C}), n_texts, n_tokens, attribution_method.
- ``texts(id INTEGER PRIMARY KEY, text TEXT, token_ids TEXT)``: the corpus (token ids as JSON).
- ``components(layer, c, n_firing, density, mean_ci, max_ci)``: one row per component.
- ``token_stats(layer, c, side, token_id, count, token_count, recall, precision, pmi)``: side is
  'input' (token at the firing) or 'output' (next token); the top tokens by count per component.
- ``examples(layer, c, rank, text_id, pos, max_ci, start, token_ids, ci)``: top activating contexts
  (window token ids and per-token CI as JSON), rank 0 = largest CI.
- ``cofiring(layer, c, other_layer, other_c, count, jaccard)``.
- ``attributions(src_layer, src_c, tgt_layer, tgt_c, value, abs_value, count)``: raw sums over the
  corpus of one-hop edges source -> target; normalised only when queried (possibly only each
  component's top-k partners: ``meta.config.attribution_top_k``).
- ``attribution_inflow(layer, c, total)``: per target component the total |sum| of everything that
  flows into it (over all pairs, before any top-k cut): the normaliser.
- ``labels(layer, c, label)``: optional human or automatic labels (empty unless written).
"""

import json
import os
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from spd_core.errors import require
from spd_core.harvest import Harvest

SCHEMA_VERSION = 3  # 3: clustered (WITHOUT ROWID) tables, attribution_inflow
FILENAME = "harvest.sqlite"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE texts (id INTEGER PRIMARY KEY, text TEXT NOT NULL, token_ids TEXT NOT NULL);
CREATE TABLE components (layer TEXT, c INTEGER, n_firing INTEGER, density REAL, mean_ci REAL, \
max_ci REAL,
                         PRIMARY KEY (layer, c));
CREATE TABLE token_stats (layer TEXT, c INTEGER, side TEXT, token_id INTEGER, count INTEGER, \
token_count INTEGER,
                          recall REAL, precision REAL, pmi REAL, \
PRIMARY KEY (layer, c, side, token_id)) WITHOUT ROWID;
CREATE TABLE examples (layer TEXT, c INTEGER, rank INTEGER, text_id INTEGER, pos INTEGER, \
max_ci REAL,
                       start INTEGER, token_ids TEXT, ci TEXT, \
PRIMARY KEY (layer, c, rank)) WITHOUT ROWID;
CREATE TABLE cofiring (layer TEXT, c INTEGER, other_layer TEXT, other_c INTEGER, count INTEGER, \
jaccard REAL,
                       PRIMARY KEY (layer, c, other_layer, other_c)) WITHOUT ROWID;
CREATE TABLE attributions (src_layer TEXT, src_c INTEGER, tgt_layer TEXT, tgt_c INTEGER, value REAL,
                           abs_value REAL, count INTEGER, \
PRIMARY KEY (tgt_layer, tgt_c, src_layer, src_c)) WITHOUT ROWID;
CREATE TABLE attribution_inflow (layer TEXT, c INTEGER, total REAL, PRIMARY KEY (layer, c));
CREATE INDEX attributions_src ON attributions (src_layer, src_c);
CREATE TABLE labels (layer TEXT, c INTEGER, label TEXT, PRIMARY KEY (layer, c));
"""


def harvest_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / FILENAME


def write_harvest(
    run_dir: str | Path, h: Harvest, labels: dict[tuple[str, int], str] | None = None
) -> Path:
    """Write ``h`` as ``run_dir/harvest.sqlite`` atomically (temp file in the same directory, then
    replace)."""
    run_dir = Path(run_dir)
    require(run_dir.is_dir(), f"run directory {run_dir} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=".harvest-", suffix=".sqlite.tmp", dir=run_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        con = sqlite3.connect(tmp)
        try:
            con.executescript(_SCHEMA)
            meta = {
                "schema_version": SCHEMA_VERSION,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "config": asdict(h.config),
                "layers": h.layers,
                "n_texts": len(h.texts),
                "n_tokens": h.n_tokens,
                "attribution_method": h.attribution_method if h.config.attributions else None,
            }
            con.executemany(
                "INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()]
            )
            con.executemany(
                "INSERT INTO texts VALUES (?, ?, ?)",
                [(i, t, json.dumps(ids)) for i, (t, ids) in enumerate(h.texts)],
            )
            con.executemany(
                "INSERT INTO components VALUES (?, ?, ?, ?, ?, ?)",
                [(s.layer, s.c, s.n_firing, s.density, s.mean_ci, s.max_ci) for s in h.components],
            )
            con.executemany(
                "INSERT INTO token_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        layer,
                        c,
                        side,
                        s.token_id,
                        s.count,
                        s.token_count,
                        s.recall,
                        s.precision,
                        s.pmi,
                    )
                    for (layer, c, side), rows in h.token_stats.items()
                    for s in rows
                ],
            )
            con.executemany(
                "INSERT INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        layer,
                        c,
                        r,
                        e.text_id,
                        e.pos,
                        e.max_ci,
                        e.start,
                        json.dumps(e.token_ids),
                        json.dumps(e.ci),
                    )
                    for (layer, c), rows in h.examples.items()
                    for r, e in enumerate(rows)
                ],
            )
            con.executemany(
                "INSERT INTO cofiring VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (layer, c, o.layer, o.c, o.count, o.jaccard)
                    for (layer, c), rows in h.cofiring.items()
                    for o in rows
                ],
            )
            con.executemany(
                "INSERT INTO attributions VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*key, a.value, a.abs_value, a.count) for key, a in h.attributions.items()],
            )
            con.executemany(
                "INSERT INTO attribution_inflow VALUES (?, ?, ?)",
                [(lay, c, v) for (lay, c), v in h.attribution_inflow.items()],
            )
            con.executemany(
                "INSERT INTO labels VALUES (?, ?, ?)",
                [(lay, c, lab) for (lay, c), lab in (labels or {}).items()],
            )
            con.commit()
        finally:
            con.close()
        os.replace(tmp, harvest_path(run_dir))
    finally:
        tmp.unlink(missing_ok=True)
    return harvest_path(run_dir)


class HarvestStore:
    """Read-only view of a harvest.sqlite file. Opens a connection per query (safe across
    threads)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            self.path = harvest_path(self.path)
        if not self.path.is_file():
            raise FileNotFoundError(
                f"no harvest data at {self.path}; create it with: spd-harvest {self.path.parent} "
                "--texts FILE"
            )
        self.meta = {k: json.loads(v) for k, v in self._rows("SELECT key, value FROM meta")}
        version = self.meta.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(
                f"{self.path}: harvest schema version {version!r}; this spd-mcp reads "
                f"{SCHEMA_VERSION}. Re-run spd-harvest"
            )
        self.layers: dict[str, int] = self.meta["layers"]

    def _rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            return con.execute(sql, args).fetchall()
        finally:
            con.close()

    def check(self, layer: str, c: int) -> None:
        if layer not in self.layers:
            raise ValueError(f"unknown layer {layer!r}; valid layers: {', '.join(self.layers)}")
        if not 0 <= c < self.layers[layer]:
            raise ValueError(
                f"component index {c} out of range for layer {layer!r}; valid: "
                f"0..{self.layers[layer] - 1}"
            )

    def text(self, text_id: int) -> tuple[str, list[int]]:
        rows = self._rows("SELECT text, token_ids FROM texts WHERE id = ?", (text_id,))
        require(rows, f"text id {text_id} out of range; valid: 0..{self.meta['n_texts'] - 1}")
        return rows[0][0], json.loads(rows[0][1])


def alive_counts(store: HarvestStore) -> dict[str, int]:
    """Per layer, the components whose CI exceeded the harvest threshold on at least one harvested
    token."""
    rows = dict(
        store._rows("SELECT layer, COUNT(*) FROM components WHERE n_firing > 0 GROUP BY layer")
    )
    return {layer: int(rows.get(layer, 0)) for layer in store.layers}


@dataclass(frozen=True)
class Page:
    total: int
    offset: int
    limit: int
    items: list[Any]


TokenOrder = Literal["pmi", "precision", "recall", "count"]


def component_summary(
    store: HarvestStore,
    layer: str,
    c: int,
    top_k: int = 10,
    order: TokenOrder = "pmi",
    min_count: int = 1,
) -> dict[str, Any]:
    """Density, mean/max CI, top input and output tokens (by ``order``, count ≥ ``min_count``),
    co-firing, label."""
    store.check(layer, c)
    require(
        order in ("pmi", "precision", "recall", "count"),
        f"order must be pmi, precision, recall or count; got {order!r}",
    )
    row = store._rows(
        "SELECT n_firing, density, mean_ci, max_ci FROM components WHERE layer = ? AND c = ?",
        (layer, c),
    )
    n_firing, density, mean_ci, max_ci = row[0]
    tokens = {}
    for side in ("input", "output"):
        rows = store._rows(
            f"SELECT token_id, count, token_count, recall, precision, pmi FROM token_stats "
            f"WHERE layer = ? AND c = ? AND side = ? AND count >= ? "
            f"ORDER BY {order} DESC, count DESC, token_id LIMIT ?",
            (layer, c, side, min_count, top_k),
        )
        tokens[side] = [
            dict(
                zip(
                    ("token_id", "count", "token_count", "recall", "precision", "pmi"),
                    r,
                    strict=True,
                )
            )
            for r in rows
        ]
    cof = store._rows(
        "SELECT other_layer, other_c, count, jaccard FROM cofiring WHERE layer = ? AND c = ? "
        "ORDER BY jaccard DESC LIMIT ?",
        (layer, c, top_k),
    )
    label = store._rows("SELECT label FROM labels WHERE layer = ? AND c = ?", (layer, c))
    return {
        "n_firing": n_firing,
        "density": density,
        "mean_ci": mean_ci,
        "max_ci": max_ci,
        "input_tokens": tokens["input"],
        "output_tokens": tokens["output"],
        "cofiring": [dict(zip(("layer", "c", "count", "jaccard"), r, strict=True)) for r in cof],
        "label": label[0][0] if label else None,
        "n_tokens": store.meta["n_tokens"],
        "threshold": store.meta["config"]["threshold"],
    }


def activation_examples(
    store: HarvestStore, layer: str, c: int, limit: int = 10, offset: int = 0
) -> Page:
    """Top activating contexts, largest CI first: dicts with text_id, pos, max_ci, start, token_ids,
    ci."""
    store.check(layer, c)
    total = store._rows("SELECT COUNT(*) FROM examples WHERE layer = ? AND c = ?", (layer, c))[0][0]
    rows = store._rows(
        "SELECT text_id, pos, max_ci, start, token_ids, ci FROM examples WHERE layer = ? AND c = ? "
        "ORDER BY rank LIMIT ? OFFSET ?",
        (layer, c, limit, offset),
    )
    items = [
        {
            "text_id": t,
            "pos": p,
            "max_ci": m,
            "start": s,
            "token_ids": json.loads(ids),
            "ci": json.loads(ci),
        }
        for t, p, m, s, ids, ci in rows
    ]
    return Page(total, offset, limit, items)


def search_texts(
    store: HarvestStore, query: str, limit: int = 10, offset: int = 0, context_chars: int = 60
) -> Page:
    """Occurrences of ``query`` (case-insensitive substring) in the corpus: text_id, char offset,
    snippet."""
    require(query, "query must be a non-empty string")
    needle = query.lower()
    hits = []
    for tid, text in store._rows(
        "SELECT id, text FROM texts WHERE instr(lower(text), ?) > 0 ORDER BY id", (needle,)
    ):
        low, start = text.lower(), 0
        while (i := low.find(needle, start)) >= 0:
            hits.append((tid, i, text))
            start = i + 1
    items = []
    for tid, i, text in hits[offset : offset + limit]:
        lo, hi = max(0, i - context_chars), min(len(text), i + len(query) + context_chars)
        items.append(
            {"text_id": tid, "char_offset": i, "snippet": text[lo:hi], "snippet_offset": i - lo}
        )
    return Page(len(hits), offset, limit, items)


Sign = Literal["positive", "negative", "abs"]


def dataset_attributions(
    store: HarvestStore, layer: str, c: int, top_k: int = 10, sign: Sign = "abs"
) -> dict[str, list[dict[str, Any]]]:
    """Top sources (what feeds ``layer:c``) and targets (what it feeds) across the corpus.

    Ranked by signed value (``positive``: largest first; ``negative``: most negative first) or by
    |value| (``abs``). ``normalised`` divides a pair's signed sum by the total |sum| flowing into
    the pair's target: for a source, its share of everything that feeds ``layer:c``; for a target,
    the share of that target's inputs that comes from ``layer:c``.
    """
    store.check(layer, c)
    require(
        sign in ("positive", "negative", "abs"),
        f"sign must be positive, negative or abs; got {sign!r}",
    )
    require(
        store.meta.get("attribution_method"),
        "this harvest has no dataset attributions; re-run spd-harvest without --no-attributions",
    )
    order = {"positive": "value DESC", "negative": "value ASC", "abs": "abs(value) DESC"}[sign]
    cond = {"positive": "AND value > 0", "negative": "AND value < 0", "abs": ""}[sign]
    inflow = dict(
        ((lay, cc), v)
        for lay, cc, v in store._rows(
            "SELECT layer, c, total FROM attribution_inflow WHERE (layer = ? AND c = ?) "
            "OR (layer, c) IN "
            "(SELECT tgt_layer, tgt_c FROM attributions WHERE src_layer = ? AND src_c = ?)",
            (layer, c, layer, c),
        )
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for role, me, other in (("sources", "tgt", "src"), ("targets", "src", "tgt")):
        rows = store._rows(
            f"SELECT {other}_layer, {other}_c, tgt_layer, tgt_c, value, abs_value, count "
            "FROM attributions "
            f"WHERE {me}_layer = ? AND {me}_c = ? {cond} ORDER BY {order} LIMIT ?",
            (layer, c, top_k),
        )
        out[role] = [
            {
                "layer": ol,
                "c": oc,
                "value": v,
                "abs_value": a,
                "count": n,
                "normalised": v / inflow[(tl, tc)] if inflow.get((tl, tc)) else 0.0,
            }
            for ol, oc, tl, tc, v, a, n in rows
        ]
    return out
