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

Point in time (``prices.py``): an asset return is NaN before a ticker's second price and after its
last one. A target may only hold tickers tradable on its date (price present), else
``StrategyOutputError`` names the sleeve, the ticker and the date; a target the engine carries
forward from the strategy's last row to a later rebalance date keeps only the tickers still
tradable then (a ticker that delisted in between stays in cash, as its delisting left it), and a
target decided on a ticker's last price day (nothing left to earn there) holds cash instead. A NaN
return of a ticker the sleeve does not hold contributes nothing. A position held when its ticker
delists is closed at the last price into cash, which earns ``rf_d`` from the next day (the asset's
return after its last price is ``rf_d`` and its value is reported as cash, all in the same closed
form); the close is a cash-out, not a trade, so it has no turnover and no cost. Each such close is
listed in ``SimulationResult.delistings`` (and the sleeve record's ``delistings``).

Look-ahead: a plug-in strategy runs once more on the prices without their last days and must decide
the same targets for the dates both runs share (``sleeves/lookahead.py``); the outcome is the
record's ``lookahead`` (a suspect is reported, named, not failed: it is for a person to judge).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from quant_meta_assets import rates
from quant_meta_assets.costs.cost_model import CostModel, load_cost_model
from quant_meta_assets.costs.financing import holding_cost
from quant_meta_assets.errors import PriceDataError, SleeveBankruptError, StrategyOutputError
from quant_meta_assets.prices import asset_returns, period_ends
from quant_meta_assets.sleeves.lookahead import check_prefix_invariance
from quant_meta_assets.sleeves.registry import SleeveProfile, is_plugin, resolve_strategy, validate_universe

__all__ = [
    "Carry",
    "SimulationResult",
    "check_gross",
    "check_solvent",
    "check_tradable",
    "error_record",
    "gross_returns",
    "net_returns",
    "rebalance_dates",
    "run_sleeve",
    "sample_weights",
    "simulate",
    "success_record",
    "untradable_to_cash",
    "validate_target_weights",
]


@dataclass(frozen=True)
class SimulationResult:
    """``returns``: daily net returns (NaN before live); ``weights``: start-of-day held weights
    (zero rows before live); ``costs``: daily cost drag; ``turnover``: per rebalance date;
    ``delistings``: each position closed into cash because its ticker delisted (ticker, last price
    date, the weight closed at that close)."""

    returns: pd.Series
    weights: pd.DataFrame
    costs: pd.Series
    turnover: pd.Series
    delistings: tuple[dict, ...] = ()
    carry_out: Carry | None = None  # the open segment at the close of the last day (resume state)


@dataclass(frozen=True)
class Carry:
    """The segment that is open at the close of a day: what a daily fold needs to continue it.

    ``target``: the segment's target weights (one per asset, in the returns' column order) and
    ``cash0 = 1 - sum(target)``; ``growth``: each asset's wealth since the segment's first open,
    up to that close (``G``, the closed form's ratio); ``cash_days``: whole days of cash interest
    at the next open. ``close_weights`` are the weights at that close (positions of tickers
    delisted by then included, as their value; the next run reports them as cash).
    A carried segment is not a trade: it has no turnover and no cost.
    """

    target: np.ndarray
    growth: np.ndarray
    cash0: float
    cash_days: int
    close_weights: np.ndarray


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
    dup_cols = sorted(c for c, n in Counter(columns).items() if n > 1)
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
    out = pd.DataFrame(values, index=weights.index, columns=pd.Index(columns))
    check_tradable(out, prices, sleeve)
    return out


def check_tradable(targets: pd.DataFrame, prices: pd.DataFrame, sleeve: str) -> None:
    """StrategyOutputError naming the first (sleeve, ticker, date) whose target weight is non-zero
    while the ticker has no price that day (not listed yet, or delisted)."""
    listed = prices.reindex(index=targets.index, columns=targets.columns).notna().to_numpy()
    bad = (targets.to_numpy() != 0.0) & ~listed
    if bad.any():
        rows, cols = np.nonzero(bad)
        k = int(np.lexsort((cols, rows))[0])
        ticker, day = targets.columns[cols[k]], targets.index[rows[k]]
        life = prices[ticker].dropna().index
        when = ("before it lists" if len(life) and day < life[0] else
                "after it delisted" if len(life) else "and it has no price at all")
        raise StrategyOutputError(
            f"sleeve {sleeve!r}: target weight {targets.iat[rows[k], cols[k]]:.6g} on ticker {ticker!r} on "
            f"{day.date().isoformat()}, when it is not tradable (no price: {when}"
            + (f"; listed {life[0].date().isoformat()}..{life[-1].date().isoformat()}" if len(life) else "")
            + f"); {int(bad.sum())} such cell(s)"
        )


def untradable_to_cash(targets: pd.DataFrame, prices: pd.DataFrame) -> pd.DataFrame:
    """Targets carried forward by ``sample_weights`` with every ticker that has no price on the
    rebalance date set to 0 (it delisted after the strategy's row: the engine never re-buys it)."""
    listed = prices.reindex(index=targets.index, columns=targets.columns).notna().to_numpy()
    if listed.all():
        return targets
    return targets.where(listed, 0.0)


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
             risk_free_rate: float = 0.0, cost_model: CostModel | None = None,
             carry: Carry | None = None) -> SimulationResult:
    """Simulate drifting holdings of ``target_weights`` (rebalance date x ticker) on ``asset_returns``.

    ``asset_returns`` is ``prices.asset_returns(prices)`` (dates = price dates minus the first).
    Targets for tickers missing from ``target_weights`` are 0. ``risk_free_rate`` (annual, converted
    by ``rates.daily_rate``) is what the cash earns. ``cost_bps``: one-way cost per unit traded, one
    number or a per-ticker Series. ``cost_model``: its borrow fees and funding spread are the holding
    costs (``None`` = none). ``carry``: the segment open at the close before the first return
    day (an incremental update, ``incremental/resume.py``); it holds from day 0 until the first
    target trades, and the first target's turnover is measured against its close weights
    (delisted tickers' positions as cash). See the module docstring.
    """
    rf_d = rates.daily_rate(risk_free_rate)
    rets = asset_returns
    days = rets.index
    n_days, n_assets = rets.shape
    known = set(rets.columns)  # once: a set per column made this O(tickers^2) (0.27 s at 500 tickers)
    foreign = [c for c in target_weights.columns if c not in known]
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
    # point in time: returns are NaN before a ticker's second price and after its last one
    gone_open = gone_close = None  # (day x asset): the position is cash at that open / close
    last = np.full(n_assets, n_days - 1)
    missing = np.isnan(r)
    if missing.any():
        r, first, last = _point_in_time(r, missing, rf_d, rets)
        rows = np.arange(n_days)[:, None]
        gone_open = rows > last  # closed into cash at the close of `last` (its last price)
        gone_close = (rows >= last) & (last < n_days - 1)
        if carry is not None:  # no price after the carried close: it delisted at (or before) it
            first = np.where(first >= n_days, -1, first)
        early = np.asarray(targets.to_numpy() != 0.0) & (starts[:, None] < first[None, :])
        if early.any():
            k, j = (int(v) for v in np.argwhere(early)[0])
            raise StrategyOutputError(
                f"simulate: target dated {targets.index[k].date()} holds {rets.columns[j]!r} before its "
                "first return (not listed yet)"
            )
        # a target decided on a ticker's last price earns nothing there: it is cash, never bought (the
        # position held into that close is cashed out by the delisting, not traded)
        targets = targets.mask(starts[:, None] > last[None, :], 0.0)
    weights_out = np.zeros((n_days, n_assets))
    delistings: tuple[dict, ...] = ()
    gross = np.full(n_days, np.nan)
    costs = np.zeros(n_days)
    turnover = np.zeros(len(starts))
    carry_out = None
    if carry is not None and (carry.target.shape != (n_assets,) or carry.growth.shape != (n_assets,)
                              or carry.close_weights.shape != (n_assets,)):
        raise StrategyOutputError(f"simulate: the carried segment has {carry.target.shape} weights for "
                                  f"{n_assets} assets")
    if len(starts) or (carry is not None and n_days):
        w0 = targets.to_numpy()
        cash0 = 1.0 - w0.sum(axis=1)
        # wealth[j] = prod_{u < j} (1 + R[u]); wealth[0] = 1
        wealth = np.vstack([np.ones((1, n_assets)), np.cumprod(1.0 + r, axis=0)])
        seg_start = starts.astype(np.int64)
        base_rows = wealth[starts]  # wealth at each segment's first open
        if carry is not None:  # segment 0 is the carried one: open since -cash_days, grown by `growth`
            w0 = np.vstack([carry.target[None, :], w0])
            cash0 = np.concatenate([[carry.cash0], cash0])
            seg_start = np.concatenate([[-int(carry.cash_days)], seg_start])
            base_rows = np.vstack([1.0 / carry.growth[None, :], base_rows])
            live_from = 0
        else:
            live_from = int(starts[0])
        live = np.arange(live_from, n_days)
        seg = np.searchsorted(seg_start, live, side="right") - 1  # segment of each live day
        base = base_rows[seg]
        open_val = w0[seg] * (wealth[live] / base)
        close_val = w0[seg] * (wealth[live + 1] / base)
        days_in = (live - seg_start[seg]).astype(float)  # whole days of cash interest before today
        cash_open = cash0[seg] * (1.0 + rf_d) ** days_in
        v_open = open_val.sum(axis=1) + cash_open
        v_close = close_val.sum(axis=1) + cash_open * (1.0 + rf_d)
        k_last = int(seg[-1])
        carry_out = Carry(target=w0[k_last].copy(), growth=wealth[n_days] / base_rows[k_last],
                          cash0=float(cash0[k_last]), cash_days=int(n_days - seg_start[k_last]),
                          close_weights=close_val[-1] / v_close[-1])
        if gone_open is not None:  # a delisted position is cash: same value, no asset weight
            delistings = _delistings(close_val, v_close, last, live_from, days, rets.columns)
            open_val = np.where(gone_open[live], 0.0, open_val)
            close_val = np.where(gone_close[live], 0.0, close_val)
        weights_out[live] = open_val / v_open[:, None]
        gross[live] = v_close / v_open - 1.0
        # drifted weights at the close before each rebalance (all cash before the first one, or the
        # carried segment's close weights when it starts on day 0)
        drifted = np.zeros((len(starts), n_assets))
        prev = starts - 1
        inside = prev >= live_from
        drifted[inside] = close_val[prev[inside] - live_from] / v_close[prev[inside] - live_from, None]
        if carry is not None:
            drifted[prev < 0] = carry.close_weights
        trades = np.abs(targets.to_numpy() - drifted)
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
        delistings=delistings,
        carry_out=carry_out,
    )


