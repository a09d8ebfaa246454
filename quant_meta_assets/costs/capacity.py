"""Capacity: the book's Sharpe and cost drag against its AUM, when average daily volumes are known.

The book's daily net trade ``z_i(t)`` (fraction of its value) costs, on top of its half-spreads and
holding costs, a market impact (cvxportfolio's ``TransactionCost`` second term, formula only)

    impact(t; AUM) = Σ_i b σ_i(t) |z_i(t)| (|z_i(t)| AUM / ADV_i(t))^(e - 1) = AUM^(e - 1) K(t),
    K(t) = Σ_i b σ_i(t) |z_i(t)|^e / ADV_i(t)^(e - 1)

(``e = 1.5``: the square-root law, impact cost ∝ √AUM). ``σ_i(t)`` is the asset's daily volatility,
the standard deviation (ddof=1) of its returns over the ``vol_window`` days before t (known before
the trade). The return at AUM is ``r(t) - AUM^(e-1) K(t)``, ``r`` the book's return net of its
half-spreads and holding costs. The trades are held fixed across AUMs (the book does not trade
less when it is bigger), so this is the cost of running the same book at a larger size.
**Halving AUM**: the AUM at which the Sharpe is half the Sharpe without impact (the small-book
Sharpe, spread and holding costs included); none when that Sharpe is not positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from quant_meta_assets import metrics as M
from quant_meta_assets.costs.cost_model import CostModel
from quant_meta_assets.errors import StageInputError
from quant_meta_assets.rates import PERIODS_PER_YEAR

__all__ = ["DEFAULT_AUM_GRID", "Capacity", "capacity", "daily_volatility", "impact_per_unit"]

DEFAULT_AUM_GRID = tuple(float(x) for x in np.logspace(6, 11, 11))  # 1M to 100bn, half-decades
DEFAULT_VOL_WINDOW = 252


@dataclass(frozen=True)
class Capacity:
    """``curve``: one row per AUM (``sharpe``, ``impact_bps_per_year``, ``cost_drag_bps_per_year`` =
    half-spreads + holding + impact). ``sharpe_without_impact``; ``halving_aum`` (None when the
    small-book Sharpe is not positive)."""

    curve: pd.DataFrame
    sharpe_without_impact: float
    halving_aum: float | None
    exponent: float


def daily_volatility(asset_returns: pd.DataFrame, window: int = DEFAULT_VOL_WINDOW) -> pd.DataFrame:
    """σ_i(t): std (ddof=1) of the ``window`` returns before t (at least 2; NaN before that)."""
    return asset_returns.rolling(window, min_periods=2).std(ddof=1).shift(1)


def impact_per_unit(trades: pd.DataFrame, sigma: pd.DataFrame, model: CostModel) -> pd.Series:
    """``K(t)``: the day's impact cost per unit of ``AUM^(e-1)`` (see the module docstring)."""
    tickers = [str(c) for c in trades.columns]
    adv = model.adv_panel(trades.index, tickers)
    s = sigma.reindex(index=trades.index, columns=trades.columns).to_numpy(dtype=float)
    z = np.abs(trades.to_numpy(dtype=float))
    e = float(model.impact_exponent)
    traded = z > 0
    if np.isnan(s[traded]).any():
        row, col = np.argwhere(traded & np.isnan(s))[0]
        raise StageInputError(f"capacity: no volatility for {tickers[col]!r} on {trades.index[row].date()} "
                              "(fewer than 2 earlier returns)")
    s = np.where(traded, s, 0.0)
    k = model.impact_coefficient * (s * z ** e / adv ** (e - 1.0)).sum(axis=1)
    return pd.Series(k, index=trades.index, name="impact_per_unit")


def capacity(returns: pd.Series, trades: pd.DataFrame, asset_returns: pd.DataFrame, model: CostModel,
             *, costs: pd.Series | None = None, aums=DEFAULT_AUM_GRID, risk_free_rate: float | None = None,
             vol_window: int = DEFAULT_VOL_WINDOW) -> Capacity:
    """The capacity curve of a book with daily net ``returns`` (after half-spreads and holding
    costs, ``costs`` = those costs, daily) and daily net ``trades`` (date x ticker)."""
    aums = np.asarray(list(aums), dtype=float)
    if aums.size == 0 or not np.isfinite(aums).all() or (aums <= 0).any():
        raise StageInputError(f"capacity: the AUM grid must be finite numbers > 0, got {list(aums)}")
    sigma = daily_volatility(asset_returns, vol_window)
    k = impact_per_unit(trades, sigma, model).reindex(returns.index).fillna(0.0).to_numpy()
    r = returns.to_numpy(dtype=float)
    base_cost = 0.0 if costs is None else float(costs.reindex(returns.index).sum())
    e = float(model.impact_exponent)
    years = len(r) / PERIODS_PER_YEAR

    def sharpe_at(aum: float) -> float:
        return M.sharpe(pd.Series(r - aum ** (e - 1.0) * k, index=returns.index), risk_free_rate)

    rows = []
    for aum in aums:
        impact = aum ** (e - 1.0) * k.sum() / years * 1e4
        rows.append({"aum": aum, "sharpe": sharpe_at(aum), "impact_bps_per_year": impact,
                     "cost_drag_bps_per_year": base_cost / years * 1e4 + impact})
    curve = pd.DataFrame(rows).set_index("aum")
    s0 = M.sharpe(returns, risk_free_rate)
    return Capacity(curve=curve, sharpe_without_impact=s0, halving_aum=_halving_aum(sharpe_at, s0, k, aums),
                    exponent=e)


def _halving_aum(sharpe_at, s0: float, k: np.ndarray, aums: np.ndarray) -> float | None:
    """The smallest AUM (to 1e-6 relative) with Sharpe <= s0 / 2, by bisection on a bracket."""
    if not np.isfinite(s0) or s0 <= 0 or not (k > 0).any():
        return None
    target = s0 / 2.0
    lo, hi = 0.0, float(aums.min())
    while sharpe_at(hi) > target:
        lo, hi = hi, hi * 10.0
        if hi > 1e20:
            return None
    while hi - lo > 1e-6 * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if sharpe_at(mid) > target else (lo, mid)
    return hi
