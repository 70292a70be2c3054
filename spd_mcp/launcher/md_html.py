"""A small, safe Markdown-to-HTML renderer for research logs: headings, paragraphs, lists, tables,
fenced code, `code`, **bold**, *emphasis* and links. Every character of the input is escaped
before any markup is added, so no tag, attribute or script of the input reaches the page; links
keep only relative, #fragment and http(s) targets. Images become links (the report shows the
drawings themselves in its own section): ``image_href`` maps an image's target to a link.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_NUMBERED = re.compile(r"^\s*\d+[.)]\s+(.*)$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_SAFE_URL = re.compile(r"^(https?://|#|[A-Za-z0-9_./-]+$)")


def esc(text: str) -> str:
    return html.escape(text, quote=True)


def _safe_url(url: str) -> str | None:
    url = url.strip()
    return url if _SAFE_URL.match(url) and ".." not in url.split("#")[0].split("/") else None


def inline(text: str, image_href: Callable[[str], str | None] = lambda _: None) -> str:
    """One line of Markdown as HTML; the text is escaped first, code spans are kept verbatim."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if len(part) > 1 and part.startswith("`") and part.endswith("`"):
            out.append(f"<code>{esc(part[1:-1])}</code>")
            continue
        out.append(_links(part, image_href))
    return "".join(out)


def _links(text: str, image_href: Callable[[str], str | None]) -> str:
    out, pos = [], 0
    for m in re.finditer(r"(!?)\[([^\]]*)\]\(([^)\s]*)\)", text):
        out.append(_emphasis(esc(text[pos : m.start()])))
        bang, label, url = m.groups()
        target = image_href(url) if bang else _safe_url(url)
        shown = _emphasis(esc(label or url)) + (" (drawing)" if bang else "")
        out.append(f'<a href="{esc(target)}">{shown}</a>' if target else shown)
        pos = m.end()
    out.append(_emphasis(esc(text[pos:])))
    return "".join(out)


def _emphasis(escaped: str) -> str:
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", escaped)


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)]


def render(
    markdown: str, image_href: Callable[[str], str | None] = lambda _: None, heading_offset: int = 2
) -> str:
    """The document as HTML; headings are shifted down by ``heading_offset`` levels (h1 -> h3)."""
    lines = markdown.splitlines()
    out: list[str] = []
    para: list[str] = []
    i = 0

    def flush() -> None:
        if para:
            out.append("<p>" + "<br>\n".join(inline(p, image_href) for p in para) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            flush()
            fence = _FENCE.match(line).group(1)  # type: ignore[union-attr]
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                body.append(lines[i])
                i += 1
            out.append("<pre><code>" + esc("\n".join(body)) + "</code></pre>")
            i += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            flush()
            level = min(6, len(heading.group(1)) + heading_offset)
            out.append(f"<h{level}>{inline(heading.group(2), image_href)}</h{level}>")
            i += 1
            continue
        if line.lstrip().startswith("|") and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1]):
            flush()
            head = _cells(line)
            rows = []
            i += 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            out.append(
                "<table><thead><tr>"
                + "".join(f"<th>{inline(c, image_href)}</th>" for c in head)
                + "</tr></thead><tbody>"
                + "".join(
                    "<tr>" + "".join(f"<td>{inline(c, image_href)}</td>" for c in r) + "</tr>"
                    for r in rows
                )
                + "</tbody></table>"
            )
            continue
        for pattern, tag in ((_BULLET, "ul"), (_NUMBERED, "ol")):
            if pattern.match(line):
                flush()
                items = []
                while i < len(lines) and pattern.match(lines[i]):
                    items.append(pattern.match(lines[i]).group(1))  # type: ignore[union-attr]
                    i += 1
                out.append(
                    f"<{tag}>"
                    + "".join(f"<li>{inline(x, image_href)}</li>" for x in items)
                    + f"</{tag}>"
                )
                break
        else:
            if line.strip():
                para.append(line.strip())
            else:
                flush()
            i += 1
    flush()
    return "\n".join(out)
