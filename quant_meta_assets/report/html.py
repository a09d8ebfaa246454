"""Self-contained HTML: plotly.js inlined exactly once, no CDN, no external fonts or images.

Also the atomic file writer (temp file in the same directory, then ``os.replace``).
"""

from __future__ import annotations

import html as _html
import math
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline

PLOT_CONFIG = {"displaylogo": False, "responsive": True,
               "modeBarButtonsToRemove": ["lasso2d", "select2d"]}

CSS = """
:root { --ink:#1f2a44; --muted:#6b7385; --line:#e4e7ee; --bg:#f5f6fa; --ok:#1e8e3e; --bad:#c5221f;
        --accent:#4C78A8; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font-family: Inter, "Segoe UI", Helvetica, Arial, sans-serif; font-size:14px; line-height:1.45; }
header { background:var(--ink); color:#fff; padding:22px 36px 18px; }
header h1 { margin:0 0 4px; font-size:22px; font-weight:600; letter-spacing:.2px; }
header .sub { color:#c9cfdd; font-size:13px; }
header .status { float:right; font-size:12px; font-weight:600; padding:3px 10px; border-radius:12px;
                 text-decoration:none; margin-top:2px; }
header .status.ok { background:#e6f4ea; color:var(--ok); } header .status.bad { background:var(--bad); color:#fff; }
.caveats { background:#fff8e6; border:1px solid #f0d9a6; border-radius:8px; padding:8px 14px; margin:0 0 16px;
           font-size:13px; }
.caveats ul { margin:0; padding-left:18px; } .caveats li { margin:3px 0; }
nav { position:sticky; top:0; z-index:10; background:#fff; border-bottom:1px solid var(--line);
      padding:8px 36px; display:flex; gap:18px; flex-wrap:wrap; }
nav a { color:var(--ink); text-decoration:none; font-size:13px; font-weight:500; }
nav a:hover { color:var(--accent); }
main { padding:20px 36px 48px; max-width:1480px; margin:0 auto; }
.banner { border-radius:8px; padding:12px 16px; margin:0 0 18px; font-weight:600; }
.banner.ok { background:#e6f4ea; color:var(--ok); border:1px solid #b7dfc2; }
.banner.bad { background:#fce8e6; color:var(--bad); border:2px solid var(--bad); font-size:16px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(135px, 1fr)); gap:12px; margin-bottom:18px; }
.card { background:#fff; border:1px solid var(--line); border-radius:10px; padding:14px 16px;
        box-shadow:0 1px 2px rgba(16,24,40,.04); }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.6px; }
.card .value { font-size:24px; font-weight:650; margin-top:4px; font-variant-numeric: tabular-nums; }
.card .note { color:var(--muted); font-size:12px; margin-top:2px; }
.card .value.neg { color:var(--bad); } .card .value.pos { color:var(--ok); }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 22px;
          margin-bottom:20px; box-shadow:0 1px 2px rgba(16,24,40,.04); }
section h2 { margin:0 0 12px; font-size:17px; font-weight:600; }
section h3 { margin:18px 0 8px; font-size:14px; font-weight:600; color:var(--ink); }
p.note { color:var(--muted); margin:4px 0 10px; font-size:13px; }
.grid2 { display:grid; grid-template-columns:1fr 1fr; gap:18px; }
@media (max-width: 1100px) { .grid2 { grid-template-columns:1fr; } }
.tablewrap { overflow:auto; max-height:520px; border:1px solid var(--line); border-radius:6px; }
table { border-collapse:collapse; width:100%; font-size:12.5px; font-variant-numeric: tabular-nums; }
th, td { padding:6px 10px; border-bottom:1px solid var(--line); text-align:right; white-space:nowrap; }
th { background:#f0f2f7; position:sticky; top:0; font-weight:600; color:var(--ink); white-space:normal;
     vertical-align:bottom; }
td:first-child, th:first-child { text-align:left; }
td.text { text-align:left; white-space:normal; }
tr:hover td { background:#fafbfd; }
tr.meta td { font-weight:650; background:#f4f6fb; }
td.pass { color:var(--ok); font-weight:650; } td.fail { color:#fff; background:var(--bad); font-weight:700; }
td.flag { color:#9a6700; background:#fff8c5; font-weight:600; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:10px 0 30px; }
table.sortable th { cursor:pointer; user-select:none; }
table.sortable th[data-sort="asc"]::after { content:" \\25B2"; font-size:9px; }
table.sortable th[data-sort="desc"]::after { content:" \\25BC"; font-size:9px; }
"""

# Click a header of any table to sort its rows (again: reverse). Cells that read as numbers
# ("1,234.5", "-12.30%", "1.2e-05", "11.20x") sort numerically, others as text; empty cells last.
SORT_JS = """
document.addEventListener("click", function (ev) {
  var th = ev.target.closest ? ev.target.closest("table.sortable th") : null;
  if (!th) return;
  var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
  var asc = th.getAttribute("data-sort") !== "asc";
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) { h.removeAttribute("data-sort"); });
  th.setAttribute("data-sort", asc ? "asc" : "desc");
  var num = /^[-+]?[0-9,]*\\.?[0-9]+(e[-+]?[0-9]+)?\\s*(%|x|\u00d7|pp)?$/i;
  function key(row) {
    var t = (row.cells[col] ? row.cells[col].textContent : "").trim();
    if (t === "") return null;
    return num.test(t) ? parseFloat(t.replace(/[,%x\u00d7p\\s]/gi, "")) : t;
  }
  var rows = Array.prototype.slice.call(body.rows);
  rows.sort(function (a, b) {
    var x = key(a), y = key(b);
    if (x === null || y === null) return (x === null) - (y === null);
    var c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
    return asc ? c : -c;
  });
  rows.forEach(function (r) { body.appendChild(r); });
});
"""


