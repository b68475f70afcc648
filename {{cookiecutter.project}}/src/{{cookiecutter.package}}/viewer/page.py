"""The HTML shell every view shares: escaped text, the data block, and a policy that forbids requests.

Offline by construction, not by care: the Content-Security-Policy allows no source at all
(`default-src 'none'`) except the page's own inline script and stylesheet, pinned by their sha256,
so the browser itself refuses any fetch, image, font or frame, whatever a row of data contains.
The data travels as JSON in a `<script type="application/json">` block with `<`, `>`, `&` and the
two JavaScript line separators escaped, so no string in it can close the block.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import assets

_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def esc(value: Any) -> str:
    """Text as HTML text or attribute value (quotes escaped too)."""
    return html.escape("" if value is None else str(value), quote=True)


def embed_json(data: Any) -> str:
    """JSON that is safe between `<script type="application/json">` and `</script>`."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True).translate(_JSON_ESCAPES)


def source_hash(text: str) -> str:
    """A CSP hash source for an inline script or style: 'sha256-<base64>'."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def policy(script: str, style: str) -> str:
    """The page's Content-Security-Policy: nothing but its own inline script and style."""
    return (
        f"default-src 'none'; script-src {source_hash(script)}; style-src {source_hash(style)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )


@dataclass(frozen=True)
class Section:
    """A titled table of plain-text cells: how a view takes extra sections (e.g. a judge's verdicts)."""

    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    note: str = ""


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An HTML table of escaped cells; columns in `numeric` align right."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers) if any(headers) else ""
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i in numeric else ''}>{esc(c)}</td>" for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    )
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f'<table class="grid">{thead}<tbody>{body}</tbody></table>'


def section(part: Section) -> str:
    note = f"<p>{esc(part.note)}</p>" if part.note else ""
    return f"<h2>{esc(part.title)}</h2>{note}{table(part.headers, part.rows)}"


def controls(selects: Mapping[str, Sequence[tuple[str, str]]]) -> str:
    """The filter bar: one <select> per entry (id -> (value, label) options), a search box, the count."""
    parts = []
    for name, choices in selects.items():
        opts = "".join(f'<option value="{esc(v)}">{esc(label)}</option>' for v, label in choices)
        parts.append(f'<label>{esc(name)} <select id="{esc(name)}">{opts}</select></label>')
    parts.append('<input type="search" id="search" placeholder="search id, input, output…" aria-label="search">')
    parts.append('<span id="count" aria-live="polite"></span>')
    return f'<div class="controls">{"".join(parts)}</div>'


def rows_container() -> str:
    return '<div id="rows"></div><button type="button" id="more" hidden>show more</button>'


def document(title: str, body: str, data: Any) -> str:
    """The whole page: `body` is trusted HTML built with `esc`; `data` is read by the script."""
    script, style = assets.SCRIPT, assets.STYLE
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta http-equiv="Content-Security-Policy" content="{policy(script, style)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{style}</style></head>\n<body>{body}\n"
        f'<script type="application/json" id="data">{embed_json(data)}</script>\n'
        f"<script>{script}</script></body></html>\n"
    )
