"""Target weights -> daily sleeve returns, held weights, costs and turnover.

Timing (no look-ahead): target weights decided at the close of day ``d`` are traded at that
close and first earn the return of the next day in the index, ``R[d+1]``.

Drift: between rebalances the holdings are not touched. With start-of-day weights ``w`` and
cash ``c = 1 - sum(w)`` earning the daily risk-free rate ``rf_d`` (``rates.py``: geometric from the
annual rate; negative cash, i.e. net long above 1, pays it) the gross return is
``r = w . R + c rf_d`` and the next start-of-day weights are ``w * (1 + R) / (1 + r)``. Within a
segment that starts at day ``s`` with target ``w0`` this is the closed form
``w(t) = w0 * G(t-1) / (w0 . G(t-1) + cash0 (1 + rf_d)^(t-s))``, ``G`` the per-asset growth since
``s`` (``G(s-1) = 1``); it is computed for all days at once from cumulative asset wealth.

Costs: at a rebalance on ``d`` the two-sided turnover is ``sum |target - drifted weights at the
close of d|`` (before the first rebalance the sleeve is all cash, so the first turnover is the
gross exposure bought). The trading cost ``sum_i |Δ_i| h_i`` (``h_i`` = ``cost_bps / 1e4``, one rate
for every asset, or a per-ticker Series; ``costs/cost_model.py``) is subtracted from the return of
``d+1``, the first day the new weights earn. Every live day also pays the holding cost of its
start-of-day weights, ``sum_i max(-w_i, 0) f_i + max(sum_i w_i - 1, 0) s`` (borrow fee on shorts,
funding spread over rf on borrowed cash, daily rates of the ``CostModel``; ``costs/financing.py``): the net return is ``g - c`` (the cost is a fraction of
the start-of-day value and does not itself earn that day's return; the fully compounded
``(1 - c)(1 + g) - 1`` differs by ``c g``, under 0.7 bp a year on the bundled data). A cost is a proportional drag on the whole
portfolio, so it does not change the weights. A target dated on the last day of the index
(nothing left to earn) is not traded and has no turnover.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from quant_meta_assets import rates
from quant_meta_assets.costs.cost_model import CostModel, load_cost_model
from quant_meta_assets.costs.financing import holding_cost
from quant_meta_assets.errors import SleeveBankruptError, StrategyOutputError
from quant_meta_assets.prices import asset_returns, period_ends
from quant_meta_assets.sleeves.registry import SleeveProfile, resolve_strategy, validate_universe

__all__ = [
    "SimulationResult",
    "check_gross",
    "check_solvent",
    "error_record",
    "gross_returns",
    "net_returns",
    "rebalance_dates",
    "run_sleeve",
    "sample_weights",
    "simulate",
    "validate_target_weights",
]


@dataclass(frozen=True)
class SimulationResult:
    """``returns``: daily net returns (NaN before live); ``weights``: start-of-day held weights
    (zero rows before live); ``costs``: daily cost drag; ``turnover``: per rebalance date."""

    returns: pd.Series
    weights: pd.DataFrame
    costs: pd.Series
    turnover: pd.Series


def rebalance_dates(index: pd.DatetimeIndex, rebalance: str) -> pd.DatetimeIndex:
    """Last trading day of each period present in ``index`` (daily: every day).

    The last date of ``index`` always closes its (possibly partial) period.
    """
    return period_ends(index, rebalance)


def validate_target_weights(
    weights: object,
    prices: pd.DataFrame,
    universe: tuple[str, ...] | list[str] | None,
    sleeve: str,
) -> pd.DataFrame:
    """Return ``weights`` as float64 or raise StrategyOutputError naming the sleeve and the problem."""
    where = f"sleeve {sleeve!r}: strategy output"
    if not isinstance(weights, pd.DataFrame):
        raise StrategyOutputError(f"{where} must be a pandas DataFrame, got {type(weights).__name__}")
    if weights.shape[0] == 0 or weights.shape[1] == 0:
        raise StrategyOutputError(f"{where} is empty (shape {weights.shape})")
    allowed = [str(c) for c in (prices.columns if universe is None else universe)]
    allowed_set = set(allowed)
    columns = [str(c) for c in weights.columns]
    foreign = [c for c in columns if c not in allowed_set]
    if foreign:
        raise StrategyOutputError(f"{where} has ticker(s) outside the universe: {foreign!r}")
    dup_cols = sorted({c for c in columns if columns.count(c) > 1})
    if dup_cols:
        raise StrategyOutputError(f"{where} has duplicate ticker column(s) {dup_cols!r}")
    if not isinstance(weights.index, pd.DatetimeIndex):
        raise StrategyOutputError(
            f"{where} must be indexed by dates (DatetimeIndex), got {type(weights.index).__name__}"
        )
    if weights.index.tz is not None:
        raise StrategyOutputError(f"{where} has a tz-aware index ({weights.index.tz}); prices are tz-naive")
    dup = weights.index.duplicated()
    if dup.any():
        first = weights.index[np.flatnonzero(dup)[0]]
        raise StrategyOutputError(f"{where} has duplicate date {first.date().isoformat()}")
    if not weights.index.is_monotonic_increasing:
        bad = int(np.flatnonzero(np.diff(weights.index.asi8) < 0)[0]) + 1
        raise StrategyOutputError(
            f"{where} dates are not sorted: {weights.index[bad].date().isoformat()} comes after "
            f"{weights.index[bad - 1].date().isoformat()}"
        )
    foreign_dates = ~weights.index.isin(prices.index)
    if foreign_dates.any():
        first = weights.index[np.flatnonzero(foreign_dates)[0]]
        after = " (after the last price date: look-ahead)" if first > prices.index[-1] else ""
        raise StrategyOutputError(
            f"{where} has date {first.isoformat()} that is not in the price index{after}; "
            f"{int(foreign_dates.sum())} such date(s)"
        )
    try:
        values = weights.to_numpy(dtype="float64")
    except (TypeError, ValueError) as exc:
        raise StrategyOutputError(f"{where} has non-numeric weights: {exc}") from exc
    bad_cells = ~np.isfinite(values)
    if bad_cells.any():
        rows, cols = np.nonzero(bad_cells)
        raise StrategyOutputError(
            f"{where} has non-finite weight {float(values[rows[0], cols[0]])!r} for ticker "
            f"{columns[cols[0]]!r} on {weights.index[rows[0]].date().isoformat()}; "
            f"{int(bad_cells.sum())} such cell(s)"
        )
    return pd.DataFrame(values, index=weights.index, columns=pd.Index(columns))


def sample_weights(weights: pd.DataFrame, dates: pd.DatetimeIndex) -> pd.DataFrame:
    """Last weight row at or before each of ``dates``; dates before the first weight row dropped."""
    dates = dates[dates >= weights.index[0]]
    return weights.reindex(dates, method="ffill")


def net_returns(gross, costs):
    """A sleeve's net return from its gross return and its cost drag of the same day: ``g - c``."""
    return gross - costs


