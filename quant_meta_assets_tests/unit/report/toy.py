"""Toy report inputs from the real skfolio S&P 500 data, built with independent numpy loops.

Three sleeves over overlapping ticker sets, buy-and-hold between month ends (decided at the
close of the last trading day of a month, held from the next day, drifting in between):

* ``tech``: equal weight AAPL, AMD, MSFT (fully invested, net = gross = 1)
* ``defensive``: equal weight of 5 staples at 90% (10% cash: net = gross = 0.9)
* ``long_short``: +0.4 AAPL, JPM, XOM, -0.2 KO (net 1.0, gross 1.4; AAPL overlaps ``tech``,
  KO is short here and long in ``defensive``, so the flattened book nets)

Sleeve net return r_s(t) = sum_i w_i(t) R_i(t) - cost_s(t), cost = two-sided turnover x bps / 1e4
charged on the first day the new weights earn. Weights drift as w_i(1+R_i)/(1+w·R) (cash earns 0).
Meta-weights: fixed seeded targets every 63 rows from row 62; held meta-weights drift as
m(t+1) = m(t)(1+r(t))/(1+m·r) and reset to the target on the row after a rebalance.
"""

from __future__ import annotations

import types

import numpy as np
import pandas as pd

from quant_meta_assets.benchmark import Benchmark

SLEEVES = {
    "tech": ({"AAPL": 1 / 3, "AMD": 1 / 3, "MSFT": 1 / 3}, 10.0),
    "defensive": ({"JNJ": 0.18, "KO": 0.18, "PEP": 0.18, "PG": 0.18, "WMT": 0.18}, 5.0),
    "long_short": ({"AAPL": 0.4, "JPM": 0.4, "XOM": 0.4, "KO": -0.2}, 20.0),
}


def load_inputs(start: str = "2016-01-01", end: str = "2020-12-31") -> tuple[pd.DataFrame, pd.Series]:
    from skfolio.datasets import load_sp500_dataset, load_sp500_index

    prices = load_sp500_dataset()
    prices.index = pd.DatetimeIndex(prices.index, name="date")
    index = load_sp500_index().iloc[:, 0]
    index.index = pd.DatetimeIndex(index.index, name="date")
    rets = prices.pct_change(fill_method=None).loc[start:end]
    return rets, index.loc[:end]


def simulate_sleeve(asset_returns: pd.DataFrame, target: dict[str, float], cost_bps: float):
    tickers = list(target)
    r = asset_returns[tickers].to_numpy()
    dates = asset_returns.index
    month_end = dates.to_series().groupby(dates.to_period("M")).transform("max").to_numpy() == dates
    tgt = np.array([target[t] for t in tickers])
    weights = np.full((len(dates), len(tickers)), np.nan)
    rets = np.full(len(dates), np.nan)
    costs = np.full(len(dates), np.nan)
    turnover = {}
    held = None  # weights held at the start of the current day
    pending_cost = 0.0
    for t in range(len(dates)):
        if held is not None:
            weights[t] = held
            costs[t] = pending_cost
            gross = float(held @ r[t])
            rets[t] = gross - pending_cost
            pending_cost = 0.0
            held = held * (1.0 + r[t]) / (1.0 + gross)
        if month_end[t] and t + 1 < len(dates):
            before = np.zeros(len(tickers)) if held is None else held
            turnover[dates[t]] = float(np.abs(tgt - before).sum())
            pending_cost = turnover[dates[t]] * cost_bps / 1e4
            held = tgt.copy()
    return (
        pd.Series(rets, index=dates),
        pd.DataFrame(weights, index=dates, columns=tickers),
        pd.Series(costs, index=dates),
        pd.Series(turnover, dtype=float),
    )


