"""meta.flatten: project meta-weights (across sleeves) onto asset weights: the book's holdings.

Each sleeve is a sub-account of ONE book (the netted book whose return is the headline ``meta``).
The book pays no sleeve's stand-alone cost: it trades the net of its sleeves' trades and pays its
own cost as a proportional drag on the whole book (``meta.costs``), which moves no share. So
between rebalances the sub-account shares drift with the sleeves' GROSS returns
``g_s = r_s + cost_s`` (net return plus the sleeve's own cost drag of the day), exactly as
holdings drift inside a sleeve: m_s(t+1) = m_s(t)(1 + g_s(t)) / (1 + m(t)·g(t)). Meta-weights
dated d apply from the next row (no look-ahead). On each live day t the asset weight is
a_i(t) = sum_s m_s(t) * w_{s,i}(t), where w_s(t) are sleeve s's start-of-day weights;
overlapping tickers across sleeves net against each other. These ``a`` are the holdings that earn
the headline return: sum_i a_i(t) R_i(t) + (1 - sum_i a_i(t)) rf_d - book_cost(t) = meta(t)
(reconciled in the report).

Missing returns (NaN) are never read as 0: a sleeve with meta-weight exactly 0 (e.g. not live
yet) is not held, so its return contributes exactly 0 and does not touch the others' drift; a
*held* sleeve (weight != 0) with a NaN return raises ``StageInputError`` naming the sleeve and
the date. The one exception is a sleeve that has stopped (NaN after its last live day): it is
liquidated into cash at the close of its last live day (``meta.drift``): its sub-account earns
the daily risk-free rate ``cash_return`` and holds no asset until the optimizer sells it out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from quant_meta_assets import rates
from quant_meta_assets.errors import StageInputError
from quant_meta_assets.meta.drift import cash_after_stop, stopped_mask
from quant_meta_assets.sleeves.engine import gross_returns


def _cash_return(cash_return: float | pd.Series | None) -> float | pd.Series:
    """The daily rate a stopped sleeve's cash earns: given, else the project's rf (``rates.py``)."""
    return rates.daily_rate(rates.resolve(None)) if cash_return is None else cash_return


@dataclass(frozen=True)
class FlattenResult:
    """Daily asset weights, the daily held meta-weights that produced them, and exposures."""

    asset_weights: pd.DataFrame  # date x ticker, the book's start-of-day holdings
    meta_weights_daily: pd.DataFrame  # date x sleeve, the book's start-of-day sub-account shares
    exposure: pd.DataFrame  # date x [gross, net]


def held_meta_weights(meta_weights: pd.DataFrame, sleeve_returns: pd.DataFrame,
                      cash_return: float | pd.Series | None = None) -> pd.DataFrame:
    """Start-of-day meta-weights for every day after the first rebalance, with drift.

    A stopped sleeve's sub-account earns ``cash_return`` (daily; ``None`` = the project's rf)."""
    missing = meta_weights.columns.difference(sleeve_returns.columns)
    if len(missing):
        raise StageInputError(f"meta-weights name sleeves without returns: {list(missing)}")
    if meta_weights.empty:
        raise StageInputError("meta-weights are empty: no rebalance to apply")
    bad_dates = meta_weights.index.difference(sleeve_returns.index)
    if len(bad_dates):
        raise StageInputError(
            f"meta-weights dated {bad_dates[0].date()} is not a date of the sleeve returns"
        )
    returns = cash_after_stop(sleeve_returns[meta_weights.columns], _cash_return(cash_return)).to_numpy(dtype=float)
    targets = meta_weights.to_numpy(dtype=float)
    positions = sleeve_returns.index.get_indexer(meta_weights.index)
    if np.any(np.diff(positions) <= 0):
        raise StageInputError("meta-weights dates must be strictly increasing")
    n_rows = len(sleeve_returns)
    held = np.full((n_rows, targets.shape[1]), np.nan)
    bounds = list(positions[1:] + 1) + [n_rows]
    for target, first_row, stop in zip(targets, positions + 1, bounds, strict=True):
        if first_row >= n_rows:
            break
        if not np.isfinite(target).all():
            raise StageInputError(f"meta-weights dated {sleeve_returns.index[first_row - 1].date()} are not finite")
        held_now = target != 0.0
        segment = returns[first_row:stop]
        missing = held_now & ~np.isfinite(segment)
        if missing.any():
            row, col = (int(v) for v in np.argwhere(missing)[0])
            raise StageInputError(
                f"sleeve {meta_weights.columns[col]!r} is held (meta-weight {target[col]:.6g}) but its "
                f"return on {sleeve_returns.index[first_row + row].date()} is {segment[row, col]}: a held "
                "sleeve's return is a required input"
            )
        segment = np.where(held_now, segment, 0.0)  # not held: contributes exactly 0
        # wealth of each sleeve's sub-account at the start of each day of the segment
        growth = np.vstack([np.ones(targets.shape[1]), np.cumprod(1.0 + segment[:-1], axis=0)])
        wealth = target * growth
        held[first_row:stop] = wealth / wealth.sum(axis=1, keepdims=True)
    frame = pd.DataFrame(held, index=sleeve_returns.index, columns=meta_weights.columns)
    return frame.iloc[positions[0] + 1 :]


def book_sleeve_returns(sleeve_returns: pd.DataFrame, sleeve_costs) -> pd.DataFrame:
    """The sleeves' GROSS returns (net + own daily cost), the returns their shares of the book
    drift with; ``sleeve_costs`` is a date x sleeve frame or a mapping of daily cost series.
    A sleeve without costs is an error: drifting it with its net return would silently publish
    holdings that are not the headline book's."""
    names = [str(c) for c in sleeve_returns.columns]
    missing = [s for s in names if s not in sleeve_costs]
    if missing:
        raise StageInputError(f"meta.flatten needs the daily costs of sleeves {missing} (the book's shares "
                              "drift with gross sleeve returns)")
    costs = pd.DataFrame({s: pd.Series(sleeve_costs[s], dtype=float) for s in names})
    costs = costs.reindex(index=sleeve_returns.index).fillna(0.0)  # no cost row: nothing traded
    return gross_returns(sleeve_returns.astype(float), costs)


