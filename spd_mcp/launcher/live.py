"""`spd-investigate serve`: the HTML pages of every investigation and swarm under --out, built
afresh on each request, served on 127.0.0.1 only. A page of something still running reloads
itself every few seconds, so it follows the investigation live; `/` lists them all."""

from __future__ import annotations

import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TextIO

from spd_mcp.launcher.html_report import badge, investigation_html, page
from spd_mcp.launcher.layout import InvestigationDir
from spd_mcp.launcher.md_html import esc

HOST = "127.0.0.1"
REFRESH_S = 3.0
_ROUTE = re.compile(r"^/(inv|swarm)/((?:inv|swarm)-[A-Za-z0-9_-]+)/?$")


def index_html(root: Path) -> str:
    from spd_mcp.launcher.swarm_watch import list_swarms
    from spd_mcp.launcher.watch import list_investigations

    rows = [("swarm", r) for r in list_swarms(root)] + [
        ("inv", r) for r in list_investigations(root)
    ]
    body = [
        f"<h1>Investigations under <code>{esc(str(root))}</code></h1>",
        "<table><thead><tr><th>id</th><th>status</th><th>question</th></tr></thead><tbody>",
    ]
    body += [
        f'<tr><td><a href="/{kind}/{esc(r["id"])}">{esc(r["id"])}</a></td>'
        f"<td>{badge(str(r['status']))}</td>"
        f"<td>{esc(str(r['question']))}</td></tr>"
        for kind, r in reversed(rows)
    ]
    body.append("</tbody></table>" + ("" if rows else "<p>None yet.</p>"))
    return page("spd-investigate", body, REFRESH_S)


def render_path(root: Path, path: str) -> str | None:
    """The page for a request path, or None when it names nothing under ``root``."""
    if path in ("/", "/index.html"):
        return index_html(root)
    m = _ROUTE.match(path)
    if m is None:
        return None
    kind, name = m.groups()
    target = root / name
    if kind == "inv" and (target / "metadata.json").is_file():
        from spd_mcp.launcher.findings import read_findings

        return investigation_html(read_findings(InvestigationDir(target)), REFRESH_S)
    if kind == "swarm" and (target / "swarm.json").is_file():
        from spd_mcp.launcher.html_swarm import swarm_html

        return swarm_html(target, REFRESH_S)
    return None


def make_server(root: Path, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            text = render_path(root, self.path.split("?", 1)[0])
            status = 200 if text is not None else 404
            data = (
                text if text is not None else page("not found", ["<p>Nothing here.</p>"])
            ).encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    return ThreadingHTTPServer((HOST, port), Handler)


def serve(root: Path, port: int, out: TextIO) -> int:
    server = make_server(root, port)
    out.write(f"serving {root} on http://{HOST}:{server.server_address[1]}/ (Ctrl-C stops)\n")
    out.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
