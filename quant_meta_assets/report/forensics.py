"""Forensics: reconciliations, return attribution, risk contributions and "what changed".

Reconciliation identities (each reported with its largest absolute difference, where it occurs,
the tolerance and pass/fail):

``book_holdings_return``
    One set of holdings: the published asset weights H (meta/flatten) earn the headline return,
    ``sum_i H_i(t) R_i(t) + (1 - sum_i H_i(t)) rf_d(t) - book_cost(t) == meta(t)`` every day, with
    book_cost the book's daily cost series (``meta.costs``), to 1e-12.
``published_weights_are_book`` H == the netted book's holdings as the cost views accumulate them.
``meta_weights_budget``      every rebalance row of the meta-weights sums to 1.
``meta_weights_daily_budget`` every held (drifted) meta-weight row sums to 1.
``meta_weights_drift``       the book's shares == an independent drift with gross sleeve returns.
``asset_weights_flatten``    a_i(t) == sum_s m_s(t) w_{s,i}(t) for every date and ticker.
``exposure_net``             flatten net exposure == sum_s m_s(t) * net_s(t), net_s = sum_i w_{s,i}(t).
``exposure_gross``           flatten gross exposure == sum_i |a_i(t)|
                             (<= sum_s m_s gross_s; equality fails only where sleeves net out).
``attribution_sleeves_total`` / ``attribution_assets_total``
    the wealth-weighted contributions (the book's cost as one row) add up to the compounded total
    return of the headline book.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from quant_meta_assets.rates import PERIODS_PER_YEAR

RECONCILIATION_COLUMNS = ["check", "description", "max_abs_diff", "where", "tolerance", "passed"]


# --------------------------------------------------------------------------------------------
# reconciliations
# --------------------------------------------------------------------------------------------


def _label(key) -> str:
    if isinstance(key, tuple):
        return ", ".join(_label(k) for k in key)
    if isinstance(key, pd.Timestamp):
        return str(key.date()) if key == key.normalize() else str(key)
    return str(key)


def _check(name: str, description: str, diff: pd.Series | pd.DataFrame, tolerance: float) -> dict:
    """Largest |diff| (NaN counts as a failure, reported as nan) and where it occurs."""
    values = np.abs(np.asarray(diff, dtype=float))
    row = dict(check=name, description=description, tolerance=float(tolerance))
    if values.size == 0:
        return {**row, "max_abs_diff": 0.0, "where": "(no rows)", "passed": True}

    def where(flat_pos: int) -> str:
        if values.ndim == 1:
            return _label(diff.index[flat_pos])
        i, j = np.unravel_index(flat_pos, values.shape)
        return _label((diff.index[i], diff.columns[j]))

    nan = np.isnan(values).ravel()
    if nan.any():
        return {**row, "max_abs_diff": float("nan"), "where": where(int(np.argmax(nan))) + " (NaN)",
                "passed": False}
    pos = int(np.argmax(values.ravel()))
    worst = float(values.ravel()[pos])
    return {**row, "max_abs_diff": worst, "where": where(pos), "passed": bool(worst <= tolerance)}


HOLDINGS_TOLERANCE = 1e-12
"""The published holdings reconcile to the headline return to this (or the report's, if tighter)."""


def _cash_rate(cash_return, index: pd.DatetimeIndex) -> pd.Series:
    """The daily cash return on ``index``: a constant or a daily series (which must cover it)."""
    if isinstance(cash_return, pd.Series):
        return cash_return.reindex(index).astype(float)
    return pd.Series(float(cash_return), index=index)


def book_return_from_holdings(holdings: pd.DataFrame, asset_returns: pd.DataFrame, cash_return,
                              book_costs: pd.Series) -> pd.Series:
    """sum_i H_i(t) R_i(t) + (1 - sum_i H_i(t)) rf_d(t) - cost(t): the return the holdings earn.

    A ticker not held (weight exactly 0) contributes exactly 0 whatever its return (NaN included:
    not listed that day)."""
    live = holdings.index
    h = holdings.fillna(0.0)
    big_r = asset_returns.reindex(index=live, columns=h.columns)
    assets = (h * big_r).where(h != 0.0, 0.0).sum(axis=1, skipna=False)
    cash = (1.0 - h.sum(axis=1)) * _cash_rate(cash_return, live)
    return assets + cash - pd.Series(book_costs, dtype=float).reindex(live)


def reconcile(
    *,
    meta_weights: pd.DataFrame,
    meta_weights_daily: pd.DataFrame,
    recomputed_meta_weights_daily: pd.DataFrame,
    book_returns: pd.Series,
    book_costs: pd.Series,
    book_weights: pd.DataFrame,
    asset_weights: pd.DataFrame,
    asset_returns: pd.DataFrame,
    exposure: pd.DataFrame,
    sleeve_weights: Mapping[str, pd.DataFrame],
    tolerance: float,
    cash_return: float | pd.Series = 0.0,
    since: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """All identities on the live days of ``recomputed_meta_weights_daily`` (from ``since`` on when
    given: an incremental report checks only its new days, ``report.incremental``); one row per check.

    ``meta_weights_daily`` / ``asset_weights`` / ``exposure`` are what meta.flatten published (the
    book's shares and holdings); ``book_returns`` / ``book_costs`` / ``book_weights`` the headline
    book as meta.costs computed it on its own; ``recomputed_meta_weights_daily`` an independent
    drift of the targets with the sleeves' gross returns. ``cash_return`` is the daily rate cash
    earns (``rates.daily_rate(rf)``, or a daily series)."""
    live = recomputed_meta_weights_daily.index
    if since is not None:
        live = live[live >= since]
        recomputed_meta_weights_daily = recomputed_meta_weights_daily.loc[live]
    sleeves = list(meta_weights.columns)
    held = meta_weights_daily.reindex(index=live, columns=sleeves)
    rows = []

    # 1. the published holdings earn the headline return, and are the book the costs were computed on
    a = asset_weights.reindex(index=live).fillna(0.0)
    earned = book_return_from_holdings(a, asset_returns, cash_return, book_costs)
    rows.append(_check(
        "book_holdings_return",
        "sum_i H_i(t) R_i(t) + cash(t) rf_d(t) - book_cost(t) == meta(t) every day, H = the published asset "
        "weights (meta/flatten), cost = the book's daily cost series, meta = the headline netted return",
        earned - book_returns.reindex(live), min(tolerance, HOLDINGS_TOLERANCE)))
    b = book_weights.reindex(index=live)
    both = a.columns.union(b.columns)
    rows.append(_check(
        "published_weights_are_book",
        "the published asset weights == the netted book's holdings accumulated by the cost views, every "
        "date x ticker", a.reindex(columns=both, fill_value=0.0) - b.reindex(columns=both, fill_value=0.0),
        min(tolerance, HOLDINGS_TOLERANCE)))

    # 2. budgets
    rows.append(_check("meta_weights_budget", "meta-weights sum to 1 at every rebalance",
                       meta_weights.sum(axis=1, skipna=False) - 1.0, tolerance))
    rows.append(_check("meta_weights_daily_budget", "held (drifted) meta-weights sum to 1 every day",
                       held.sum(axis=1, skipna=False) - 1.0, tolerance))
    rows.append(_check("meta_weights_drift",
                       "the book's shares == independent drift m(t+1) = m(t)(1+g(t))/(1+m·g), g = gross sleeve "
                       "returns (net + own cost)",
                       held - recomputed_meta_weights_daily, tolerance))

    # 3. exposures
    position = {t: i for i, t in enumerate(a.columns)}  # the published tickers, then any other a sleeve holds
    acc = np.zeros((len(live), len(position)))
    net_by_sleeve = {}
    gross_by_sleeve = {}
    for s in sleeves:  # one sleeve's weights at a time, accumulated in place
        w = sleeve_weights[s].reindex(index=live).fillna(0.0)
        extra = [c for c in w.columns if c not in position]
        if extra:
            position.update({c: len(position) + k for k, c in enumerate(extra)})
            acc = np.hstack([acc, np.zeros((len(live), len(extra)))])
        values = w.to_numpy(dtype=float)
        acc[:, [position[c] for c in w.columns]] += values * held[s].to_numpy(dtype=float)[:, None]
        net_by_sleeve[s] = pd.Series(values.sum(axis=1), index=live)
        gross_by_sleeve[s] = pd.Series(np.abs(values).sum(axis=1), index=live)
    expected = pd.DataFrame(acc, index=live, columns=list(position))
    a_full = a.reindex(columns=expected.columns, fill_value=0.0)
    rows.append(_check("asset_weights_flatten", "a_i(t) == sum_s m_s(t) w_s,i(t), every date x ticker",
                       a_full - expected, tolerance))
    net_expected = sum(held[s] * net_by_sleeve[s] for s in sleeves)
    rows.append(_check("exposure_net",
                       "flatten net exposure == sum_s m_s net_s, net_s = sum of sleeve s's weights",
                       exposure["net"].reindex(live) - net_expected, tolerance))
    rows.append(_check("exposure_gross", "flatten gross exposure == sum_i |a_i|",
                       exposure["gross"].reindex(live) - a.abs().sum(axis=1), tolerance))
    gross_bound = sum(held[s] * gross_by_sleeve[s] for s in sleeves)
    rows.append(_check("exposure_gross_bound",
                       "flatten gross exposure <= sum_s m_s gross_s (excess shown)",
                       (exposure["gross"].reindex(live) - gross_bound).clip(lower=0.0), tolerance))
    return pd.DataFrame(rows, columns=RECONCILIATION_COLUMNS)


def attribution_checks(attribution: Mapping[str, pd.DataFrame], meta_returns: pd.Series,
                       tolerance: float) -> pd.DataFrame:
    """The wealth-weighted contributions add up to the compounded total return; the per-year
    contributions (percentage points a year) to the arithmetic annual return 252 x mean(r)."""
    total = float(np.prod(1.0 + meta_returns.to_numpy()) - 1.0)
    annual = float(PERIODS_PER_YEAR * np.mean(meta_returns.to_numpy()))
    rows = [
        _check("attribution_sleeves_total", "sum of sleeve contributions == compounded total return",
               pd.Series([attribution["by_sleeve"]["contribution"].sum() - total], index=["total"]),
               tolerance),
        _check("attribution_assets_total",
               "sum of asset contributions + costs == compounded total return",
               pd.Series([attribution["by_asset"]["contribution"].sum() - total], index=["total"]),
               tolerance),
        _check("attribution_per_year_total",
               "sum of sleeve contributions per year == 252 x mean daily meta return (sleeve level)",
               pd.Series([attribution["by_sleeve"]["per_year"].sum() - annual], index=["per year"]),
               tolerance),
    ]
    return pd.DataFrame(rows, columns=RECONCILIATION_COLUMNS)


# --------------------------------------------------------------------------------------------
# attribution
# --------------------------------------------------------------------------------------------


BOOK_COST_ROW = "(book trading costs)"
CASH_ROW = "(cash interest)"


def attribution(
    *,
    meta_returns: pd.Series,
    meta_weights_daily: pd.DataFrame,
    sleeve_returns: pd.DataFrame,
    asset_weights: pd.DataFrame,
    asset_returns: pd.DataFrame,
    book_costs: pd.Series,
    cash_return: float | pd.Series = 0.0,
) -> dict[str, pd.DataFrame]:
    """The headline book's return by sleeve and by asset over the period.

    ``meta_returns`` is the netted book's daily return, ``meta_weights_daily`` its sub-account shares,
    ``sleeve_returns`` the sleeves' GROSS returns (what the shares earn: the book pays no sleeve's
    own cost), ``asset_weights`` its holdings and ``book_costs`` its daily trading cost. By sleeve:
    m_s g_s each, and the book's cost as one negative row; by asset: H_i R_i each, the book's cost
    and the cash interest as rows. Both add up to the book's return.

    ``contribution`` = sum_t W(t-1) x (daily contribution), W(t-1) the book's wealth before day t
    (W = 1 at the start): these add up exactly to the compounded total return prod(1+r) - 1.
    ``arithmetic`` = sum_t (daily contribution), which adds up to sum_t r_t.
    ``per_year`` = 252 x mean_t (daily contribution), percentage points of annual return (as
    decimals): they add up to 252 x mean(r), the book's arithmetic annual return.
    """
    live = meta_returns.index
    wealth_before = (1.0 + meta_returns).cumprod().shift(1, fill_value=1.0)
    cost = pd.Series(book_costs, dtype=float).reindex(live)

    def table(daily: pd.DataFrame, avg_weight: pd.Series, extra: dict[str, pd.Series]) -> pd.DataFrame:
        out = pd.DataFrame({
            "avg_weight": avg_weight,
            "contribution": daily.mul(wealth_before, axis=0).sum(),
            "arithmetic": daily.sum(),
        })
        for name, series in extra.items():
            out.loc[name] = [0.0, float((series * wealth_before).sum()), float(series.sum())]
        out["per_year"] = out["arithmetic"] * (PERIODS_PER_YEAR / len(live))
        return out

    held = meta_weights_daily.reindex(live)
    daily_sleeve = held * sleeve_returns.reindex(index=live, columns=held.columns).where(held != 0.0, 0.0)
    by_sleeve = table(daily_sleeve, held.mean(), {BOOK_COST_ROW: -cost})
    by_sleeve.index.name = "sleeve"

    a = asset_weights.reindex(live).fillna(0.0)
    big_r = asset_returns.reindex(index=live, columns=a.columns)
    daily_asset = (a * big_r).where(a != 0.0, 0.0)
    extra = {BOOK_COST_ROW: -cost}
    interest = (1.0 - a.sum(axis=1)) * _cash_rate(cash_return, live)
    if (interest != 0.0).any():
        extra[CASH_ROW] = interest
    by_asset = table(daily_asset, a.mean(), extra)
    by_asset.index.name = "asset"
    order = by_asset.drop(index=list(extra))["contribution"].abs().sort_values(ascending=False)
    by_asset = by_asset.loc[list(order.index) + list(extra)]
    return {"by_sleeve": by_sleeve, "by_asset": by_asset}


# --------------------------------------------------------------------------------------------
# risk contributions
# --------------------------------------------------------------------------------------------


def risk_contribution(weights: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """RC_i = w_i (Σw)_i / (wᵀΣw); sums to 1 (NaN when the portfolio variance is 0)."""
    w = np.asarray(weights, dtype=float)
    sigma_w = np.asarray(cov, dtype=float) @ w
    var = float(w @ sigma_w)
    if var <= 0:
        return np.full_like(w, np.nan)
    return w * sigma_w / var


def ex_ante_risk_contributions(meta_weights: pd.DataFrame, sleeve_returns: pd.DataFrame,
                               window: int, covariance: str = "sample",
                               halflife: float | None = None) -> pd.DataFrame:
    """Per rebalance d: RC of the target weights under the optimizer's covariance estimator
    (``covariance`` / ``halflife``, the same ``estimate_covariance`` the optimizer calls) on the
    ``window`` sleeve-return rows ending at d inclusive (fewer at the start if not available).
    Sleeves with weight 0 (e.g. not live: NaN in the window) get RC 0 and are left out of the
    estimate, as the optimizer leaves them out."""
    from quant_meta_assets.meta.optimize.estimators import estimate_covariance, ewma_weights

    rows = {}
    for d, w in meta_weights.iterrows():
        pos = sleeve_returns.index.get_loc(d)
        hist = sleeve_returns.iloc[max(0, pos - window + 1): pos + 1][meta_weights.columns].to_numpy(dtype=float)
        wv = w.to_numpy(dtype=float)
        held = wv != 0.0
        out = np.zeros(len(wv))
        if len(hist) < 2 or np.isnan(hist[:, held]).any():
            rows[d] = np.full(len(wv), np.nan)
            continue
        ew = ewma_weights(len(hist), halflife) if covariance == "ewma" else None
        cov = estimate_covariance(hist[:, held], covariance, halflife, ew)
        out[held] = risk_contribution(wv[held], cov)
        rows[d] = out
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=meta_weights.columns)
    frame.index.name = "rebalance"
    return frame


def ex_post_risk_contributions(meta_weights_daily: pd.DataFrame,
                               sleeve_returns: pd.DataFrame) -> pd.DataFrame:
    """Over the live period: ``rc_avg_weights`` = RC formula at the average held weights with the
    realised covariance; ``rc_realised`` = cov(m_s r_s, r_meta) / var(r_meta), the exact
    decomposition of the realised meta variance with time-varying weights. Both sum to 1.
    A sleeve not live on part of the period (NaN returns while its weight is 0) contributes 0 on
    those days; the realised covariance then uses pairwise-complete days."""
    held = meta_weights_daily
    r = sleeve_returns.reindex(index=held.index, columns=held.columns)
    avg_w = held.mean()
    cov = r.cov(ddof=1).to_numpy()
    parts = held * r.where(held != 0.0, 0.0)
    meta = parts.sum(axis=1)
    var = float(meta.var(ddof=1))
    realised = parts.apply(lambda c: float(np.cov(c, meta, ddof=1)[0, 1])) / var
    frame = pd.DataFrame({
        "avg_weight": avg_w,
        "ann_vol": r.std(ddof=1) * np.sqrt(252),
        "rc_avg_weights": risk_contribution(avg_w.to_numpy(), cov),
        "rc_realised": realised,
    })
    frame.index.name = "sleeve"
    return frame


def realised_risk_by_year(meta_weights_daily: pd.DataFrame, sleeve_returns: pd.DataFrame) -> pd.DataFrame:
    """Per calendar year: cov(m_s r_s, r_meta) / var(r_meta) on that year's live days (ddof=1), the
    exact split of the year's realised meta variance (rows sum to 1; NaN for a year of < 2 days)."""
    held = meta_weights_daily
    r = sleeve_returns.reindex(index=held.index, columns=held.columns)
    parts = held * r.where(held != 0.0, 0.0)
    meta = parts.sum(axis=1)
    rows = {}
    for year, idx in parts.groupby(parts.index.year).groups.items():
        p, m = parts.loc[idx].to_numpy(dtype=float), meta.loc[idx].to_numpy(dtype=float)
        if len(m) < 2 or np.var(m, ddof=1) == 0:
            rows[year] = np.full(p.shape[1], np.nan)
            continue
        dm = m - m.mean()
        rows[year] = ((p - p.mean(axis=0)) * dm[:, None]).sum(axis=0) / (dm @ dm)
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=held.columns)
    frame.index.name = "year"
    return frame


# --------------------------------------------------------------------------------------------
# what changed since the previous report
# --------------------------------------------------------------------------------------------


def _delta_table(previous: Mapping, current: Mapping, key: str, top: int | None) -> pd.DataFrame:
    prev = pd.Series(previous or {}, dtype=float)
    curr = pd.Series(current or {}, dtype=float)
    names = prev.index.union(curr.index)
    table = pd.DataFrame({
        "previous": prev.reindex(names),
        "current": curr.reindex(names),
    })
    table["change"] = table["current"].fillna(0.0) - table["previous"].fillna(0.0)
    table = table.loc[table["change"].abs().sort_values(ascending=False).index]
    table.index.name = key
    return table.head(top) if top else table


def what_changed(summary: Mapping, previous: Mapping | None, top: int = 10) -> dict[str, pd.DataFrame]:
    """Largest weight changes (sleeves, assets) and metric deltas of the meta vs the previous
    report's summary. Empty dict without a previous summary."""
    if not previous:
        return {}
    prev_metrics = (previous.get("metrics") or {}).get("meta") or previous.get("headline") or {}
    curr_metrics = (summary.get("metrics") or {}).get("meta") or {}
    metric_names = [k for k in curr_metrics if isinstance(curr_metrics.get(k), (int, float))
                    and k in prev_metrics and k != "n_days"]
    metrics_table = pd.DataFrame({
        "previous": [prev_metrics[k] for k in metric_names],
        "current": [curr_metrics[k] for k in metric_names],
    }, index=pd.Index(metric_names, name="metric"), dtype=float)
    metrics_table["change"] = metrics_table["current"] - metrics_table["previous"]
    return {
        "meta_weights": _delta_table(previous.get("latest_meta_weights"),
                                     summary.get("latest_meta_weights"), "sleeve", None),
        "asset_weights": _delta_table(previous.get("latest_asset_weights"),
                                      summary.get("latest_asset_weights"), "asset", top),
        "metrics": metrics_table,
        # one type per column (text): dates and a day count share the column
        "period": pd.DataFrame(
            {"previous": [str(previous.get(k)) for k in ("start", "end", "n_days")],
             "current": [str(summary.get(k)) for k in ("start", "end", "n_days")]},
            index=pd.Index(["start", "end", "n_days"], name="field"),
        ),
    }