def flatten_weights(
    meta_weights: pd.DataFrame,
    sleeve_weights: Mapping[str, pd.DataFrame],
    sleeve_returns: pd.DataFrame,
    sleeve_costs,
    cash_return: float | pd.Series | None = None,
    *,
    after: pd.Timestamp | None = None,
    on_frame: Callable[[str, pd.DataFrame], None] | None = None,
) -> FlattenResult:
    """The book's asset weights per live day = sum over sleeves of its share x sleeve weight.

    ``sleeve_returns`` are the sleeves' NET returns and ``sleeve_costs`` their daily cost drags
    (a date x sleeve frame or a mapping); the shares drift with the gross returns (module
    docstring). After a sleeve's last live day its sub-account is cash (weights 0, earning
    ``cash_return``, daily, ``None`` = the project's rf): it contributes no asset weight.
    ``sleeve_weights`` is any mapping; each sleeve's frame is fetched exactly once, in
    meta-weight column order, so a lazy mapping over stored bundles streams the book.

    ``after`` (an update, ``meta.incremental``): only the rows dated after it are computed, from
    the last rebalance on or before it; each is the same number a full call gives on that date
    (the same arithmetic on the same inputs). ``on_frame(sleeve, frame)`` sees each sleeve's
    weights frame as it is read (the update's prefix digests).
    """
    missing = [s for s in meta_weights.columns if s not in sleeve_weights]
    if missing:
        raise StageInputError(f"meta.flatten needs the daily weights of sleeves {missing}")
    gross = book_sleeve_returns(sleeve_returns.loc[:, [c for c in sleeve_returns.columns
                                                     if c in set(meta_weights.columns)]], sleeve_costs)
    if after is not None and (meta_weights.index <= after).any():
        # the rows after ``after`` drift from the last rebalance on or before it
        held = held_meta_weights(meta_weights.loc[meta_weights.index[meta_weights.index <= after][-1]:], gross,
                                 cash_return)
        held = held.loc[held.index > after]
    else:
        held = held_meta_weights(meta_weights, gross, cash_return)
    stopped = pd.DataFrame(stopped_mask(sleeve_returns[meta_weights.columns].to_numpy(dtype=float)),
                           index=sleeve_returns.index, columns=meta_weights.columns).loc[held.index]
    # one pass, one sleeve's weights in memory at a time (``sleeve_weights`` may read each from
    # disk on access): the ticker columns grow as sleeves bring new tickers, sorted at the end
    column_of: dict[str, int] = {}
    assets = np.zeros((len(held), 0))
    for sleeve in meta_weights.columns:
        frame = sleeve_weights[sleeve]
        if on_frame is not None:
            on_frame(sleeve, frame)
        new = [c for c in frame.columns if c not in column_of]
        if new:
            column_of.update({c: len(column_of) + i for i, c in enumerate(new)})
            assets = np.hstack([assets, np.zeros((len(held), len(new)))])
        weights = frame.reindex(index=held.index)
        gone = stopped[sleeve].to_numpy()
        if gone.any():
            weights.loc[gone, :] = 0.0  # stopped: the sub-account is all cash
        m = held[sleeve].to_numpy()
        empty = weights.isna().all(axis=1).to_numpy() & (m != 0.0)
        if empty.any():
            day = weights.index[empty][0]
            raise StageInputError(f"sleeve {sleeve!r} is held but has no weights on live day {day.date()}")
        # a ticker outside a sleeve's frame is not held by that sleeve (its column gets nothing)
        columns = [column_of[c] for c in frame.columns]
        assets[:, columns] += np.where(m[:, None] != 0.0, m[:, None] * weights.fillna(0.0).to_numpy(), 0.0)
        del frame, weights
    tickers = sorted(column_of)
    assets = assets[:, [column_of[t] for t in tickers]]
    asset_weights = pd.DataFrame(assets, index=held.index, columns=tickers)
    exposure = pd.DataFrame(
        {"gross": np.abs(assets).sum(axis=1), "net": assets.sum(axis=1)}, index=held.index
    )
    return FlattenResult(asset_weights=asset_weights, meta_weights_daily=held, exposure=exposure)


