"""Meta-portfolio return series and the portfolios it is compared with.

Everything here is recomputed independently of ``meta.flatten`` so the forensics can compare
the two: drifted meta-weights, the meta's live days, the equal-weight meta benchmark (1/N of
the sleeves, rebalanced on the SAME dates as the meta and drifting in between, like the meta),
the S&P 500 benchmark returns and the sleeve-level reallocation turnover.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from quant_meta_assets.errors import StageInputError
from collections.abc import Iterator, Mapping

from quant_meta_assets.meta.drift import cash_after_stop, last_live_days, weights_after_stop


class CashAfterStop(Mapping):
    """The sleeves' daily weights with every stopped sleeve all cash after its last live day
    (``meta.drift``); other sleeves' frames are passed through untouched, fetched on access."""

    def __init__(self, weights: Mapping[str, pd.DataFrame], returns: pd.DataFrame) -> None:
        self._weights = weights
        self._stops = last_live_days(returns)
        self._index = returns.index

    def __getitem__(self, sleeve: str) -> pd.DataFrame:
        frame = self._weights[sleeve]
        last = self._stops.get(str(sleeve))
        return frame if last is None else weights_after_stop(frame, last, self._index)

    def read_since(self, sleeve: str, since: pd.Timestamp) -> pd.DataFrame:
        """The rows from ``since`` on, read as such when the weights can (``SleeveFrames``)."""
        read = getattr(self._weights, "read_since", None)
        frame = read(sleeve, since) if read is not None else self._weights[sleeve].loc[since:]
        last = self._stops.get(str(sleeve))
        return frame if last is None else weights_after_stop(frame, last, self._index[self._index >= since])

    def __iter__(self) -> Iterator[str]:
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)


def costs_after_stop(costs: Mapping[str, pd.Series], returns: pd.DataFrame) -> dict[str, pd.Series]:
    """The sleeves' daily costs, 0 after a stopped sleeve's last live day (cash pays no cost)."""
    stops = last_live_days(returns)
    out = {}
    for sleeve, series in costs.items():
        last = stops.get(str(sleeve))
        if last is not None:
            series = series.reindex(returns.index)
            series = series.where(series.index <= last, 0.0)
        out[sleeve] = series
    return out


def live_index(meta_weights: pd.DataFrame, sleeve_returns: pd.DataFrame) -> pd.DatetimeIndex:
    """Days on which meta-weights are held: every sleeve-return row after the first rebalance."""
    if meta_weights.empty:
        raise StageInputError("meta-weights are empty: the meta-portfolio is never live")
    first = meta_weights.index[0]
    if first not in sleeve_returns.index:
        raise StageInputError(f"first meta rebalance {first} is not a date of the sleeve returns")
    live = sleeve_returns.index[sleeve_returns.index > first]
    if len(live) == 0:
        raise StageInputError(f"no sleeve returns after the first meta rebalance {first}")
    return pd.DatetimeIndex(live)