def flatten_numpy(meta_weights: pd.DataFrame, sleeve_weights, sleeve_returns: pd.DataFrame):
    """Independent loop: held meta-weights, asset weights, exposures (FlattenResult-like).

    ``sleeve_returns`` are the returns the shares drift with: the book's are the GROSS ones."""
    dates = sleeve_returns.index
    names = list(meta_weights.columns)
    r = sleeve_returns[names].to_numpy()
    rebal = {dates.get_loc(d): row for d, row in zip(meta_weights.index, meta_weights.to_numpy())}
    first = min(rebal)
    held_rows, live = [], []
    m = None
    for t in range(first, len(dates)):
        if t > first:
            held_rows.append(m.copy())
            live.append(dates[t])
            m = m * (1.0 + r[t]) / (1.0 + float(m @ r[t]))
        if t in rebal:
            m = rebal[t].copy()
    held = pd.DataFrame(held_rows, index=pd.DatetimeIndex(live, name="date"), columns=names)
    tickers = sorted(set().union(*(sleeve_weights[s].columns for s in names)))
    assets = pd.DataFrame(0.0, index=held.index, columns=tickers)
    for s in names:
        w = sleeve_weights[s].reindex(index=held.index, columns=tickers).fillna(0.0)
        assets += w.mul(held[s], axis=0)
    exposure = pd.DataFrame({"gross": assets.abs().sum(axis=1), "net": assets.sum(axis=1)})
    return types.SimpleNamespace(asset_weights=assets, meta_weights_daily=held, exposure=exposure)


def make_report_inputs(start: str = "2016-01-01", end: str = "2020-12-31", seed: int = 7) -> dict:
    asset_returns, index_prices = load_inputs(start, end)
    sleeve_rets, sleeve_weights, sleeve_costs, sleeve_turnover = {}, {}, {}, {}
    for name, (target, bps) in SLEEVES.items():
        r, w, c, t = simulate_sleeve(asset_returns, target, bps)
        sleeve_rets[name], sleeve_weights[name], sleeve_costs[name], sleeve_turnover[name] = r, w, c, t
    frame = pd.DataFrame(sleeve_rets)
    sleeve_returns = frame.loc[frame.dropna().index[0]:]  # "common start"
    rng = np.random.default_rng(seed)
    rows = list(range(62, len(sleeve_returns) - 1, 63))
    targets = rng.dirichlet(np.ones(len(SLEEVES)) * 3.0, size=len(rows))
    meta_weights = pd.DataFrame(targets, index=sleeve_returns.index[rows], columns=list(SLEEVES))
    diagnostics = pd.DataFrame({
        "status": ["optimal"] * len(rows),
        "solver": ["CLARABEL"] * len(rows),
        "fallback_used": [None] * len(rows),
        "objective": rng.normal(size=len(rows)),
        "runtime_s": rng.uniform(0.01, 0.1, size=len(rows)),
    }, index=meta_weights.index)
    diagnostics.loc[diagnostics.index[3], ["status", "fallback_used"]] = ["fallback", "inverse_vol"]
    gross = sleeve_returns + pd.DataFrame(sleeve_costs).reindex(sleeve_returns.index).fillna(0.0)
    flatten = flatten_numpy(meta_weights, sleeve_weights, gross)  # the book's shares ride GROSS returns
    lineage = {
        s: {"run_id": f"run-{i:04d}", "code_version": "abc1234", "data_version": "sp500-2022-12-28",
            "materialized_at": "2026-01-01T00:00:00Z", "start": str(sleeve_returns.index[0].date()),
            "end": str(sleeve_returns.index[-1].date())}
        for i, s in enumerate(SLEEVES)
    }
    return dict(
        sleeve_returns=sleeve_returns,
        meta_weights=meta_weights,
        diagnostics=diagnostics,
        flatten=flatten,
        sleeve_weights=sleeve_weights,
        sleeve_costs=sleeve_costs,
        sleeve_turnover=sleeve_turnover,
        asset_returns=asset_returns,
        benchmark=Benchmark(levels=index_prices, name="S&P 500", total_return=False,
                            source="skfolio load_sp500_index()"),
        lineage=lineage,
        previous=None,
    )
