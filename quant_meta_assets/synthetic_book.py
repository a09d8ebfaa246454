"""A seeded synthetic book for scale benchmarks and tests: factor-model prices and a registry.

``factor_prices(n_assets, n_days, seed)``: daily closes from a 3-factor model
(``r = B f + e``, about 1-2 % daily vol, business days from 2010-01-04), every ticker priced on
every day.
``point_in_time_prices(n_assets, n_days, seed)``: the same factor-model closes with listings and
delistings: a third of the tickers list late, a third delist early (some late ones delist too),
the rest trade throughout; NaN outside each ticker's listed life, never inside it (the
point-in-time policy of :mod:`quant_meta_assets.prices`); ``listed_life(prices)`` gives each
ticker's first and last date.
``book_registry(n_sleeves, tickers, seed)``: the registry YAML text of ``n_sleeves`` sleeves
cycling through the built-in strategies with varied parameters, rebalance frequencies and costs.
``min_variance`` sleeves get a 30-ticker universe so a 500-ticker book stays a book of
light sleeves (one NNLS per month on 500 tickers would dominate everything else).
Same arguments, same bytes: every number comes from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import yaml

__all__ = ["book_registry", "factor_prices", "listed_life", "point_in_time_prices"]

_REBALANCE = ("monthly", "weekly", "monthly", "quarterly", "daily")


def factor_prices(n_assets: int, n_days: int, seed: int = 0) -> pd.DataFrame:
    """``n_days`` x ``n_assets`` adjusted closes (tickers ``T0000``...), index named ``date``."""
    if n_assets < 1 or n_days < 2:
        raise ValueError(f"need n_assets >= 1 and n_days >= 2, got {n_assets} and {n_days}")
    rng = np.random.default_rng(seed)
    factors = rng.normal(0.0003, 0.01, size=(n_days - 1, 3))
    loadings = rng.normal(0.0, 0.6, size=(3, n_assets)) + np.array([[1.0], [0.0], [0.0]])
    idio = rng.normal(0.0, 1.0, size=(n_days - 1, n_assets)) * rng.uniform(0.005, 0.02, n_assets)
    returns = np.clip(factors @ loadings + idio, -0.5, 0.5)
    closes = 100.0 * np.vstack([np.ones((1, n_assets)), np.cumprod(1.0 + returns, axis=0)])
    index = pd.bdate_range("2010-01-04", periods=n_days, name="date")
    return pd.DataFrame(closes, index=index, columns=[f"T{i:04d}" for i in range(n_assets)])


def point_in_time_prices(n_assets: int = 12, n_days: int = 600, seed: int = 0) -> pd.DataFrame:
    """``factor_prices`` with listings and delistings (see the module docstring).

    Ticker ``i``: ``i % 3 == 1`` lists late (between 10% and 60% of the history), ``i % 3 == 2``
    delists early (between 40% and 90%), and every fourth of those that list late also delists;
    ``i % 3 == 0`` trade throughout, so at least one ticker has a price on every date.
    """
    if n_assets < 3 or n_days < 20:
        raise ValueError(f"need n_assets >= 3 and n_days >= 20, got {n_assets} and {n_days}")
    prices = factor_prices(n_assets, n_days, seed)
    rng = np.random.default_rng(seed + 1)
    values = prices.to_numpy(copy=True)
    for i in range(n_assets):
        first, last = 0, n_days - 1
        if i % 3 == 1:
            first = int(rng.integers(n_days // 10, 6 * n_days // 10))
            if i % 4 == 1:
                last = int(rng.integers(first + n_days // 10, n_days - 1))
        elif i % 3 == 2:
            last = int(rng.integers(4 * n_days // 10, 9 * n_days // 10))
        values[:first, i] = np.nan
        values[last + 1 :, i] = np.nan
    return pd.DataFrame(values, index=prices.index, columns=prices.columns)


def listed_life(prices: pd.DataFrame) -> pd.DataFrame:
    """Each ticker's first and last price date (columns ``first``, ``last``), index = tickers."""
    present = prices.notna()
    return pd.DataFrame({"first": [present.index[present[c].to_numpy()][0] for c in prices.columns],
                         "last": [present.index[present[c].to_numpy()][-1] for c in prices.columns]},
                        index=prices.columns)


def _sleeve(i: int, rng: np.random.Generator, tickers: list[str]) -> dict:
    n = len(tickers)
    kind = i % 6
    top_n = int(rng.integers(1, max(2, min(n, 20)) + 1))
    if kind == 0:
        entry = {"strategy": "momentum_12_1",
                 "params": {"lookback": int(rng.choice([126, 189, 252])), "skip": 21, "top_n": top_n}}
    elif kind == 1:
        entry = {"strategy": "short_term_reversal",
                 "params": {"lookback": int(rng.choice([5, 10, 21])), "top_n": top_n}}
    elif kind == 2:
        entry = {"strategy": "low_volatility", "params": {"lookback": int(rng.choice([21, 63, 126])), "top_n": top_n}}
    elif kind == 3:
        entry = {"strategy": "trend_vol_target",
                 "params": {"lookback": int(rng.choice([63, 126, 252])), "vol_lookback": 63,
                            "target_vol": float(rng.choice([0.05, 0.1, 0.15])), "max_leverage": 1.0}}
    elif kind == 4:
        universe = sorted(rng.choice(tickers, size=min(n, 30), replace=False).tolist())
        entry = {"strategy": "min_variance", "universe": universe,
                 "params": {"lookback": int(rng.choice([126, 252]))}}
    else:
        entry = {"strategy": "equal_weight"}
    rebalance = "monthly" if kind == 4 else _REBALANCE[int(rng.integers(len(_REBALANCE)))]
    return {"name": f"s{i:04d}_{entry['strategy']}", **entry, "rebalance": rebalance,
            "cost_bps": float(rng.choice([2.0, 5.0, 10.0]))}


def book_registry(n_sleeves: int, tickers: list[str], seed: int = 0) -> str:
    """Registry YAML of ``n_sleeves`` built-in sleeves over ``tickers`` (see the module docstring)."""
    if n_sleeves < 1:
        raise ValueError(f"need n_sleeves >= 1, got {n_sleeves}")
    rng = np.random.default_rng(seed)
    sleeves = [_sleeve(i, rng, list(tickers)) for i in range(n_sleeves)]
    return yaml.safe_dump({"defaults": {"timeout_s": 600, "max_retries": 1}, "sleeves": sleeves}, sort_keys=False)