def drifted_weights(targets: pd.DataFrame, returns: pd.DataFrame,
                    cash_return: float | pd.Series = 0.0) -> tuple[pd.DataFrame, pd.Series]:
    """Start-of-day held weights from rebalance targets, drifting with ``returns``; and turnover.

    Target row dated d is held from the row after d; between rebalances
    m(t+1) = m(t)(1 + r(t)) / (1 + m(t)·r(t)). Turnover at each rebalance d is two-sided,
    sum |target(d) - m_pre(d)| where m_pre(d) is the held weight drifted through day d (before the
    trade); the first rebalance trades from cash, so its turnover is sum |target|.
    A sleeve that stopped (NaN after its last live day) is cash earning ``cash_return`` (daily)
    from then on (``meta.drift``); a held sleeve's NaN anywhere else is a ``StageInputError``.
    Returns (held weights on the live days, turnover indexed by rebalance date).
    """
    live = live_index(targets, returns)
    unknown = targets.index.difference(returns.index)
    if len(unknown):
        raise StageInputError(f"rebalance date {unknown[0]} is not a date of the sleeve returns")
    r = cash_after_stop(returns.loc[:, targets.columns], cash_return).to_numpy(dtype=float)
    row_of = {d: i for i, d in enumerate(returns.index)}
    rebal_rows = {row_of[d]: k for k, d in enumerate(targets.index)}
    tgt = targets.to_numpy(dtype=float)
    start = row_of[targets.index[0]]
    held = np.full((len(live), tgt.shape[1]), np.nan)
    turnover = np.full(len(targets), np.nan)
    current = np.zeros(tgt.shape[1])  # weights held at the start of day `row`
    for row in range(start, len(returns.index)):
        if row > start:
            held[row - start - 1] = current
            missing = (current != 0.0) & ~np.isfinite(r[row])
            if missing.any():
                col = int(np.flatnonzero(missing)[0])
                raise StageInputError(
                    f"sleeve {targets.columns[col]!r} is held but its return on "
                    f"{returns.index[row].date()} is {r[row, col]}"
                )
            growth = current * (1.0 + np.where(current != 0.0, r[row], 0.0))  # not held: exactly 0
            post = growth / growth.sum()  # drifted through day `row`: the pre-trade weights
        else:
            post = np.zeros(tgt.shape[1])  # before the first rebalance: all cash
        k = rebal_rows.get(row)
        if k is not None:
            turnover[k] = float(np.abs(tgt[k] - post).sum())
            post = tgt[k].copy()
        current = post
    held_frame = pd.DataFrame(held, index=live, columns=targets.columns)
    return held_frame, pd.Series(turnover, index=targets.index, name="turnover")


def counted_turnover(turnover: pd.Series | None, calendar: pd.DatetimeIndex,
                     live: pd.DatetimeIndex) -> pd.Series | None:
    """The rebalances whose turnover counts in the annualised column (metrics.CONVENTIONS).

    ``turnover`` is a book's full per-rebalance series (indexed by decision date, the first entry
    its initial allocation from cash). Kept: decision dates from the calendar day before
    ``live[0]`` (that trade first earns on ``live[0]``) to before ``live[-1]`` (a trade on the last
    day is never held); dropped: the book's initial allocation, wherever it falls.
    """
    if turnover is None:
        return None
    t = pd.Series(turnover, dtype=float).sort_index()
    if t.empty:
        return t
    t = t.iloc[1:]  # the initial allocation from cash
    pos = calendar.get_indexer([live[0]])[0]
    first = calendar[pos - 1] if pos > 0 else live[0]
    return t[(t.index >= first) & (t.index < live[-1])]


def equal_weight_targets(meta_weights: pd.DataFrame, returns: pd.DataFrame | None = None) -> pd.DataFrame:
    """1/N of the sleeves on every meta rebalance date; with ``returns``, of the sleeves live then
    (a return on the rebalance date), so a sleeve that does not exist yet is not bought."""
    live = pd.DataFrame(True, index=meta_weights.index, columns=meta_weights.columns)
    if returns is not None:
        live = returns.loc[meta_weights.index, meta_weights.columns].notna()
    n = live.sum(axis=1)
    if (n == 0).any():
        raise StageInputError(f"no sleeve is live on the meta rebalance date {n.index[(n == 0).to_numpy()][0]}")
    return live.astype(float).div(n, axis=0)


def benchmark_returns(benchmark: pd.Series | pd.DataFrame, index: pd.DatetimeIndex) -> pd.Series:
    """Simple daily returns of a benchmark PRICE series on ``index`` (prices must cover it)."""
    if isinstance(benchmark, pd.DataFrame):
        if benchmark.shape[1] != 1:
            raise StageInputError(
                f"benchmark must be one price series, got columns {list(benchmark.columns)}"
            )
        benchmark = benchmark.iloc[:, 0]
    prices = pd.to_numeric(benchmark, errors="raise").astype(float).sort_index()
    rets = prices.pct_change(fill_method=None).reindex(index)
    if rets.isna().any():
        day = rets.index[rets.isna().to_numpy()][0]
        raise StageInputError(
            f"benchmark prices do not cover the meta's live day {day} and the day before it"
        )
    return rets
