"""The report as one self-contained HTML page: inline CSS, PNGs as base64 data URIs, no script.

Written by hand with :mod:`html` escaping rather than with a template engine: the page is
a flat list of sections of figures and small tables, and a template library would be one
more dependency for a few dozen lines.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Markup", "Picture", "Section", "details", "paragraph", "preformatted", "render", "side_by_side", "table"]


class Markup(str):
    """HTML that is already escaped, placed into the page as it is."""


@dataclass(frozen=True)
class Picture:
    """A PNG file shown in the page (embedded), with its caption."""

    path: Path
    caption: str


@dataclass
class Section:
    """One ``<section>`` with an anchor for the table of contents."""

    anchor: str
    title: str
    items: list[Picture | Markup] = field(default_factory=list)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 0; color: #1d232a;
       background: #f6f7f9; line-height: 1.45; }
header { background: #24303d; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 1.5em; }
header p { margin: 0; color: #cfd8e3; }
nav { background: #fff; border-bottom: 1px solid #d8dde3; padding: 8px 32px; position: sticky; top: 0; }
nav a { margin-right: 18px; color: #1f5fa8; text-decoration: none; font-size: 0.95em; }
main { max-width: 1280px; margin: 0 auto; padding: 8px 32px 48px; }
section { background: #fff; border: 1px solid #d8dde3; border-radius: 6px; margin: 20px 0; padding: 8px 24px 20px; }
h2 { border-bottom: 1px solid #e3e7ec; padding-bottom: 6px; }
figure { margin: 18px 0; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid #eceff2; }
figcaption { color: #4a5663; font-size: 0.92em; margin-top: 6px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 0.93em; }
th, td { border: 1px solid #d8dde3; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #eef1f4; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tbody th { text-align: left; font-weight: 600; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
div.row { display: flex; flex-wrap: wrap; gap: 0 28px; align-items: flex-start; }
details summary { cursor: pointer; color: #1f5fa8; margin: 8px 0; }
pre { background: #f3f5f7; border: 1px solid #e0e4e8; padding: 12px; overflow-x: auto; font-size: 0.85em; }
p.note { color: #6a5300; background: #fff8e1; border-left: 4px solid #f0c24b; padding: 6px 12px; }
"""


def paragraph(text: str, note: bool = False) -> Markup:
    """A paragraph of plain text (escaped); ``note``: set off as a remark about missing data."""
    css = ' class="note"' if note else ""
    return Markup(f"<p{css}>{html.escape(text)}</p>")


def preformatted(text: str) -> Markup:
    return Markup(f"<pre>{html.escape(text)}</pre>")


def table(header: Sequence[str] | None, rows: Sequence[Sequence[object]], caption: str = "") -> Markup:
    """A table of plain values (escaped); numbers are right-aligned and floats shown to 4 significant digits.

    ``header`` None: a key-value table (first column as row headings).
    """
    title = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    if header is None:
        body = "".join(f"<tr><th>{html.escape(str(row[0]))}</th>" + "".join(_cell(v) for v in row[1:]) + "</tr>"
                       for row in rows)
        return Markup(f"<table>{title}<tbody>{body}</tbody></table>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return Markup(f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def side_by_side(items: Sequence[Markup]) -> Markup:
    """Tables next to each other (wrapping on narrow screens)."""
    return Markup('<div class="row">' + "".join(items) + "</div>")


def details(summary: str, content: Markup) -> Markup:
    """Content folded under a summary line (HTML's own <details>: no script)."""
    return Markup(f"<details><summary>{html.escape(summary)}</summary>{content}</details>")


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f'<td class="number">{value:.4g}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="number">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _figure(picture: Picture) -> str:
    data = base64.b64encode(picture.path.read_bytes()).decode("ascii")
    caption = html.escape(picture.caption)
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>")


def render(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole page."""
    links = "".join(f'<a href="#{html.escape(s.anchor)}">{html.escape(s.title)}</a>' for s in sections)
    parts = []
    for section in sections:
        items = "".join(_figure(item) if isinstance(item, Picture) else str(item) for item in section.items)
        parts.append(f'<section id="{html.escape(section.anchor)}"><h2>{html.escape(section.title)}</h2>'
                     f"{items}</section>")
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header>"
        f"<nav>{links}</nav><main>{''.join(parts)}</main></body></html>\n"
    )
