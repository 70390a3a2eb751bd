"""A self-contained HTML page: images embedded as base64 PNG, inline style, no script, nothing fetched."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child, td.text { text-align: left; }
img { max-width: 100%; margin: .4em 0; }
pre { background: #f7f7f7; padding: .8em; overflow-x: auto; font-size: .85em; }
.fail { color: #fff; background: #c0392b; font-weight: bold; }
.pass { color: #fff; background: #27ae60; font-weight: bold; }
.note { color: #555; font-size: .9em; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.gallery img { max-width: 48%; }
"""


def image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def gallery(*parts: str) -> str:
    """Side by side where the page is wide enough."""
    return f'<div class="gallery">{"".join(parts)}</div>'


def text(value: str) -> str:
    return f"<p>{html.escape(value)}</p>"


def note(value: str) -> str:
    return f'<p class="note">{html.escape(value)}</p>'


def preformatted(value: str) -> str:
    return f"<pre>{html.escape(value)}</pre>"


def cell(value: object) -> str:
    """A table cell: floats to 4 decimals, None as a dash; a ``(text, css_class)`` pair gets the class."""
    css = ""
    if isinstance(value, tuple):
        value, css = value
    elif isinstance(value, str):
        css = "text"  # words align left, numbers right
    css = f' class="{html.escape(css)}"' if css else ""
    if value is None:
        shown = "–"
    elif isinstance(value, float):
        shown = f"{value:.4f}"
    else:
        shown = str(value)
    return f"<td{css}>{html.escape(shown)}</td>"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(title: str, *parts: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{''.join(parts)}</section>"


def page(title: str, sections: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n"
    )