def fmt_pct(x, digits: int = 2) -> str:
    return "" if _isnan(x) else f"{x * 100:.{digits}f}%"


def fmt_num(x, digits: int = 2) -> str:
    return "" if _isnan(x) else f"{x:,.{digits}f}"


def fmt_times(x, digits: int = 2) -> str:
    """A turnover in multiples of the book's value ("2.20×"); the column or note says "per year"."""
    return "" if _isnan(x) else f"{x:,.{digits}f}\u00d7"


def fmt_sci(x) -> str:
    return "NaN" if _isnan(x) else f"{x:.2e}"


def _isnan(x) -> bool:
    try:
        return x is None or (isinstance(x, float) and math.isnan(x)) or bool(pd.isna(x))
    except (TypeError, ValueError):
        return False


def _cell(value, fmt: Callable | None) -> str:
    return _html.escape(_text(value, fmt))


def _text(value, fmt: Callable | None = None) -> str:
    if fmt is not None:
        try:
            return fmt(value)
        except (TypeError, ValueError):
            pass
    if isinstance(value, pd.Timestamp):
        return str(value.date()) if value == value.normalize() else str(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:,.4g}"
    if _isnan(value):
        return ""
    return str(value)


def table(
    frame: pd.DataFrame,
    formats: Mapping[str, Callable] | None = None,
    *,
    index: bool = True,
    row_class: Callable[[object, pd.Series], str] | None = None,
    cell_class: Callable[[str, object], str] | None = None,
    text_columns: Sequence[str] = (),
    scroll: bool = True,
    table_id: str | None = None,
) -> str:
    """An HTML table with per-column formatters and optional row/cell CSS classes."""
    formats = formats or {}
    cols = list(frame.columns)
    head = "".join(f"<th>{_html.escape(str(c))}</th>" for c in ([frame.index.name or ""] if index else []) + cols)
    body = []
    for key, row in frame.iterrows():
        klass = row_class(key, row) if row_class else ""
        cells = [f"<td>{_cell(key, None)}</td>"] if index else []
        for c in cols:
            classes = []
            if c in text_columns:
                classes.append("text")
            if cell_class:
                extra = cell_class(c, row[c])
                if extra:
                    classes.append(extra)
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{_cell(row[c], formats.get(c))}</td>")
        body.append(f'<tr class="{klass}">' + "".join(cells) + "</tr>" if klass else "<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{_html.escape(table_id)}"' if table_id else ""
    html_table = f'<table class="sortable"{ident}><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    return f'<div class="tablewrap">{html_table}</div>' if scroll else html_table


def figure_div(fig: go.Figure, div_id: str) -> str:
    """A figure as a <div> + script, WITHOUT plotly.js (inlined once in the page head)."""
    return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)


def card(label: str, value: str, note: str = "", tone: str = "") -> str:
    return (f'<div class="card"><div class="label">{_html.escape(label)}</div>'
            f'<div class="value {tone}">{_html.escape(value)}</div>'
            f'<div class="note">{_html.escape(note)}</div></div>')


def page(*, title: str, subtitle: str, status: str, banner: str, nav: Sequence[tuple[str, str]],
         sections: Sequence[str], footer: str) -> str:
    """The whole document; plotly.js is embedded inline once, in <head>. ``status``: a small
    indicator in the header (HTML); ``banner``: warnings that must be seen before any section."""
    links = "".join(f'<a href="#{_html.escape(a)}">{_html.escape(t)}</a>' for a, t in nav)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_html.escape(title)}</title><style>{CSS}</style>"
        f"<script type=\"text/javascript\">{plotly.offline.get_plotlyjs()}</script>"
        "</head><body>"
        f"<header>{status}<h1>{_html.escape(title)}</h1><div class=\"sub\">{_html.escape(subtitle)}</div></header>"
        f"<nav>{links}</nav><main>{banner}{''.join(sections)}</main>"
        f"<footer>{_html.escape(footer)}</footer><script>{SORT_JS}</script></body></html>\n"
    )


def constant_columns(frame: pd.DataFrame, min_rows: int = 2) -> tuple[pd.DataFrame, str]:
    """Split off the columns that hold one value on every row (or none at all).

    A table of hundreds of rebalances or sleeves repeats them on every row (the method, the
    covariance rule, the run id of a meta_full run): they are stated once, in a note, and the
    table keeps the columns that vary. Nothing is dropped: an all-empty column is named as such.
    """
    if len(frame) < min_rows:
        return frame, ""
    constant, empty = {}, []
    for col in frame.columns:
        values = frame[col]
        if values.map(_isnan).all():
            empty.append(str(col))
            continue
        first = values.iloc[0]
        if not _isnan(first) and (values.astype(str) == str(first)).all():
            constant[str(col)] = _text(first)
    keep = [c for c in frame.columns if str(c) not in constant and str(c) not in empty]
    parts = [f"{c} = {v}" for c, v in constant.items()]
    if empty:
        parts.append("empty on every row: " + ", ".join(empty))
    text = f"The same on every row ({len(frame)}): " + "; ".join(parts) + "." if parts else ""
    return frame[keep], (note(text) if text else "")


def section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{_html.escape(anchor)}"><h2>{_html.escape(title)}</h2>{body}</section>'


def note(text: str) -> str:
    return f'<p class="note">{_html.escape(text)}</p>'


def write_atomic(path: os.PathLike | str, text: str) -> Path:
    """Write ``text`` to a temp file in the target directory, then ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
