"""A trading day costs a day, for the report: what it keeps from its last run and when it may.

The report's expensive part is what reads every sleeve's daily weights: the two cost views
(``meta.costs``) and the daily reconciliations of the published holdings (``forensics.reconcile``).
Both are sums and maxima over days, so they fold forward. A report stores a ``fold state`` next to
its output: the cost views' daily rows and sleeve sums, the daily checks' worst differences, and
digests of the inputs it read. The next report, when its inputs are an append of those (and its
configuration and code are the same), computes those parts on a trailing window only, from the
last meta rebalance before its previous last day, and folds them in (``meta.costs.fold_cost_views``,
``fold_checks``); everything else (metrics, attribution, risk, plots) is recomputed from the daily
series, which is cheap. The result equals a full recompute (``quant_meta_assets_tests/unit/report/
test_report_fold.py``).

Pure: no dagster import. The sleeves' weights and costs on the previous days cannot be digested
without reading them all; the caller vouches for them (the Dagster asset: ``meta/flatten``
extended from the output the previous report read, having compared them itself).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pandas as pd

from quant_meta_assets.costs.cost_model import CostModel
from quant_meta_assets.meta.costs import CostViews
from quant_meta_assets.meta.incremental import frame_digest

FOLD_VERSION = 1


def report_fingerprint(*, cost_model: CostModel, cost_bps: float, cash_return: float | pd.Series, tolerance: float,
                       code_version: str | None) -> str:
    """What the folded parts depend on besides the data: the cost model, the default half-spread,
    the cash return, the tolerance and the code."""
    cash = (frame_digest(cash_return) if isinstance(cash_return, pd.Series) else repr(float(cash_return)))
    model = {"half_spread": [cost_model.default_half_spread_bps, sorted(cost_model.half_spread_bps.items())],
             "borrow": [cost_model.default_borrow_bps, sorted(cost_model.borrow_bps.items())],
             "funding": cost_model.funding_spread_bps}
    text = json.dumps({"cost_model": model, "cost_bps": float(cost_bps), "cash": cash,
                       "tolerance": float(tolerance), "code": code_version}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _digests(end: pd.Timestamp, sleeve_returns: pd.DataFrame, meta_weights: pd.DataFrame,
             asset_returns: pd.DataFrame) -> dict[str, str]:
    return {"sleeve_returns": frame_digest(sleeve_returns, end), "meta_weights": frame_digest(meta_weights, end),
            "asset_returns": frame_digest(asset_returns, end)}


def fold_state(*, costs: CostViews, holdings_checks: pd.DataFrame, fingerprint: str, sleeve_returns: pd.DataFrame,
               meta_weights: pd.DataFrame, asset_returns: pd.DataFrame, vouched_by: str | None) -> dict[str, Any]:
    """What the next report folds into: stored with the report (``report["fold_state"]``): the
    cost views' daily rows, sleeve sums and checks, and the daily holdings reconciliations
    (``forensics.reconcile``), worst difference each.
    ``vouched_by``: what stands for the sleeves' weights and costs on these days (the
    ``meta/flatten`` run the report read), or None."""
    end = costs.daily.index[-1]
    return {"version": FOLD_VERSION, "end": str(end.date()), "fingerprint": fingerprint,
            "digests": _digests(end, sleeve_returns, meta_weights, asset_returns), "vouched_by": vouched_by,
            "daily": costs.daily, "sleeve_sums": costs.sleeve_sums, "cost_checks": costs.checks,
            "holdings_checks": holdings_checks}


def fold_reason(previous: Mapping[str, Any] | None, *, fingerprint: str, sleeve_returns: pd.DataFrame,
                meta_weights: pd.DataFrame, asset_returns: pd.DataFrame, vouched: str | None,
                capacity: bool = False) -> str | None:
    """None when the report may fold into ``previous`` (a stored ``fold_state``), else why not.
    ``vouched``: None when the caller vouches that the sleeves' weights and costs on the previous
    days are unchanged, else why it cannot."""
    if not previous:
        return "no previous meta/report fold state"
    if previous.get("version") != FOLD_VERSION or not all(
            isinstance(previous.get(k), pd.DataFrame) for k in ("daily", "sleeve_sums", "cost_checks", "holdings_checks")):
        return "the previous meta/report stores no fold state of this version"
    if capacity:
        return "the capacity analysis (an ADV is given) reads the book's whole trade history"
    if previous.get("fingerprint") != fingerprint:
        return "the report's cost model, cost_bps, cash return, tolerance or code changed since the previous report"
    if vouched is not None:
        return vouched
    end = pd.Timestamp(previous["end"])
    if sleeve_returns.index[-1] <= end:
        return f"no new day after the previous report's last day {end.date()}"
    if not (meta_weights.index < end).any() or meta_weights.index[0] >= end:
        return "no meta rebalance before the previous report's last day"
    if list(map(str, meta_weights.columns)) != list(previous["sleeve_sums"].index):
        return "the sleeves changed since the previous report"
    now = _digests(end, sleeve_returns, meta_weights, asset_returns)
    changed = [name for name, digest in now.items() if digest != previous["digests"].get(name)]
    if changed:
        return f"{', '.join(changed)} differ from the previous report's on its days (through {end.date()})"
    return None


def window_start(meta_weights: pd.DataFrame, end: pd.Timestamp) -> pd.Timestamp:
    """The trailing window's first day: the last meta rebalance decided before ``end`` (the
    previous report's last day). The shares held from it on are those of the full history."""
    return meta_weights.index[meta_weights.index < end][-1]


def previous_views(previous: Mapping[str, Any], cost_bps: float) -> CostViews:
    """The stored cost views of the previous days (no book weights: their checks ran then)."""
    return CostViews(daily=previous["daily"], book_weights=None, cost_bps=float(cost_bps),
                     checks=previous["cost_checks"], sleeve_totals=pd.DataFrame(), sleeve_sums=previous["sleeve_sums"])
