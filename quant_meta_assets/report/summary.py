"""The report's small JSON-able summary, Markdown tables and numeric headline metrics.

Pure (no dagster): the Dagster asset turns these into ``MetadataValue.md`` / floats.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

HEADLINE = ("cagr", "sharpe", "ann_vol", "max_drawdown", "calmar",
            "beta", "alpha", "tracking_error", "information_ratio")  # the last four: vs the benchmark
TOP_ASSETS_IN_SUMMARY = 50


def _jsonable(value):
    """Plain Python scalars; NaN/inf -> None; timestamps -> ISO dates."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return value.date().isoformat() if value == value.normalize() else value.isoformat()
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value if isinstance(value, str) else str(value)


def build_summary(*, metrics: pd.DataFrame, reconciliations: pd.DataFrame,
                  latest_meta_weights: pd.Series, latest_target_weights: pd.Series,
                  latest_asset_weights: pd.Series, generated_at: str) -> dict:
    meta = metrics.loc["meta"]
    assets = latest_asset_weights[latest_asset_weights != 0.0]
    assets = assets.loc[assets.abs().sort_values(ascending=False).index].head(TOP_ASSETS_IN_SUMMARY)
    summary = {
        "generated_at": generated_at,
        "start": meta["start"],
        "end": meta["end"],
        "n_days": meta["n_days"],
        "headline": {k: meta[k] for k in HEADLINE},
        "metrics": {name: {k: row[k] for k in metrics.columns if k not in ("start", "end")}
                    for name, row in metrics.iterrows()},
        "latest_meta_weights": latest_meta_weights.to_dict(),
        "latest_target_weights": latest_target_weights.to_dict(),
        "latest_target_date": latest_target_weights.name,
        "latest_asset_weights": assets.to_dict(),
        "reconciliations": {row["check"]: {"max_abs_diff": row["max_abs_diff"], "passed": row["passed"]}
                            for _, row in reconciliations.iterrows()},
        "reconciled": bool(reconciliations["passed"].all()),
        "max_reconciliation_diff": _max_diff(reconciliations),
    }
    return _jsonable(summary)


def _max_diff(reconciliations: pd.DataFrame) -> float:
    diffs = reconciliations["max_abs_diff"].astype(float)
    return float("inf") if diffs.isna().any() else float(diffs.max())


def headline_metrics(report: Mapping) -> dict[str, float]:
    """Meta (netted book) cagr, sharpe, ann_vol, max_drawdown, calmar, beta, alpha, tracking_error and
    information_ratio against the benchmark (NaN without one), the largest reconciliation
    difference (inf when a check produced NaN) and the cost views (crossing savings in bps per year,
    annualised book and stand-alone turnover, stand-alone Sharpe), as plain floats for numeric metadata."""
    meta = report["metrics"].loc["meta"]
    out = {f"meta_{k}": float(meta[k]) for k in HEADLINE}
    out["max_reconciliation_diff"] = _max_diff(report["reconciliations"])
    costs = report.get("costs")
    if costs is not None:  # meta.costs: both views, annualised
        totals = costs["totals"]
        out["crossing_savings_bps"] = float(totals["savings_bps_per_year"])
        out["book_turnover"] = float(totals["book_turnover"])
        out["standalone_turnover"] = float(totals["standalone_turnover"])
        out["meta_standalone_sharpe"] = float(report["metrics"].loc["meta_standalone", "sharpe"])
    return out


def _md_value(value, pct: bool = False) -> str:
    if isinstance(value, pd.Timestamp):
        return str(value.date())
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "n/a"
        return f"{value * 100:.2f}%" if pct else f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame, pct_columns=(), index_name: str | None = None) -> str:
    cols = list(frame.columns)
    head = [index_name or frame.index.name or ""] + [str(c) for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, row in frame.iterrows():
        cells = [_md_value(key)] + [_md_value(row[c], c in pct_columns) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


PCT_METRICS = ("cagr", "ann_vol", "max_drawdown", "var_95", "cvar_95", "hit_rate", "best_day",
               "worst_day", "alpha", "tracking_error", "cost_drag")  # turnover: x per year, not %
TURNOVER_METRICS = ("reallocation", "asset_turnover")  # multiples of the book's value per year

# One readable name per column, in the HTML report and the UI's Markdown; a turnover is always "× per
# year", and the two trades have their own names: the meta's sleeve-level REALLOCATION and the ASSET
# TURNOVER of a book that trades assets.
METRIC_LABELS = {
    "cagr": "CAGR", "ann_vol": "Volatility", "sharpe": "Sharpe", "sortino": "Sortino",
    "max_drawdown": "Max drawdown", "calmar": "Calmar", "beta": "Beta", "alpha": "Alpha (per year)",
    "tracking_error": "Tracking error", "information_ratio": "Information ratio",
    "var_95": "VaR 95% (1 day)", "cvar_95": "CVaR 95% (1 day)", "skew": "Skew",
    "excess_kurtosis": "Excess kurtosis", "hit_rate": "Hit rate", "best_day": "Best day",
    "worst_day": "Worst day", "reallocation": "Sleeve reallocation (× per year)",
    "asset_turnover": "Asset turnover (× per year)", "cost_drag": "Cost drag (per year)",
    "n_days": "Days",
}
META_BOOKS = ("meta", "meta_standalone", "equal_weight_meta")  # their `turnover` is the sleeve reallocation


def metric_view(metrics: pd.DataFrame, rows, columns) -> pd.DataFrame:
    """The ``rows`` x ``columns`` of the metrics table to show, with ``reallocation`` = the annualised
    ``turnover`` of the meta books (their trade between sleeves; empty for the others, whose trade in
    assets is ``asset_turnover``)."""
    view = metrics.loc[[n for n in rows if n in metrics.index]].copy()
    view["reallocation"] = view["turnover"].where(view.index.isin(META_BOOKS))
    return view[[c for c in columns if c in view.columns]]


def report_markdown_summary(report: Mapping) -> dict[str, str]:
    """Markdown tables for Dagster UI metadata: ``metrics``, ``reconciliations``, ``latest_weights``."""
    metrics = report["metrics"]
    view = metric_view(metrics, list(metrics.index), (
        "cagr", "ann_vol", "sharpe", "sortino", "max_drawdown", "calmar", "beta", "alpha", "tracking_error",
        "information_ratio", "var_95", "cvar_95", "reallocation", "asset_turnover", "cost_drag", "n_days"))
    shown = pd.DataFrame({
        METRIC_LABELS.get(c, c): [_md_value(v, c in PCT_METRICS) if c not in TURNOVER_METRICS
                                  else ("n/a" if pd.isna(v) else f"{v:.2f}×") for v in view[c]]
        for c in view.columns}, index=view.index)
    rec = report["reconciliations"].set_index("check")[["max_abs_diff", "where", "tolerance", "passed"]]
    rec = rec.assign(passed=rec["passed"].map({True: "PASS", False: "**FAIL**"}))
    summary = report["summary"]
    weights = pd.DataFrame({
        "held (latest day)": pd.Series(summary["latest_meta_weights"], dtype=float),
        "target (latest rebalance)": pd.Series(summary["latest_target_weights"], dtype=float),
    })
    weights.index.name = "sleeve"
    return {
        "metrics": markdown_table(shown, (), "portfolio"),
        "reconciliations": markdown_table(rec, (), "check"),
        "latest_weights": markdown_table(weights, tuple(weights.columns)),
    }