def gross_returns(net, costs):
    """The exact inverse of ``net_returns``: the return the sleeve would have earned without its costs."""
    return net + costs


def check_gross(targets: pd.DataFrame, max_gross: float, sleeve: str) -> None:
    """StrategyOutputError naming the first traded target whose gross exposure (sum of absolute
    weights) is above ``max_gross``, and how many there are."""
    gross = np.abs(targets.to_numpy(dtype="float64")).sum(axis=1)
    over = np.flatnonzero(gross > max_gross * (1.0 + 1e-12))
    if len(over):
        k = int(over[0])
        raise StrategyOutputError(
            f"sleeve {sleeve!r}: target gross exposure {gross[k]:.6g} on {targets.index[k].date().isoformat()} "
            f"is above its max_gross {max_gross:g} ({len(over)} such rebalance(s)); lower the leverage or "
            "raise max_gross in the registry"
        )


def check_solvent(sim: SimulationResult, sleeve: str) -> None:
    """SleeveBankruptError on the first day the sleeve's NAV, ``prod(1 + r)``, is zero or below: a
    book that has lost its capital is stopped there, it never "comes back" from a negative NAV."""
    returns = sim.returns.to_numpy()
    broke = np.flatnonzero(np.isfinite(returns) & (1.0 + returns <= 0.0))  # NaN before live; inf: the record check
    if len(broke):
        k = int(broke[0])
        gross = float(np.abs(sim.weights.iloc[k].to_numpy()).sum())
        raise SleeveBankruptError(
            f"sleeve {sleeve!r}: NAV <= 0 on {sim.returns.index[k].date().isoformat()} "
            f"(return {returns[k]:.4g} on a gross exposure of {gross:.4g}); the sleeve has lost its capital"
        )


