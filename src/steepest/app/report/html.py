"""A small, dependency-free HTML report: a title, sections of text, tables and PNG figures.

Figures are referenced by relative path (they live next to the report in the run directory), so a
run directory can be zipped and opened anywhere.
"""

from __future__ import annotations

import dataclasses
import html
import os
from collections.abc import Sequence
from pathlib import Path

from steepest._io import atomic_write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em} th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.holds{background:#e6f4ea} .fails{background:#fde8e8} .inconclusive{background:#fff6db}
.error{background:#f4a6a6;font-weight:bold} .undecided{background:#eeeeee;color:#555}
img{max-width:100%;border:1px solid #eee;margin:.5em 0} .muted{color:#666;font-size:.9em} pre{background:#f7f7f7;padding:.6em;overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere}
.wide{overflow-x:auto;max-width:100%}
"""


@dataclasses.dataclass
class Section:
    """One report section: a heading, paragraphs, tables (header + rows) and figure paths."""

    title: str
    text: Sequence[str] = ()
    tables: Sequence[tuple[Sequence[str], Sequence[Sequence]]] = ()
    figures: Sequence[str] = ()
    preformatted: str | None = None


#: Cell text -> CSS class: verdicts are coloured, a failed experiment is red.
_CLASSES = {
    "holds": "holds",
    "fails": "fails",
    "inconclusive": "inconclusive",
    "experiment failed": "error",
    "not decided at this size": "undecided",
}


def _cell(value) -> str:
    if isinstance(value, float):
        if value != value:
            return '<td class="num">nan</td>'
        text = f"{value:.4g}"
        return f'<td class="num">{text}</td>'
    if isinstance(value, int) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    text = html.escape(str(value))
    cls = _CLASSES.get(str(value).lower(), "")
    return f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>"


def table_html(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """An HTML table; cells reading a verdict are coloured and ``experiment failed`` is red."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    # in a horizontally scrolling box: a wide table (many optimizers, long layer names) never widens the page
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def render_report(
    title: str, sections: Sequence[Section], *, base: str | os.PathLike | None = None, subtitle: str | None = None
) -> str:
    """Render a full HTML page. Figure paths are made relative to ``base`` when given."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
    ]
    if subtitle:
        parts.append(f"<p class='muted'>{html.escape(subtitle)}</p>")
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts.extend(f"<p>{html.escape(t)}</p>" for t in s.text)
        parts.extend(table_html(h, r) for h, r in s.tables)
        if s.preformatted:
            parts.append(f"<pre>{html.escape(s.preformatted)}</pre>")
        for fig in s.figures:
            rel = os.path.relpath(fig, base) if base is not None else str(fig)
            parts.append(f"<div><img src='{html.escape(rel)}' alt='{html.escape(Path(fig).stem)}'></div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | os.PathLike, title: str, sections: Sequence[Section], subtitle: str | None = None) -> Path:
    """Render and atomically write the report to ``path`` (figures relative to its folder)."""
    path = Path(path)
    return atomic_write_text(path, render_report(title, sections, base=path.parent, subtitle=subtitle))
