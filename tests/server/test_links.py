"""Links planted in the workspace before each writing tool: nothing outside changes, nothing is
half-written.

For every writing tool, a symbolic link and (in a second run) a hard link to a file outside the
workspace are planted at every name the tool writes: its final names and the temporary names
earlier versions used. Links at temporary names are never reused (the call succeeds inside, with
plain files); links at final names are refused with an error that says which link, and the refusal
leaves nothing behind. Also: the files opened at start-up (events, store, server.log) and
``safe_files`` itself when the temporary names it draws are already taken.
"""

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from spd_mcp.common.events import EventLog
from spd_mcp.server import safe_files
from spd_mcp.server.store import Store
from tests.server.helpers import err, make_server, ok
from tests.server.test_tools_records import store_graph

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
KEEP = "outside: must not change\n"
EXPL = {
    "subject_prompt": "p",
    "behaviour": "b",
    "explanation": "e",
    "confidence": "low",
    "components": [{"component": "0.mlp.up:1", "role": "r"}],
}

# tool -> (arguments, final names it writes, temporary names earlier versions wrote)
WRITERS: dict[str, tuple[dict[str, Any], list[str], list[str]]] = {
    "update_research_log": ({"markdown": "note"}, ["research_log.md"], []),
    "record_hypothesis": (
        {"hypothesis_id": "h1", "statement": "s"},
        ["hypotheses.jsonl", "research_log.md"],
        [],
    ),
    "save_explanation": (EXPL, ["explanations.jsonl"], []),
    "set_investigation_summary": (
        {"title": "t", "summary": "s"},
        ["summary.json"],
        [".summary.json.tmp"],
    ),
    "save_graph_artifact": (
        {"graph_id": 1, "artifact_id": "evil"},
        ["artifacts/evil.json", "artifacts/evil.svg"],
        ["artifacts/.evil.json.tmp", "artifacts/.evil.svg.tmp"],
    ),
    "export_edit": ({"edit_id": "e1"}, ["exports/e1"], [f"exports/.e1.tmp{os.getpid()}"]),
}


def plant(ws: Path, rel: str, kind: str, outside: Path) -> None:
    path = ws / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    target = outside / ("dir" if rel.startswith("exports/") and kind == "symlink" else "file.txt")
    if kind == "symlink":
        os.symlink(target, path)
    else:
        os.link(outside / "file.txt", path)


def outside_state(outside: Path) -> dict[str, str]:
    return {
        str(p.relative_to(outside)): p.read_text() if p.is_file() else "<dir>"
        for p in sorted(outside.rglob("*"))
    }


def workspace_files(ws: Path) -> dict[str, tuple[int, int]]:
    """Every entry under the workspace (no link followed): (mode type bits, link count)."""
    out = {}
    for p in sorted(ws.rglob("*")):
        st = p.lstat()
        out[str(p.relative_to(ws))] = (stat.S_IFMT(st.st_mode), st.st_nlink)
    return out


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    out = tmp_path / "outside"
    (out / "dir").mkdir(parents=True)
    (out / "file.txt").write_text(KEEP)
    return out


async def _prepare(c: Client, tool: str) -> None:
    if tool == "export_edit":
        assert (await ok(c, "edit_component", {"components": ["0.mlp.up:3"], "method": "remove"}))[
            "result"
        ]["edit_id"] == "e1"


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
@pytest.mark.parametrize("tool", list(WRITERS))
async def test_links_at_temporary_names_are_never_used(
    lm, tmp_path: Path, outside: Path, tool: str, kind: str
) -> None:
    args, finals, temps = WRITERS[tool]
    ws = tmp_path / "ws"
    await store_graph(ws)
    before = outside_state(outside)
    async with Client(make_server(lm, ws)) as c:
        await _prepare(c, tool)
        for rel in temps:
            plant(ws, rel, kind, outside)
        planted = {rel: (ws / rel).lstat() for rel in temps}
        await ok(c, tool, args)
    assert outside_state(outside) == before
    for rel, st in planted.items():  # untouched: still the planted link
        assert (ws / rel).lstat().st_ino == st.st_ino
    for rel in finals:
        st = (ws / rel).lstat()
        assert not stat.S_ISLNK(st.st_mode), rel
        if stat.S_ISREG(st.st_mode):
            assert st.st_nlink == 1, rel
    leftovers = [n for n in workspace_files(ws) if n.endswith(".tmp") and n not in temps]
    assert leftovers == [], leftovers