def _trade_rates(cost_bps: float | pd.Series, tickers: pd.Index) -> np.ndarray:
    """One-way cost per unit traded (decimal) of each ticker: one rate, or a per-ticker Series."""
    if isinstance(cost_bps, pd.Series):
        missing = [t for t in tickers if t not in cost_bps.index]
        if missing:
            raise StrategyOutputError(f"simulate: no cost_bps for ticker(s) {missing[:5]}")
        rates_bps = cost_bps.reindex(tickers).to_numpy(dtype="float64")
    else:
        rates_bps = np.full(len(tickers), float(cost_bps))
    bad = ~np.isfinite(rates_bps) | (rates_bps < 0)
    if bad.any():
        raise StrategyOutputError(f"simulate: cost_bps of {tickers[int(np.argmax(bad))]!r} must be a finite "
                                  f"number >= 0, got {rates_bps[int(np.argmax(bad))]!r}")
    return rates_bps / 1e4


def simulate(target_weights: pd.DataFrame, asset_returns: pd.DataFrame, cost_bps: float | pd.Series,
             risk_free_rate: float = 0.0, cost_model: CostModel | None = None) -> SimulationResult:
    """Simulate drifting holdings of ``target_weights`` (rebalance date x ticker) on ``asset_returns``.

    ``asset_returns`` is ``prices.asset_returns(prices)`` (dates = price dates minus the first).
    Targets for tickers missing from ``target_weights`` are 0. ``risk_free_rate`` (annual, converted
    by ``rates.daily_rate``) is what the cash earns. ``cost_bps``: one-way cost per unit traded, one
    number or a per-ticker Series. ``cost_model``: its borrow fees and funding spread are the holding
    costs (``None`` = none). See the module docstring.
    """
    rf_d = rates.daily_rate(risk_free_rate)
    rets = asset_returns
    days = rets.index
    n_days, n_assets = rets.shape
    foreign = [c for c in target_weights.columns if c not in set(rets.columns)]
    if foreign:
        raise StrategyOutputError(f"simulate: target weights for ticker(s) {foreign!r} with no returns")
    targets = target_weights.reindex(columns=rets.columns, fill_value=0.0).astype("float64")
    if not np.isfinite(targets.to_numpy()).all():
        raise StrategyOutputError("simulate: target weights must be finite (validate_target_weights first)")
    if not targets.index.is_monotonic_increasing or targets.index.has_duplicates:
        raise StrategyOutputError("simulate: target weight dates must be sorted and unique")
    # first day each target earns: the first return date strictly after the decision date
    starts = days.searchsorted(targets.index, side="right")
    keep = starts < n_days
    targets, starts = targets[keep], starts[keep]
    if len(starts) and np.any(np.diff(starts) == 0):
        k = int(np.flatnonzero(np.diff(starts) == 0)[0])
        raise StrategyOutputError(
            f"simulate: targets dated {targets.index[k].date()} and {targets.index[k + 1].date()} "
            "would both first trade on the same day (dates before the first return date?)"
        )

    r = rets.to_numpy(dtype="float64")
    weights_out = np.zeros((n_days, n_assets))
    gross = np.full(n_days, np.nan)
    costs = np.zeros(n_days)
    turnover = np.zeros(len(starts))
    if len(starts):
        w0 = targets.to_numpy()
        cash0 = 1.0 - w0.sum(axis=1)
        # wealth[j] = prod_{u < j} (1 + R[u]); wealth[0] = 1
        wealth = np.vstack([np.ones((1, n_assets)), np.cumprod(1.0 + r, axis=0)])
        live = np.arange(starts[0], n_days)
        seg = np.searchsorted(starts, live, side="right") - 1  # segment of each live day
        base = wealth[starts[seg]]  # wealth at the segment's first open
        open_val = w0[seg] * (wealth[live] / base)
        close_val = w0[seg] * (wealth[live + 1] / base)
        days_in = (live - starts[seg]).astype(float)  # whole days of cash interest before today
        cash_open = cash0[seg] * (1.0 + rf_d) ** days_in
        v_open = open_val.sum(axis=1) + cash_open
        v_close = close_val.sum(axis=1) + cash_open * (1.0 + rf_d)
        weights_out[live] = open_val / v_open[:, None]
        gross[live] = v_close / v_open - 1.0
        # drifted weights at the close before each rebalance (all cash before the first one)
        drifted = np.zeros_like(w0)
        prev = starts[1:] - 1
        drifted[1:] = close_val[prev - starts[0]] / v_close[prev - starts[0], None]
        trades = np.abs(w0 - drifted)
        turnover = trades.sum(axis=1)
        costs[starts] = trades @ _trade_rates(cost_bps, rets.columns)
        if cost_model is not None and cost_model.has_holding_costs:
            costs[live] += holding_cost(weights_out[live], cost_model.borrow_daily(rets.columns),
                                        cost_model.funding_daily)

    return SimulationResult(
        returns=pd.Series(net_returns(gross, costs), index=days, name="returns"),
        weights=pd.DataFrame(weights_out, index=days, columns=rets.columns),
        costs=pd.Series(costs, index=days, name="costs"),
        turnover=pd.Series(turnover, index=targets.index, name="turnover"),
    )


