"""A synthetic book of many sleeves for the report at scale (the toy's numpy loops, more sleeves).

``n`` seeded sleeves, each a fixed-weight basket (3-8 of the 20 bundled tickers, 70-100% invested,
some with one short) rebalanced at month ends with ``toy.simulate_sleeve``'s conventions, drifted
month by month with cumulative products (``simulate_basket``, checked against the toy's day loop
in test_report_scale.py); seeded Dirichlet
meta-weights every 63 rows, concentrated enough that a few sleeves carry most of the weight;
flattened by ``toy.flatten_numpy``. Everything reconciles, like the toy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from quant_meta_assets.benchmark import Benchmark

from quant_meta_assets_tests.unit.report.toy import flatten_numpy, load_inputs


def simulate_basket(asset_returns: pd.DataFrame, target: dict[str, float], cost_bps: float):
    """``toy.simulate_sleeve`` month by month instead of day by day (same outputs)."""
    tickers = list(target)
    r = asset_returns[tickers].to_numpy()
    dates = asset_returns.index
    T = len(dates)
    ends = np.flatnonzero(dates.to_series().groupby(dates.to_period("M")).transform("max").to_numpy() == dates)
    ends = ends[ends + 1 < T]
    tgt = np.array([target[t] for t in tickers])
    cash = 1.0 - tgt.sum()
    weights = np.full((T, len(tickers)), np.nan)
    rets = np.full(T, np.nan)
    costs = np.full(T, np.nan)
    turnover = {}
    before = np.zeros(len(tickers))
    for j, e in enumerate(ends):
        a = e + 1
        b = ends[j + 1] if j + 1 < len(ends) else T - 1  # last day held with this target
        turnover[dates[e]] = float(np.abs(tgt - before).sum())
        G = np.cumprod(1.0 + r[a : b + 1], axis=0)
        V = tgt * np.vstack([np.ones(len(tickers)), G[:-1]])
        held = V / (V.sum(axis=1) + cash)[:, None]
        weights[a : b + 1] = held
        gross = (held * r[a : b + 1]).sum(axis=1)
        costs[a : b + 1] = 0.0
        costs[a] = turnover[dates[e]] * cost_bps / 1e4
        rets[a : b + 1] = gross - costs[a : b + 1]
        v_end = tgt * G[-1]
        before = v_end / (v_end.sum() + cash)
    return (
        pd.Series(rets, index=dates),
        pd.DataFrame(weights, index=dates, columns=tickers),
        pd.Series(costs, index=dates),
        pd.Series(turnover, dtype=float),
    )


def make_book_inputs(n: int = 200, start: str = "2012-01-01", end: str = "2022-12-31", seed: int = 11) -> dict:
    asset_returns, index_prices = load_inputs(start, end)
    rng = np.random.default_rng(seed)
    tickers = list(asset_returns.columns)
    rets, weights, costs, turnover = {}, {}, {}, {}
    for i in range(n):
        chosen = rng.choice(tickers, size=int(rng.integers(3, 9)), replace=False)
        w = rng.dirichlet(np.ones(len(chosen))) * rng.uniform(0.7, 1.0)
        if rng.random() < 0.2:
            w[-1] = -0.2
        name = f"sleeve_{i:04d}"
        rets[name], weights[name], costs[name], turnover[name] = simulate_basket(
            asset_returns, dict(zip(chosen, w, strict=True)), float(rng.choice([2.0, 5.0, 10.0])))
    frame = pd.DataFrame(rets)
    sleeve_returns = frame.loc[frame.dropna().index[0]:]
    rows = list(range(62, len(sleeve_returns) - 1, 63))
    targets = rng.dirichlet(np.full(n, 0.3), size=len(rows))
    meta_weights = pd.DataFrame(targets, index=sleeve_returns.index[rows], columns=list(rets))
    diagnostics = pd.DataFrame({"status": ["optimal"] * len(rows), "solver": ["newton"] * len(rows)},
                               index=meta_weights.index)
    lineage = {s: {"run_id": f"run-{i:04d}", "code_version": "abc1234", "data_version": "sp500-2022-12-28",
                   "start": str(sleeve_returns.index[0].date()), "end": str(sleeve_returns.index[-1].date())}
               for i, s in enumerate(rets)}
    return dict(
        sleeve_returns=sleeve_returns, meta_weights=meta_weights, diagnostics=diagnostics,
        flatten=flatten_numpy(meta_weights, weights,  # the book's shares ride the GROSS sleeve returns
                              sleeve_returns + pd.DataFrame(costs).reindex(sleeve_returns.index).fillna(0.0)),
        sleeve_weights=weights,
        sleeve_costs=costs, sleeve_turnover=turnover, asset_returns=asset_returns, benchmark=Benchmark(levels=index_prices, name="S&P 500", total_return=False,
                            source="skfolio load_sp500_index()"),
        lineage=lineage, previous=None,
    )
