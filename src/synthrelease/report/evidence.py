"""Evidence and figures as HTML: any JSON value rendered generically, figures embedded as ``data:`` URIs.

Checks put whatever explains their metrics into ``evidence`` (flagged cases, per-case tables, p-values, figure
paths) with no schema the report could rely on, so the renderer is generic: short lists of records become tables,
mappings key/value tables, long lists are cut with a count. Figures are read from the audit folder and inlined so
that ``report.html`` is one file that can be mailed or attached to a ticket; a figure path that leaves the audit
folder or a file that is not a PNG is refused, so a crafted report cannot pull other files into the page.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthrelease.report.common import format_value
from synthrelease.report.public import WITHHELD_NOTE

__all__ = ["Figure", "figure_entries", "render_evidence", "render_figures", "render_value"]

MAX_ROWS = 20  # rows of a table before it is cut (the JSON keeps them all)
MAX_ITEMS = 30  # items of a list of plain values
MAX_DEPTH = 4  # deeper structures print as compact JSON
MAX_TEXT = 400  # characters of one string
MAX_FIGURE_BYTES = 20 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _scalar(value: Any) -> str:
    if value is None:
        return '<span class="muted">n/a</span>'
    text = format_value(value)
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + f"… ({len(text)} characters)"
    return _esc(text)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _more(shown: int, total: int, what: str) -> str:
    if total <= shown:
        return ""
    return f'<p class="more">… {total - shown} more {what} ({total} in all; see report.json)</p>'


def _records_table(rows: Sequence[tuple[str | None, Mapping[str, Any]]], depth: int, what: str) -> str:
    """A table of records (optionally keyed: the key becomes the first column), columns in order of appearance."""
    columns: list[str] = []
    for _, rec in rows:
        columns.extend(str(k) for k in rec if str(k) not in columns)
    keyed = any(key is not None for key, _ in rows)
    head = ("<th></th>" if keyed else "") + "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = []
    for key, rec in rows[:MAX_ROWS]:
        cells = f"<th>{_esc(key)}</th>" if keyed else ""
        cells += "".join(f"<td>{render_value(rec.get(c), depth + 1)}</td>" for c in columns)
        body.append(f"<tr>{cells}</tr>")
    return (f'<table class="evidence"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            + _more(min(len(rows), MAX_ROWS), len(rows), what))


def _list(values: Sequence[Any], depth: int) -> str:
    if not values:
        return '<span class="muted">none</span>'
    if all(_is_scalar(v) for v in values):
        shown = ", ".join(_scalar(v) for v in values[:MAX_ITEMS])
        rest = f" … ({len(values) - MAX_ITEMS} more, {len(values)} in all)" if len(values) > MAX_ITEMS else ""
        return shown + _esc(rest)
    if all(isinstance(v, Mapping) for v in values):
        return _records_table([(None, v) for v in values], depth, "rows")
    items = "".join(f"<li>{render_value(v, depth + 1)}</li>" for v in values[:MAX_ROWS])
    return f"<ul>{items}</ul>" + _more(min(len(values), MAX_ROWS), len(values), "items")


def _mapping(value: Mapping[str, Any], depth: int) -> str:
    if not value:
        return '<span class="muted">none</span>'
    items = list(value.items())
    if all(isinstance(v, Mapping) and v and all(_is_scalar(x) for x in v.values()) for _, v in items):
        return _records_table([(str(k), v) for k, v in items], depth, "rows")  # e.g. per-case tables
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{render_value(v, depth + 1)}</td></tr>" for k, v in items[:MAX_ROWS])
    return f'<table class="kv">{rows}</table>' + _more(min(len(items), MAX_ROWS), len(items), "entries")


def render_value(value: Any, depth: int = 0) -> str:
    """Any JSON value as escaped HTML (tables, lists or text)."""
    if depth >= MAX_DEPTH and not _is_scalar(value):
        text = json.dumps(value, default=str)
        return f"<code>{_esc(text[:MAX_TEXT] + ('…' if len(text) > MAX_TEXT else ''))}</code>"
    if isinstance(value, Mapping):
        return _mapping(value, depth)
    if isinstance(value, list | tuple):
        return _list(value, depth)
    return _scalar(value)


@dataclass(frozen=True)
class Figure:
    path: str  # relative to the audit folder
    real: bool  # shows (or may show) real data: never in a public page
    caption: dict[str, Any]  # the other plain fields of its evidence entry (e.g. the synthetic case shown)


def figure_entries(evidence: Any, inherited_real: bool = False) -> Iterator[Figure]:
    """Every ``{"figure": path, ...}`` in the evidence, anywhere. A figure counts as public only if its entry
    says ``contains_real_data: false`` and no enclosing entry says ``true`` (unknown is treated as real)."""
    if isinstance(evidence, Mapping):
        here_real = inherited_real or evidence.get("contains_real_data") is True
        path = evidence.get("figure")
        if isinstance(path, str):
            real = here_real or evidence.get("contains_real_data") is not False
            caption = {str(k): v for k, v in evidence.items()
                       if k not in ("figure", "contains_real_data") and _is_scalar(v)}
            yield Figure(path, real, caption)
        for v in evidence.values():
            yield from figure_entries(v, here_real)
    elif isinstance(evidence, list | tuple):
        for v in evidence:
            yield from figure_entries(v, inherited_real)


def _data_uri(audit_dir: Path, rel: str) -> tuple[str | None, str]:
    """The figure as a ``data:image/png;base64`` URI, or None and why it could not be embedded."""
    root = Path(audit_dir).resolve()
    if Path(rel).is_absolute():
        return None, "absolute path refused"
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        return None, "path outside the audit folder refused"
    if not path.is_file():
        return None, "file not found"
    if path.stat().st_size > MAX_FIGURE_BYTES:
        return None, "file too large to embed"
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        return None, "not a PNG file"
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii"), ""


def render_figures(evidence: Any, audit_dir: Path, *, public: bool) -> str:
    """The check's figures, inlined; in a public page only those marked as free of real data."""
    figures = list(figure_entries(evidence))
    shown = [f for f in figures if not (public and f.real)]
    parts = []
    for fig in shown:
        uri, problem = _data_uri(audit_dir, fig.path)
        caption = _esc(fig.path)
        if not public:
            caption += "".join(f" · {_esc(k)}: {_scalar(v)}" for k, v in fig.caption.items())
            caption += ' <span class="tag">shows real data</span>' if fig.real else ""
        if uri is None:
            parts.append(f'<p class="missing">figure not embedded ({_esc(problem)}): {_esc(fig.path)}</p>')
        else:
            parts.append(f'<figure><img src="{uri}" alt="{_esc(fig.path)}"><figcaption>{caption}</figcaption>'
                         "</figure>")
    withheld = len(figures) - len(shown)
    if withheld:
        parts.append(f'<p class="withheld">{withheld} figure{"s" if withheld != 1 else ""} withheld: '
                     "they show real patients' images.</p>")
    return f'<div class="figures">{"".join(parts)}</div>' if parts else ""


def render_evidence(evidence: Any, audit_dir: Path, *, public: bool) -> str:
    """A check's evidence section. Public: a note instead of the evidence, plus any figures free of real data."""
    if public:
        return (f'<p class="withheld">Evidence withheld: {_esc(WITHHELD_NOTE)}.</p>'
                + render_figures(evidence, audit_dir, public=True))
    if not evidence:
        return '<p class="muted">No evidence recorded.</p>'
    rest = evidence
    if isinstance(evidence, Mapping):  # figures show as images below, not as a table of paths
        rest = {k: v for k, v in evidence.items()
                if not (k == "figures" and isinstance(v, list) and all(isinstance(x, Mapping) for x in v))}
    body = render_value(rest) if rest else ""
    return f'<div class="evidence">{body}</div>' + render_figures(evidence, audit_dir, public=False)
