"""Strategies that misbehave on purpose, for the compute-engine tests.

Referenced from profiles as ``quant_meta_assets_tests.strategies_for_tests:<name>``; they run on
Ray workers, so this module must stay importable there (the test Ray puts the repository root on
the workers' PYTHONPATH). Every strategy follows the contract ``fn(prices, **params) -> weights``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

MODULE = "quant_meta_assets_tests.strategies_for_tests"


def spec(name: str) -> str:
    """The registry ``strategy`` string of one of the functions below."""
    return f"{MODULE}:{name}"


def make_prices(n_days: int = 260, tickers: tuple[str, ...] = ("AAA", "BBB", "CCC", "DDD"), seed: int = 7) -> pd.DataFrame:
    """A small valid price frame (business days, positive, finite, index named ``date``)."""
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2020-01-01", periods=n_days, name="date")
    rets = rng.normal(0.0003, 0.01, size=(n_days, len(tickers)))
    prices = 100.0 * np.cumprod(1.0 + rets, axis=0)
    return pd.DataFrame(prices, index=index, columns=list(tickers))


def good(prices: pd.DataFrame) -> pd.DataFrame:
    """Equal weight on every ticker, every day."""
    n = prices.shape[1]
    return pd.DataFrame(1.0 / n, index=prices.index, columns=prices.columns)


def raises(prices: pd.DataFrame, message: str = "boom from the strategy") -> pd.DataFrame:
    raise ValueError(message)


def crashes(prices: pd.DataFrame) -> pd.DataFrame:
    """Kill the worker process outright (no exception, no cleanup)."""
    os._exit(1)


def hangs(prices: pd.DataFrame, seconds: float = 3600.0) -> pd.DataFrame:
    time.sleep(seconds)
    return good(prices)


def nan_weights(prices: pd.DataFrame) -> pd.DataFrame:
    weights = good(prices)
    weights.iloc[len(weights) // 2, 0] = np.nan
    return weights


def returns_list(prices: pd.DataFrame) -> list:
    return [0.25, 0.25, 0.25, 0.25]


def crash_once(prices: pd.DataFrame, marker: str) -> pd.DataFrame:
    """Crash the worker on the first call (creates ``marker``), succeed on every later one."""
    path = Path(marker)
    with path.open("a") as fh:
        fh.write("attempt\n")
    if path.read_text().count("attempt") == 1:
        os._exit(1)
    return good(prices)


def hangs_once(prices: pd.DataFrame, marker: str, seconds: float = 3600.0) -> pd.DataFrame:
    """Hang on the first call (creates ``marker``: the sleeve times out), succeed on every later one."""
    path = Path(marker)
    with path.open("a") as fh:
        fh.write("attempt\n")
    if path.read_text().count("attempt") == 1:
        time.sleep(seconds)
    return good(prices)


def count_and_raise(prices: pd.DataFrame, counter: str) -> pd.DataFrame:
    """Append one line to ``counter`` per call, then raise (a deterministic failure)."""
    with Path(counter).open("a") as fh:
        fh.write("attempt\n")
    raise RuntimeError("deterministic failure")


def count_and_crash(prices: pd.DataFrame, counter: str) -> pd.DataFrame:
    """Append one line to ``counter`` per call, then kill the worker (crashes on every attempt)."""
    with Path(counter).open("a") as fh:
        fh.write("attempt\n")
    os._exit(1)


def exploding_weights(prices: pd.DataFrame) -> pd.DataFrame:
    """Finite but absurd leverage (1e306x): above any sane max_gross, and ruinous on the first down day."""
    weights = good(prices) * 1e306
    return weights


def slow_good(prices: pd.DataFrame, seconds: float = 1.0) -> pd.DataFrame:
    time.sleep(seconds)
    return good(prices)


def foreign_tickers(prices: pd.DataFrame) -> pd.DataFrame:
    """Weights on a ticker that is not in the sleeve's universe."""
    weights = good(prices)
    weights["NOT_A_TICKER"] = 0.0
    return weights


def off_index_dates(prices: pd.DataFrame) -> pd.DataFrame:
    """A weight row dated the day after the last price (not in the price index: look-ahead)."""
    weights = good(prices)
    extra = weights.iloc[[-1]].copy()
    extra.index = pd.DatetimeIndex([prices.index[-1] + pd.Timedelta(days=1)], name=prices.index.name)
    return pd.concat([weights, extra])


def empty_weights(prices: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(index=pd.DatetimeIndex([], name="date"), columns=prices.columns, dtype=float)


def zero_variance(prices: pd.DataFrame) -> pd.DataFrame:
    """All cash: a sleeve that is live but whose returns are exactly 0 every day."""
    return pd.DataFrame(0.0, index=prices.index, columns=prices.columns)


def slow_good_marked(prices: pd.DataFrame, seconds: float, marker: str) -> pd.DataFrame:
    """slow_good that first writes ``marker``: the test sees the moment the sleeve started running."""
    from pathlib import Path

    Path(marker).write_text(str(time.time()))
    return slow_good(prices, seconds)


def first_of_month_equal(prices: pd.DataFrame) -> pd.DataFrame:
    """One row a month (the first trading day): equal weight on the tickers tradable that day."""
    first = prices.index.to_period("M").to_numpy()
    rows = prices.index[np.r_[True, first[1:] != first[:-1]]]
    listed = prices.loc[rows].notna().astype(float)
    return listed.div(listed.sum(axis=1), axis=0)


def peeks_at_tomorrow(prices: pd.DataFrame) -> pd.DataFrame:
    """Long the 2 tickers with the best NEXT-day return: look-ahead by one row (the detector's case)."""
    tomorrow = prices.pct_change(fill_method=None).shift(-1)
    ranks = tomorrow.rank(axis=1, ascending=False)
    return (ranks <= 2).astype(float) / 2.0


def short_warmup_trend(prices: pd.DataFrame) -> pd.DataFrame:
    """Equal weight on the tickers with a positive 20-day return, declaring a warm-up of 2 rows
    (too short on purpose: an incremental update must catch it and recompute in full)."""
    score = prices / prices.shift(20) - 1.0
    score = score.iloc[20:]
    held = (score > 0).astype(float)
    return held.div(held.sum(axis=1).where(held.sum(axis=1) > 0), axis=0).fillna(0.0)


short_warmup_trend.warmup = lambda: 2