def _point_in_time(r: np.ndarray, missing: np.ndarray, rf_d: float, rets: pd.DataFrame):
    """Asset returns made finite for the closed form: 0 before a ticker's first return (it cannot
    be held), ``rf_d`` after its last one (a position there is cash); a NaN between its first and
    last return is a gap in its prices (``PriceDataError`` naming ticker and date)."""
    n_days = r.shape[0]
    present = ~missing
    listed = present.any(axis=0)
    first = np.where(listed, np.argmax(present, axis=0), n_days)
    last = np.where(listed, n_days - 1 - np.argmax(present[::-1], axis=0), -1)
    rows = np.arange(n_days)[:, None]
    gap = missing & (rows >= first) & (rows <= last)
    if gap.any():
        i, j = (int(v) for v in np.argwhere(gap)[0])
        raise PriceDataError(
            f"simulate: ticker {rets.columns[j]!r} has no return on {rets.index[i].date()} inside its listed "
            "life (a gap in its prices)"
        )
    return np.where(rows > last, rf_d, np.where(missing, 0.0, r)), first, last


def _delistings(close_val: np.ndarray, v_close: np.ndarray, last: np.ndarray, live_from: int,
                days: pd.DatetimeIndex, tickers) -> tuple[dict, ...]:
    """Each position held into its ticker's last price: the weight closed into cash at that close
    (``close_val`` / ``v_close``: the live days' closing values, row 0 = day ``live_from``)."""
    out = []
    for j in np.flatnonzero((last < len(days) - 1) & (last >= live_from)):
        row = int(last[j]) - live_from
        weight = float(close_val[row, j] / v_close[row])
        if weight != 0.0:
            out.append({"ticker": str(tickers[j]), "last_price_date": days[int(last[j])].date().isoformat(),
                        "weight": weight})
    return tuple(out)


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
    lookahead = None
    if is_plugin(profile.strategy) and profile.check_lookahead:  # built-ins: proven by the tests
        lookahead = check_prefix_invariance(
            fn, sub, profile.params, weights, strategy=profile.strategy, sleeve=profile.name,
            validate=lambda out, window: validate_target_weights(out, window, universe, profile.name),
        ).as_record()
    sampled = untradable_to_cash(sample_weights(weights, rebalance_dates(sub.index, profile.rebalance)), sub)
    check_gross(sampled, profile.max_gross, profile.name)
    model = load_cost_model() if cost_model is None else cost_model
    rate = profile.cost_bps if profile.cost_bps is not None else pd.Series(
        model.half_spreads(sub.columns) * 1e4, index=sub.columns)  # no registry rate: the assets' own
    sim = simulate(sampled, asset_returns(sub), rate, rf, model)
    check_solvent(sim, profile.name)
    from quant_meta_assets.incremental.resume import NotExactError, resume_state, strategy_warmup

    try:
        warmup = strategy_warmup(fn, profile.params)
    except NotExactError:
        warmup = None  # a broken declaration: the plan recomputes this sleeve in full and says why
    state = resume_state(sub, weights, sim, warmup)
    live = sim.returns.dropna()
    if live.empty:
        raise StrategyOutputError(
            f"sleeve {profile.name!r}: never takes a position (first weight row "
            f"{weights.index[0].date().isoformat()}, last price date {sub.index[-1].date().isoformat()})"
        )
    return success_record(
        profile.name, sim, t0,
        start=live.index[0].date().isoformat(),
        end=live.index[-1].date().isoformat(),
        delistings=[dict(d) for d in sim.delistings],
        lookahead=lookahead,
        resume_state=state,  # what an incremental update continues from (incremental/resume.py)
    )


def success_record(profile_name: str, sim: SimulationResult, t0: float, **extra: Any) -> dict[str, Any]:
    """The success-shaped sleeve record of a full run (``run_sleeve``) and of an incremental update
    (``incremental.resume.run_sleeve_update``): status, the simulation's frames named after the
    sleeve and the runtime since ``t0`` (``time.perf_counter()``), then ``extra`` in its order
    (what differs between the two: dates, delistings, look-ahead, resume state, ``update_of``)."""
    return {
        "sleeve": profile_name,
        "status": "success",
        "error": None,
        "error_type": None,
        "returns": sim.returns.rename(profile_name),
        "weights": sim.weights,
        "costs": sim.costs.rename(profile_name),
        "turnover": sim.turnover.rename(profile_name),
        "runtime_s": time.perf_counter() - t0,
        **extra,
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
        "delistings": None,
        "lookahead": None,
        "resume_state": None,
    }