def meta_portfolio_returns(meta_weights_daily: pd.DataFrame, sleeve_returns: pd.DataFrame,
                           cash_return: float | pd.Series | None = None) -> pd.Series:
    """The meta-portfolio's daily net return: held meta-weights times sleeve net returns.

    A stopped sleeve's sub-account earns ``cash_return`` (daily; ``None`` = the project's rf).

    A sleeve with held weight exactly 0 contributes 0 whatever its return; a NaN held weight, or a
    NaN return of a held sleeve, raises ``StageInputError`` naming the sleeve and the date.
    """
    cash = cash_after_stop(sleeve_returns.loc[:, meta_weights_daily.columns], _cash_return(cash_return))
    aligned = cash.loc[meta_weights_daily.index].to_numpy(dtype=float)
    m = meta_weights_daily.to_numpy(dtype=float)
    bad = np.isnan(m) | ((m != 0.0) & ~np.isfinite(aligned))
    if bad.any():
        row, col = (int(v) for v in np.argwhere(bad)[0])
        what = "held meta-weight is NaN" if np.isnan(m[row, col]) else f"return is {aligned[row, col]} while held"
        raise StageInputError(
            f"meta return on {meta_weights_daily.index[row].date()}: sleeve "
            f"{meta_weights_daily.columns[col]!r} {what}"
        )
    contributions = m * np.where(m != 0.0, aligned, 0.0)  # not held: exactly 0, not 0 x NaN
    return pd.Series(contributions.sum(axis=1), index=meta_weights_daily.index, name="meta")
