"""Holdings drift: what a fully invested book holds after its weights ride the returns.

One helper, reused by the optimizer (turnover is measured against the drifted holdings, not the
previous target), by meta.flatten and by anyone costing trades (issue 11):

    w(t) = w(s) * prod_{u in (s, t]} (1 + r_u) / sum_j w_j(s) * prod (1 + r_j,u)

A NaN return of a *held* sleeve (weight != 0) is a missing input: the holding's value is
unknown, so it raises ``StageInputError`` naming the sleeve and the date. A NaN return of a
sleeve with weight exactly 0 (not live yet, or liquidated) contributes exactly 0: it is not
held, so its return does not matter.

**A sleeve that stops** (its last live day is before the end of the sleeve-return frame, see
``meta.returns``) is liquidated into cash at the close of its last live day: from the next day
its sub-account holds no asset (weights 0) and earns the daily risk-free rate ``rf_d`` (the
project's one cash convention, ``rates.py``), with no cost, until the next meta rebalance, where
the optimizer holds it at exactly 0 (its window has NaN) and redeploys the capital. The cash is
not spread over the other sleeves between rebalances: that would be an allocation decision (and
could break their bounds) taken outside the optimizer. ``cash_after_stop`` applies the rule to a
date x sleeve frame; every consumer (optimizer drift, ``meta.flatten``, ``meta.costs``, the
report) calls it on the whole frame before drifting, so a NaN after a sleeve's last live day is
cash, while a NaN of a held sleeve anywhere else is still an error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from quant_meta_assets.errors import StageInputError

__all__ = ["cash_after_stop", "drift_weights", "growth_factors", "last_live_days", "stopped_mask", "turnover",
           "weights_after_stop"]


def stopped_mask(returns) -> np.ndarray:
    """True at the cells after each column's last live (non-NaN) row: the sleeve has stopped.

    A column with no live row at all is not stopped (it is not live yet).
    """
    R = np.asarray(returns, dtype=float)
    if R.ndim != 2:
        raise StageInputError(f"stopped_mask: expected a date x sleeve table, got shape {R.shape}")
    live = ~np.isnan(R)
    n = R.shape[0]
    last = np.where(live.any(axis=0), n - 1 - np.argmax(live[::-1], axis=0), n)
    return np.arange(n)[:, None] > last[None, :]


def cash_after_stop(returns: pd.DataFrame, cash_return: float | pd.Series = 0.0) -> pd.DataFrame:
    """``returns`` with every cell after a sleeve's last live day set to ``cash_return`` (the daily
    risk-free rate, a number or a Series by date): a sleeve that stops is cash (module docstring).
    Returns the frame itself when no sleeve stops."""
    mask = stopped_mask(returns.to_numpy(dtype=float))
    if not mask.any():
        return returns
    if isinstance(cash_return, pd.Series):
        rf = cash_return.reindex(returns.index).to_numpy(dtype=float)
        if np.isnan(rf[mask.any(axis=1)]).any():
            raise StageInputError("cash_after_stop: the cash return does not cover the days after a sleeve stops")
    else:
        rf = np.full(len(returns), float(cash_return))
    values = returns.to_numpy(dtype=float, copy=True)
    values[mask] = np.broadcast_to(rf[:, None], values.shape)[mask]
    return pd.DataFrame(values, index=returns.index, columns=returns.columns)


def growth_factors(
    weights: np.ndarray,
    returns_rows: np.ndarray,
    names: Sequence[str] | None = None,
    dates: Sequence | None = None,
) -> np.ndarray:
    """Cumulative growth prod(1 + r) of each sleeve over ``returns_rows`` (T x n), checked.

    Sleeves with weight 0 get growth 1 whatever their returns (NaN included): not held.
    """
    w = np.asarray(weights, dtype=float)
    R = np.asarray(returns_rows, dtype=float)
    if R.ndim != 2 or R.shape[1] != w.shape[0]:
        raise StageInputError(f"drift: returns rows of shape {R.shape} do not match {w.shape[0]} weights")
    held = w != 0.0
    R = np.where(held, R, 0.0)
    bad = np.isnan(R) | np.isinf(R)
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        who = repr(names[col]) if names is not None else f"#{col}"
        when = dates[row] if dates is not None else f"row {row}"
        when = when.date().isoformat() if isinstance(when, pd.Timestamp) else when
        raise StageInputError(
            f"sleeve {who} is held (weight {w[col]:.6g}) but its return on {when} is "
            f"{'NaN' if np.isnan(R[row, col]) else R[row, col]}: a held sleeve's return is a required input"
        )
    return np.prod(1.0 + R, axis=0)


def last_live_days(returns: pd.DataFrame) -> dict[str, pd.Timestamp]:
    """Each sleeve that stops (NaN after some live day, up to the frame's end) -> its last live day."""
    mask = stopped_mask(returns.to_numpy(dtype=float))
    return {str(c): returns[c].last_valid_index() for j, c in enumerate(returns.columns) if mask[:, j].any()}


def weights_after_stop(weights: pd.DataFrame, last_live: pd.Timestamp, index: pd.DatetimeIndex) -> pd.DataFrame:
    """A stopped sleeve's start-of-day weights on ``index``: as recorded up to its last live day,
    then 0 on every ticker (its sub-account is all cash)."""
    out = weights.reindex(index=index)
    out.loc[index > last_live, :] = 0.0
    return out


def drift_weights(weights, returns_rows, names: Sequence[str] | None = None,
                  dates: Sequence | None = None):
    """Weights ``weights`` (fully invested) after drifting through every row of ``returns_rows``.

    ``weights``: (n,) array or Series; ``returns_rows``: (T, n) array or DataFrame of the simple
    returns earned *after* the weights were set, up to and including the decision date. With
    pandas inputs the sleeve names and dates come from them and a Series is returned.
    Zero rows return the weights unchanged.
    """
    if isinstance(returns_rows, pd.DataFrame):
        if isinstance(weights, pd.Series):
            returns_rows = returns_rows.loc[:, weights.index]
        names = [str(c) for c in returns_rows.columns] if names is None else names
        dates = list(returns_rows.index) if dates is None else dates
    w = np.asarray(weights, dtype=float)
    g = growth_factors(w, np.asarray(returns_rows, dtype=float).reshape(-1, w.shape[0]), names, dates)
    wealth = w * g
    total = float(wealth.sum())
    if not total > 0:
        raise StageInputError(f"drift: the drifted book has non-positive value {total:.6g}")
    out = wealth / total
    if isinstance(weights, pd.Series):
        return pd.Series(out, index=weights.index, name=weights.name)
    return out


def turnover(target, held) -> float:
    """Two-sided trade sum |target - held| (not halved)."""
    return float(np.abs(np.asarray(target, dtype=float) - np.asarray(held, dtype=float)).sum())