@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
@pytest.mark.parametrize("tool", list(WRITERS))
async def test_links_at_final_names_are_refused_leaving_nothing(
    lm, tmp_path: Path, outside: Path, tool: str, kind: str
) -> None:
    args, finals, _ = WRITERS[tool]
    if tool == "export_edit" and kind == "hardlink":
        finals = [
            "exports/e1/model.safetensors"
        ]  # a directory cannot be hard linked: plant inside an export
        args = {**args, "overwrite": True}
    ws = tmp_path / "ws"
    await store_graph(ws)
    before = outside_state(outside)
    async with Client(make_server(lm, ws)) as c:
        await _prepare(c, tool)
        for rel in finals:
            plant(ws, rel, kind, outside)
        files = workspace_files(ws)
        r = await c.call_tool(tool, args)
        if r.is_error:
            text = r.content[0].text
            assert (
                "symbolic link" in text or "hard links" in text or "link or not a directory" in text
            ), text
            assert "internal error" not in text
            assert {
                k: v for k, v in workspace_files(ws).items() if not k.startswith("store.sqlite")
            } == {k: v for k, v in files.items() if not k.startswith("store.sqlite")}, (
                "a refused call left something behind"
            )
        else:
            # succeeded inside: only for a hard link inside an export that overwrite replaces whole
            assert tool == "export_edit" and kind == "hardlink", r.structured_content
            st = (ws / finals[0]).lstat()
            assert stat.S_ISREG(st.st_mode) and st.st_nlink == 1
    assert outside_state(outside) == before


@pytest.mark.parametrize(
    "name", ["events.jsonl", "store.sqlite", "store.sqlite-wal", "research_log.md"]
)
@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
async def test_startup_files_planted_as_links_are_refused(
    tmp_path: Path, outside: Path, name: str, kind: str
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    plant(ws, name, kind, outside)
    before = outside_state(outside)
    if name == "events.jsonl":
        with pytest.raises(ValueError, match="symbolic link|hard links"):
            EventLog(ws / name, "agent", source="server").emit("server_start")
    elif name.startswith("store"):
        with pytest.raises(ValueError, match="symbolic link|hard links"):
            await Store.open(ws / "store.sqlite")
    else:
        with pytest.raises(ValueError, match="symbolic link|hard links"):
            safe_files.append_bytes(ws, name, b"x")
    assert outside_state(outside) == before


def test_server_log_planted_as_a_link_stops_the_server_with_one_line(
    tmp_path: Path, outside: Path
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    plant(ws, "server.log", "symlink", outside)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from spd_mcp.server.__main__ import parse_args, setup_logging; "
            f"setup_logging(parse_args(['--run', 'demo', '--workspace', {str(ws)!r}]))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "server.log: it is a symbolic link" in proc.stderr, proc.stderr
    assert outside_state(outside) == {"dir": "<dir>", "file.txt": KEEP}


def test_taken_temporary_names_are_skipped(tmp_path: Path, outside: Path, monkeypatch) -> None:
    """The first temporary names drawn are planted links: the write uses the next free name."""
    folder = tmp_path / "ws"
    folder.mkdir()
    names = iter([".a.json.1.tmp", ".a.json.2.tmp", ".a.json.3.tmp"])
    monkeypatch.setattr(safe_files, "tmp_name", lambda name: next(names))
    os.symlink(outside / "file.txt", folder / ".a.json.1.tmp")
    os.link(outside / "file.txt", folder / ".a.json.2.tmp")
    safe_files.write_file(folder, "a.json", b"{}")
    assert (folder / "a.json").read_text() == "{}" and (folder / "a.json").stat().st_nlink == 1
    assert (outside / "file.txt").read_text() == KEEP
    assert sorted(p.name for p in folder.iterdir()) == [".a.json.1.tmp", ".a.json.2.tmp", "a.json"]


def test_a_group_write_refused_midway_leaves_nothing(tmp_path: Path, outside: Path) -> None:
    folder = tmp_path / "ws"
    folder.mkdir()
    os.symlink(outside / "file.txt", folder / "b.svg")
    with pytest.raises(safe_files.UnsafePathError, match="b.svg: it is a symbolic link"):
        safe_files.write_files(folder, {"b.json": b"{}", "b.svg": b"<svg/>"})
    assert sorted(p.name for p in folder.iterdir()) == ["b.svg"]
    assert (outside / "file.txt").read_text() == KEEP


def test_a_folder_reached_through_a_link_is_refused(tmp_path: Path, outside: Path) -> None:
    link = tmp_path / "ws"
    os.symlink(outside / "dir", link)
    with pytest.raises(safe_files.UnsafePathError, match="symbolic link"):
        safe_files.write_file(link, "a.json", b"{}")
    with pytest.raises(safe_files.UnsafePathError, match="symbolic link"):
        safe_files.append_bytes(link, "log.md", b"x")
    assert list((outside / "dir").iterdir()) == []


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "research_log.md")
    with pytest.raises(safe_files.UnsafePathError, match="not a regular file"):
        safe_files.append_bytes(tmp_path, "research_log.md", b"x")


async def test_refusals_are_logged_as_tool_errors(lm, tmp_path: Path, outside: Path) -> None:
    ws = tmp_path / "ws"
    await store_graph(ws)
    async with Client(make_server(lm, ws)) as c:
        plant(ws, "summary.json", "hardlink", outside)
        text = await err(c, "set_investigation_summary", {"title": "t", "summary": "s"})
    assert "summary.json: it has 2 hard links" in text
    events = (ws / "events.jsonl").read_text()
    assert "hard links" in events
