"""The parts every status page is made of: the skeleton, tables, a pager, and value formats.

Each page refreshes itself (``<meta http-equiv="refresh">``), is readable without JavaScript
(it has none: the site's Content-Security-Policy forbids scripts), and styles itself with
one inline style sheet.  ``esc`` is the only way text enters a page: every helper here
escapes what it is given, so a hostile name is shown, never interpreted.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Final, TypeVar
from urllib.parse import urlencode, urlsplit

#: How often a page reloads itself, in seconds.
REFRESH_S: Final = 10
#: Rows on one page of a long list.
PAGE_ROWS: Final = 50

_STYLE: Final = (
    "body{font-family:sans-serif;margin:1.5em;color:#222}"
    "nav a{margin-right:1em}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "th,td{border:1px solid #bbb;padding:.25em .6em;text-align:left;vertical-align:top}"
    "th{background:#eee}"
    ".note{background:#fff8d8;border:1px solid #e0c860;padding:.5em;max-width:60em}"
    ".pager a,.pager span{margin-right:1em}"
)

T = TypeVar("T")


def esc(value: object) -> str:
    """``value`` as text safe inside an element or a quoted attribute."""
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Cell:
    """A table cell whose HTML is already made (a link, say); plain values are escaped instead."""

    markup: str


def link(href: str, text: object) -> Cell:
    """A link to ``href`` (escaped) showing ``text`` (escaped)."""
    return Cell(f'<a href="{esc(href)}">{esc(text)}</a>')


def web_link(url: str, text: object) -> Cell:
    """A link to ``url`` only if it is an http(s) URL with a host (a tracking URL is the AM's to set:
    anything else, ``javascript:`` included, is shown as text)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return Cell(esc(text))
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return Cell(esc(text))
    return link(url, text)


def cell(value: object) -> str:
    return value.markup if isinstance(value, Cell) else esc(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], empty: str = "none") -> str:
    """A table of ``rows`` under ``headers``; a row saying ``empty`` when there are none."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>\n" for row in rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}">{esc(empty)}</td></tr>\n'
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def definitions(rows: Iterable[tuple[str, object]]) -> str:
    """A two-column table of names and values."""
    return "<table>\n" + "".join(f"<tr><th>{esc(k)}</th><td>{cell(v)}</td></tr>\n" for k, v in rows) + "</table>\n"


@dataclass(frozen=True)
class PageSlice:
    """Page ``number`` (1-based) of ``pages`` of a list of ``total`` items: ``first`` .. ``first + len - 1``."""

    number: int
    pages: int
    total: int
    first: int


def page_of(items: Sequence[T], number: int, rows: int = PAGE_ROWS) -> tuple[list[T], PageSlice]:
    """The items on page ``number`` (clamped to the pages there are) and where that page is."""
    pages = max(1, math.ceil(len(items) / rows))
    number = min(max(number, 1), pages)
    first = (number - 1) * rows
    return list(items[first : first + rows]), PageSlice(number, pages, len(items), first)


def pager(where: PageSlice, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
    """Links to the previous and next pages of a list at ``path`` (``query`` kept), and which page this is."""
    def href(number: int) -> str:
        return f"{path}?{urlencode([*query, ('page', str(number))])}"

    if where.total == 0:
        return ""
    last = min(where.first + PAGE_ROWS, where.total)
    parts = [f"<span>{where.first + 1}-{last} of {where.total} (page {where.number} of {where.pages})</span>"]
    if where.number > 1:
        parts.append(link(href(1), "first").markup)
        parts.append(link(href(where.number - 1), "previous").markup)
    if where.number < where.pages:
        parts.append(link(href(where.number + 1), "next").markup)
        parts.append(link(href(where.pages), "last").markup)
    return '<p class="pager">' + " ".join(parts) + "</p>\n"


def page(title: str, nav: Sequence[tuple[str, str]], body: str, refresh_s: int = REFRESH_S) -> str:
    """A whole page: ``title`` (escaped), the navigation links ``(href, text)``, then ``body`` (HTML)."""
    links = " ".join(link(href, text).markup for href, text in nav)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f'<meta http-equiv="refresh" content="{int(refresh_s)}">\n'
        f"<title>{esc(title)}</title>\n<style>{_STYLE}</style></head>\n"
        f"<body>\n<nav>{links}</nav>\n<h1>{esc(title)}</h1>\n{body}</body></html>\n"
    )


def note(text_html: str) -> str:
    """A highlighted paragraph (``text_html`` is markup: escape what goes in it)."""
    return f'<p class="note">{text_html}</p>\n'


# ----------------------------------------------------------------- value formats


def when(ms: int) -> str:
    """A time in ms since the epoch as UTC, or "-" for none (0)."""
    if ms <= 0:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(ms: float) -> str:
    """A duration as days, hours, minutes and seconds (the two largest units that are not zero)."""
    seconds = max(int(ms // 1000), 0)
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    parts: list[str] = []
    for name, size in units:
        if seconds >= size or (name == "s" and not parts):
            parts.append(f"{seconds // size}{name}")
            seconds %= size
    return " ".join(parts[:2])


def percent(value: float) -> str:
    return f"{value:.1f}%"