def run_sleeve(profile: SleeveProfile, prices: pd.DataFrame, risk_free_rate: float | None = None,
               cost_model: CostModel | None = None) -> dict[str, Any]:
    """Run one sleeve end to end and return its success record (see ARCHITECTURE.md). Raises on failure.

    ``risk_free_rate`` (annual; ``None`` = the project's, ``rates.py``) is what the sleeve's cash earns.
    The sleeve trades at its registry ``cost_bps`` on every asset (omitted: each asset's half-spread)
    and pays the holding costs (borrow, funding) of ``cost_model`` (``None`` = the project's,
    ``costs.load_cost_model()``).
    """
    t0 = time.perf_counter()
    rf = rates.resolve(risk_free_rate)
    universe = validate_universe(profile, prices)
    fn = resolve_strategy(profile.strategy)
    sub = prices.loc[:, list(universe)]
    raw = fn(sub, **profile.params)
    weights = validate_target_weights(raw, sub, universe, profile.name)
    sampled = sample_weights(weights, rebalance_dates(sub.index, profile.rebalance))
    check_gross(sampled, profile.max_gross, profile.name)
    model = load_cost_model() if cost_model is None else cost_model
    rate = profile.cost_bps if profile.cost_bps is not None else pd.Series(
        model.half_spreads(sub.columns) * 1e4, index=sub.columns)  # no registry rate: the assets' own
    sim = simulate(sampled, asset_returns(sub), rate, rf, model)
    check_solvent(sim, profile.name)
    live = sim.returns.dropna()
    if live.empty:
        raise StrategyOutputError(
            f"sleeve {profile.name!r}: never takes a position (first weight row "
            f"{weights.index[0].date().isoformat()}, last price date {sub.index[-1].date().isoformat()})"
        )
    return {
        "sleeve": profile.name,
        "status": "success",
        "error": None,
        "error_type": None,
        "returns": sim.returns.rename(profile.name),
        "weights": sim.weights,
        "costs": sim.costs.rename(profile.name),
        "turnover": sim.turnover.rename(profile.name),
        "runtime_s": time.perf_counter() - t0,
        "start": live.index[0].date().isoformat(),
        "end": live.index[-1].date().isoformat(),
    }


def error_record(profile_name: str, exc: BaseException, runtime_s: float) -> dict[str, Any]:
    """The error-shaped sleeve record: same keys as a success record, frames ``None``."""
    return {
        "sleeve": profile_name,
        "status": "error",
        "error": f"{type(exc).__name__}: {exc}",
        "error_type": type(exc).__name__,
        "returns": None,
        "weights": None,
        "costs": None,
        "turnover": None,
        "runtime_s": float(runtime_s),
        "start": None,
        "end": None,
    }
