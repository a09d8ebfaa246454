"""How numbers read in the Dagster UI: percentages as percentages, seconds rounded, ratios with
their units, the report as a link. The assets call these from a line or two each.

Numeric entries that the UI plots across materializations stay floats in their natural unit (a
CAGR of 0.14 is 14%); the Markdown ``headline`` next to them says it with units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import dagster as dg
import pandas as pd

# headline keys (report.headline_metrics, prefix meta_ dropped) -> (label, kind)
_HEADLINE = {
    "cagr": ("CAGR", "pct"),
    "ann_vol": ("annualised volatility", "pct"),
    "sharpe": ("Sharpe (annualised, over rf)", "ratio"),
    "sortino": ("Sortino", "ratio"),
    "max_drawdown": ("max drawdown", "pct"),
    "calmar": ("Calmar (CAGR / max drawdown)", "ratio"),
    "beta": ("beta to the benchmark", "ratio"),
    "alpha": ("alpha (annual)", "pct"),
    "tracking_error": ("tracking error (annual)", "pct"),
    "information_ratio": ("information ratio", "ratio"),
    "standalone_sharpe": ("Sharpe, stand-alone sleeves' costs", "ratio"),
    "crossing_savings_bps": ("crossing savings", "bps"),
    "book_turnover": ("book turnover", "turnover"),
    "standalone_turnover": ("stand-alone turnover", "turnover"),
    "max_reconciliation_diff": ("largest reconciliation difference", "sci"),
}


def fmt(value: float, kind: str) -> str:
    """One number with its unit: ``pct`` 14.03%, ``ratio`` 0.96, ``bps`` 52.9 bps/yr,
    ``turnover`` 11.20× per year, ``seconds`` 0.08 s, ``sci`` 9.95e-14, ``growth`` +10,189.95% (×102.90)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if kind == "pct":
        return f"{value * 100:.2f}%"
    if kind == "bps":
        return f"{value:.1f} bps/yr"
    if kind == "turnover":
        return f"{value:.2f}× per year"
    if kind == "seconds":
        return f"{value:.2f} s"
    if kind == "sci":
        return f"{value:.2e}"
    if kind == "growth":
        return f"{value * 100:+,.2f}% (×{1 + value:,.2f})"
    return f"{value:.2f}"


def seconds(value: float) -> dg.FloatMetadataValue:
    """A duration in seconds, rounded to 10 ms (the key says ``_s``)."""
    return dg.MetadataValue.float(round(float(value), 2))


def total_return(value: float) -> dg.TextMetadataValue:
    """A compounded total return as a percentage and a growth multiple: ``+10,189.95% (×102.90)``."""
    return dg.MetadataValue.text(fmt(float(value), "growth"))


def delistings(closed: list[Mapping]) -> dg.TextMetadataValue:
    """A sleeve's positions closed into cash at their ticker's last price, one per ticker:
    ``XYZ 2020-03-02 (4.1% of the sleeve)``."""
    return dg.MetadataValue.text("; ".join(
        f"{d['ticker']} {d['last_price_date']} ({fmt(float(d['weight']), 'pct')} of the sleeve)" for d in closed
    ))


def headline(values: Mapping[str, float]) -> dg.MarkdownMetadataValue:
    """The report's headline numbers as a Markdown table with units (the floats stay alongside)."""
    rows = []
    for key, value in values.items():
        name = key.removeprefix("meta_")
        label, kind = _HEADLINE.get(name, (name.replace("_", " "), "ratio"))
        rows.append(f"| {label} | {fmt(float(value), kind)} |")
    return dg.MetadataValue.md("| metric (meta, netted book) | value |\n|---|---:|\n" + "\n".join(rows))


def weights_table(weights: pd.Series, name: str = "weight") -> dg.MarkdownMetadataValue:
    """Weights as percentages, in the order given."""
    return percent_table(weights.rename(name).to_frame())


def percent_table(frame: pd.DataFrame) -> dg.MarkdownMetadataValue:
    """A frame of fractions (weights, exposures) as a Markdown table of percentages: 0.1234 -> 12.34%."""
    shown = frame.astype(float).apply(lambda column: column.map(lambda v: fmt(v, "pct")))
    return dg.MetadataValue.md(shown.rename(columns=lambda c: f"{c} (%)").to_markdown())


def report_link(html: str | Path) -> dg.UrlMetadataValue:
    """The report as a clickable ``file://`` link (on the machine that ran it; ``report_path`` has a copy button)."""
    return dg.MetadataValue.url(Path(html).resolve().as_uri())
