"""Meta-level costs, two ways, and what running the sleeves in one book saves.

Every trade and position is priced by ONE cost model (``costs/cost_model.py``): a trade's cost is a
property of the asset and of the rate of the account's trading, never of which view sends it.

**Stand-alone view.** Each sleeve trades in its own account and pays its own costs (its net
return ``r_s``: its registry ``cost_bps`` on every asset it trades plus its holding costs; the
sub-account shares drift with those net returns); on top of that every meta rebalance trades the assets behind the capital
it moves: on the first day ``t`` the new meta-weights earn,

    Δa_i(t) = Σ_s (m_s^target − m_s^pre(t)) · w^pre_{s,i}(t)

with ``m^pre`` the held meta-weights drifted through the decision date (0 before the first
rebalance: the book starts in cash) and ``w^pre_s`` sleeve s's holdings drifted through the
decision date (before its own trade of that day). The meta pays ``Σ_i h_i |Δa_i|`` (``h_i`` the
asset's half-spread); its return is ``Σ_s m_s r_s − cost_meta`` with ``m`` drifting with the
sleeves' net returns.

**Netted book.** One account holds ``a(t) = Σ_s m_s(t) w_s(t)`` where the sub-account shares
``m`` drift with the sleeves' GROSS returns (the book pays no sleeve's stand-alone cost; its own
cost is a proportional drag on the whole book, so it does not move the shares). Its net trade of
asset i, ``z_i = a_i(t) − a_i^drifted(t)`` (``a^drifted`` = yesterday's book after one day of asset
returns; 0 on the first day: the initial build is paid), is the sum of its component trades
``t_k``: each sleeve's own trade scaled by its share, ``m_s (w_s,i − w^pre_s,i)`` at the sleeve's
rate, and the meta trade ``Σ_s (m_s − m^pre_s) w^pre_s,i`` at ``h_i``. The book pays each net trade
at the blended rate of the trades it nets,

    ρ_i(t) = Σ_k |t_k| rate_k / Σ_k |t_k|,    trading cost = Σ_i ρ_i |z_i|

(``h_i`` when nothing trades), and the holding cost of its NET positions (``costs/financing.py``).
Return: ``Σ_i a_i R_i + cash − cost_book``.

**Crossing savings** compare the book with the same component trades and holdings un-netted:
``Σ_i ρ_i (Σ_k |t_k| − |Σ_k t_k|)`` in trading (every trade at the same rate in both, so only the
netting counts) plus the holding cost of the sleeves' own positions minus the book's (a short
against a long of another sleeve pays no borrow in the book). Both are >= 0 every day (triangle
inequality; meta-weights >= 0). Conventions: costs are charged on the first day the new weights
earn; volumes and costs are fractions of the book's value at the start of that day.

Everything can be fed sleeve by sleeve (``BookCosts.add``): only the book's asset weights and the
two blended-rate accumulators (date x ticker) and the per-rebalance meta trades are kept, never all
sleeves at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from quant_meta_assets.costs.cost_model import DEFAULT_HALF_SPREAD_BPS, CostModel
from quant_meta_assets.costs.financing import holding_cost
from quant_meta_assets.errors import ReconciliationError, StageInputError
from quant_meta_assets.meta.drift import cash_after_stop, drift_weights, stopped_mask
from quant_meta_assets.meta.flatten import held_meta_weights
from quant_meta_assets.sleeves.engine import gross_returns

__all__ = [
    "DEFAULT_BOOK_COST_BPS",
    "BookCosts",
    "CostViews",
    "cost_views",
    "fold_checks",
    "fold_cost_views",
]

DEFAULT_BOOK_COST_BPS = DEFAULT_HALF_SPREAD_BPS
"""The default half-spread of an asset (one-way bps) when the cost model lists none for it."""

PERIODS_PER_YEAR = 252

DAILY_COLUMNS = [
    "netted_return", "standalone_return",
    "book_volume", "book_trading_cost", "book_holding_cost", "book_cost",
    "standalone_sleeve_volume", "standalone_meta_volume", "standalone_volume",
    "standalone_sleeve_cost", "standalone_meta_cost", "standalone_cost",
    "unnetted_book_volume", "unnetted_book_cost",
    "savings_volume", "savings_cost", "savings_cost_trading", "savings_cost_holding",
]
CHECK_COLUMNS = ["check", "description", "max_abs_diff", "where", "tolerance", "passed"]


def _one_day_drift(weights: np.ndarray, returns: np.ndarray, cash_return: np.ndarray) -> np.ndarray:
    """Weights (rows) after one day of ``returns``; the rest ``1 - Σw`` is cash earning ``cash_return``."""
    cash = 1.0 - weights.sum(axis=1)
    value = 1.0 + (weights * returns).sum(axis=1) + cash * cash_return
    return weights * (1.0 + returns) / value[:, None]


def _check(name: str, description: str, diff, index, tolerance: float) -> dict:
    """Largest |diff| over the days (NaN fails) and the day it occurs on."""
    values = np.abs(np.asarray(diff, dtype=float))
    row = {"check": name, "description": description, "tolerance": float(tolerance)}
    if values.size == 0:
        return {**row, "max_abs_diff": 0.0, "where": "(no rows)", "passed": True}
    nan = np.isnan(values)
    if nan.any():
        pos = int(np.argmax(nan))
        return {**row, "max_abs_diff": float("nan"), "where": f"{index[pos].date()} (NaN)", "passed": False}
    pos = int(np.argmax(values))
    return {**row, "max_abs_diff": float(values[pos]), "where": str(index[pos].date()),
            "passed": bool(values[pos] <= tolerance)}


@dataclass(frozen=True)
class CostViews:
    """Both cost views on the meta's live days and their reconciliations.

    ``daily``: one row per live day, ``DAILY_COLUMNS`` (returns, volumes and costs as fractions of
    the book at the start of the day). ``book_weights``: the netted book's start-of-day asset
    weights. ``checks``: the reconciliations, one row each (``CHECK_COLUMNS``).
    ``sleeve_totals``: each sleeve's own two-sided asset turnover, cost drag per year on the
    same days (what it trades and pays in its own account) and its trading rate in bps.
    ``book_trades``: the book's signed net trade per asset and day (date x ticker, for capacity).
    ``cost_bps``: the default half-spread; ``cost_model``: the model every trade was priced with.
    ``sleeve_sums``: the sums behind ``sleeve_totals`` (sleeve x [trade, cost, rate_bps]: its own
    two-sided trade without the initial build, its own cost), which a later update adds to
    (``fold_cost_views``). A folded view keeps no ``book_weights`` or ``book_trades`` (its
    reconciliations ran on the new days, when they were built).
    """

    daily: pd.DataFrame
    book_weights: pd.DataFrame | None
    cost_bps: float
    checks: pd.DataFrame
    sleeve_totals: pd.DataFrame  # sleeve x [asset_turnover, cost_drag, rate_bps]: own trades, annualised
    book_trades: pd.DataFrame | None = None
    cost_model: CostModel | None = None
    sleeve_sums: pd.DataFrame | None = None

    @property
    def reconciled(self) -> bool:
        return bool(self.checks["passed"].all())

    def raise_if_failed(self) -> None:
        failed = self.checks[~self.checks["passed"]]
        if len(failed):
            raise ReconciliationError(
                "cost reconciliation failed — " + "; ".join(
                    f"{r.check}: max |diff| = {r.max_abs_diff:.3e} > {r.tolerance:.1e} at {r.where}"
                    for r in failed.itertuples()))

    def yearly(self) -> pd.DataFrame:
        """Per calendar year: summed volumes and costs (a full year's sum is its annual figure),
        and the year's savings in bps of book value (``savings_bps``)."""
        out = _sums(self.daily, self.daily.index.year.rename("year"))
        out["savings_bps"] = out["savings_cost"] * 1e4
        return out

    def totals(self) -> pd.Series:
        """The whole live period: summed volumes and costs (initial build included), annualised
        turnover of both views (sum / years, without the first live day's initial build) and the
        savings in annualised bps (sum / years x 1e4)."""
        out = _sums(self.daily, np.zeros(len(self.daily), dtype=int)).iloc[0].rename("total")
        years = len(self.daily) / PERIODS_PER_YEAR
        for col in ("savings_cost", "savings_cost_trading", "savings_cost_holding"):
            out[col.replace("savings_cost", "savings_bps_per_year")] = out[col] / years * 1e4
        first = self.daily.iloc[0]  # the initial build is a cost, not turnover (the report's turnover rule)
        out["standalone_turnover"] = (out["standalone_volume"] - first["standalone_volume"]) / years
        out["book_turnover"] = (out["book_volume"] - first["book_volume"]) / years
        out["standalone_cost_bps_per_year"] = out["standalone_cost"] / years * 1e4
        out["book_cost_bps_per_year"] = out["book_cost"] / years * 1e4
        out["unnetted_cost_bps_per_year"] = out["unnetted_book_cost"] / years * 1e4
        out["crossed_fraction"] = out["savings_volume"] / out["unnetted_book_volume"] if out["unnetted_book_volume"] else 0.0
        return out


def _sums(daily: pd.DataFrame, by) -> pd.DataFrame:
    grouped = daily.groupby(by)
    sums = grouped[["standalone_volume", "book_volume", "unnetted_book_volume", "savings_volume",
                    "standalone_cost", "book_cost", "unnetted_book_cost", "savings_cost", "savings_cost_trading",
                    "savings_cost_holding"]].sum()
    return sums.assign(days=grouped.size())


class BookCosts:
    """Accumulates both cost views sleeve by sleeve; ``result()`` finishes and reconciles.

    The constructor takes what is small (date x sleeve frames, the meta targets and the asset
    returns); ``add(sleeve, weights)`` takes one sleeve's start-of-day held weights (date x
    ticker, as the sleeve engine records them) at a time, in any order, each sleeve once.
    ``cost_model`` prices every trade and position (``None`` = ``CostModel`` with ``cost_bps`` as
    the default half-spread; both given = the model with that default). Each sleeve's trading rates
    are read back from its own cost series (``_sleeve_rates``) and checked daily; ``sleeve_rates``
    (sleeve -> bps, NaN = per-ticker half-spreads) fixes them to those an earlier run read back.

    ``emit_from``: the views of a trailing window (an incremental update, ``report.incremental``).
    The inputs then start at a meta rebalance's decision date ``d0``, so the shares held from it on
    are those of the full history; the rows before ``emit_from`` (from ``d0``'s first earning day,
    whose meta trade and book build are priced from cash here) only carry the book and the
    sleeves' holdings forward and are dropped from the result, its sums and its checks.
    """

    def __init__(
        self,
        *,
        meta_weights: pd.DataFrame,
        sleeve_returns: pd.DataFrame,
        sleeve_costs: pd.DataFrame,
        asset_returns: pd.DataFrame,
        cost_bps: float | None = None,
        cash_return: float | pd.Series = 0.0,
        tolerance: float = 1e-10,
        cost_model: CostModel | None = None,
        emit_from: pd.Timestamp | None = None,
        sleeve_rates: Mapping[str, float] | None = None,
    ) -> None:
        if cost_bps is not None and (not np.isfinite(cost_bps) or cost_bps < 0):
            raise StageInputError(f"book cost_bps (the default half-spread) must be a finite number >= 0, "
                                  f"got {cost_bps!r}")
        if cost_model is None:
            cost_model = CostModel(default_half_spread_bps=DEFAULT_BOOK_COST_BPS if cost_bps is None else cost_bps)
        elif cost_bps is not None:
            cost_model = cost_model.with_default_half_spread(cost_bps)
        self.model = cost_model
        self.cost_bps = float(cost_model.default_half_spread_bps)
        self.tolerance = float(tolerance)
        self.sleeves = [str(s) for s in meta_weights.columns]
        missing = [s for s in self.sleeves if s not in sleeve_returns.columns]
        if missing:
            raise StageInputError(f"cost views: meta-weights name sleeves without returns: {missing}")
        net = sleeve_returns.loc[:, self.sleeves].astype(float)
        costs = sleeve_costs.reindex(index=net.index, columns=self.sleeves).astype(float)
        no_costs = [s for s in self.sleeves if s not in sleeve_costs.columns]
        if no_costs:
            raise StageInputError(f"cost views need the daily costs of sleeves {no_costs}")
        # a sleeve that stopped is cash earning the cash return, at no cost (meta.drift)
        stopped = stopped_mask(net.to_numpy())
        net = cash_after_stop(net, cash_return)
        costs = costs.mask(stopped, 0.0)
        self.stopped = pd.DataFrame(stopped, index=net.index, columns=self.sleeves)
        self.held_net = held_meta_weights(meta_weights, net, cash_return)  # stand-alone: drift with net returns
        self.live = self.held_net.index
        self.days = net.index[net.index.get_loc(self.live[0]) - 1:]  # decision day before + live days
        self.emit = 0 if emit_from is None else int(self.live.searchsorted(pd.Timestamp(emit_from)))
        if emit_from is not None and (self.emit == 0 or self.emit >= len(self.live)):
            raise StageInputError(f"cost views: emit_from {pd.Timestamp(emit_from).date()} must be a live day after "
                                  f"the first one ({self.live[0].date()}) and not after the last "
                                  f"({self.live[-1].date()}): the window starts at a rebalance before it")
        self.known_rates = {} if sleeve_rates is None else {str(k): float(v) for k, v in sleeve_rates.items()}
        self.held_gross = held_meta_weights(meta_weights, gross_returns(net, costs), cash_return)  # book: gross drift
        # a sleeve not held that day (meta-weight exactly 0 in both views) contributes exactly 0
        self.held = (self.held_net.to_numpy() != 0.0) | (self.held_gross.to_numpy() != 0.0)
        for name, frame in (("return", net), ("cost", costs)):
            values = frame.loc[self.live].to_numpy()
            bad = self.held & ~np.isfinite(values)
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise StageInputError(f"cost views: sleeve {self.sleeves[col]!r} is held but its {name} on "
                                      f"{self.live[row].date()} is {values[row, col]}")
        self.net = net.loc[self.live].where(self.held, 0.0)
        self.costs = costs.loc[self.live].where(self.held, 0.0)
        self.gross = gross_returns(self.net, self.costs)

        pos = asset_returns.index.get_indexer(self.days)
        if (pos < 0).any() or np.any(np.diff(pos) != 1):
            raise StageInputError("cost views: the sleeve-return days must be consecutive rows of the "
                                  "asset returns (same price calendar)")
        self.tickers = [str(c) for c in asset_returns.columns]
        self.h = cost_model.half_spreads(self.tickers)  # the meta trade's rate per asset
        self.borrow = cost_model.borrow_daily(self.tickers)
        self.funding = cost_model.funding_daily
        self.R = asset_returns.iloc[pos].to_numpy(dtype=float)  # row 0 = the day before the first live day
        if np.isinf(self.R).any():
            raise StageInputError("cost views: asset returns must be finite on the meta's live days")
        # point in time: no return before a ticker lists or after it delists; nothing may hold it then
        self.no_return = np.isnan(self.R)
        self.R = np.where(self.no_return, 0.0, self.R)
        if isinstance(cash_return, pd.Series):
            self.rf = cash_return.reindex(self.days).to_numpy(dtype=float)
        else:
            self.rf = np.full(len(self.days), float(cash_return))
        if not np.isfinite(self.rf).all():
            raise StageInputError("cost views: the cash return must be finite on every live day")

        # meta rebalances that earn: first earning row (in `live`) and the drifted pre-trade shares
        live_pos = {d: i for i, d in enumerate(self.live)}
        nxt = {d: self.live[i + 1] for i, d in enumerate(self.live[:-1])}
        nxt[self.days[0]] = self.live[0]
        targets = meta_weights.loc[[d for d in meta_weights.index if d in nxt]]
        self.rebalance_rows = np.array([live_pos[nxt[d]] for d in targets.index], dtype=int)
        self.delta_m = {}
        for label, held, rets in (("net", self.held_net, self.net), ("gross", self.held_gross, self.gross)):
            pre = np.zeros((len(targets), len(self.sleeves)))  # the first rebalance buys from cash
            h, r = held.to_numpy(), rets.to_numpy()
            for k, row in enumerate(self.rebalance_rows):
                if row > 0:  # shares held at the start of the day before, drifted through it
                    pre[k] = drift_weights(h[row - 1], r[row - 1: row], self.sleeves, [self.live[row - 1]])
            self.delta_m[label] = targets.to_numpy(dtype=float) - pre  # K x sleeves

        n_days, n_assets, k = len(self.live), len(self.tickers), len(self.rebalance_rows)
        self._col = {t: i for i, t in enumerate(self.tickers)}
        self.book = np.zeros((n_days, n_assets))  # netted book a(t), gross-drifted shares
        self.standalone_book = np.zeros((n_days, n_assets))  # same, net-drifted shares (flatten's a)
        self.meta_trade = {"net": np.zeros((k, n_assets)), "gross": np.zeros((k, n_assets))}
        self.sleeve_volume = {"net": np.zeros(n_days), "gross": np.zeros(n_days)}
        self.gross_diff = np.zeros(n_days)  # |w_s·R + cash - reconstructed gross|, max over sleeves
        # blended rate: per asset and day, sum_k |t_k| rate_k and sum_k |t_k| over the component trades
        self.rated_volume = np.zeros((n_days, n_assets))
        self.component_volume = np.zeros((n_days, n_assets))
        self.unnetted_holding = np.zeros(n_days)  # sum_s m_s (gross) x sleeve s's own holding cost
        self.sleeve_cost_diff = np.zeros(n_days)  # |own cost - rate x trade - holding|, max over sleeves
        self.added: set[str] = set()
        self.sleeve_trade: dict[str, float] = {}
        self.sleeve_rate: dict[str, float] = {}

    def add(self, sleeve: str, weights: pd.DataFrame) -> None:
        """Fold one sleeve's start-of-day held weights into the book and its trades."""
        sleeve = str(sleeve)
        if sleeve not in self.sleeves:
            raise StageInputError(f"cost views: sleeve {sleeve!r} has no meta-weight")
        if sleeve in self.added:
            raise StageInputError(f"cost views: sleeve {sleeve!r} was added twice")
        foreign = [str(c) for c in weights.columns if str(c) not in self._col]
        if foreign:
            raise StageInputError(f"cost views: sleeve {sleeve!r} holds tickers without returns: {foreign[:5]}")
        j = self.sleeves.index(sleeve)
        held_day = np.concatenate([[False], self.held[:, j]])  # per row of `days`
        needed = held_day | np.concatenate([held_day[1:], [False]])  # held that day or the next
        w = weights.reindex(index=self.days).to_numpy(dtype=float, copy=True)
        w[~needed | self.stopped[sleeve].reindex(self.days).to_numpy()] = 0.0  # stopped: all cash
        if np.isnan(w).any():
            row, col = np.argwhere(np.isnan(w))[0]
            raise StageInputError(f"cost views: sleeve {sleeve!r} has no weight for {weights.columns[col]!r} "
                                  f"on {self.days[row].date()}")
        cols = np.array([self._col[str(c)] for c in weights.columns], dtype=int)
        _check_not_held_without_return(sleeve, w, self.no_return[:, cols], self.days, weights.columns)
        R = self.R[:, cols]
        held, today = w[:-1], w[1:]  # yesterday's start-of-day weights, today's
        # the sleeve's own trade: today's weights minus yesterday's drifted through yesterday
        pre = _one_day_drift(held, R[:-1], self.rf[:-1])
        pre[self.no_return[1:, cols]] = 0.0  # a position whose ticker delisted at yesterday's close is cash
        asset_trade = today - pre
        trade = np.abs(asset_trade).sum(axis=1)
        # the sleeve's own account: one trading rate on every asset (its registry cost_bps) plus the
        # holding cost of its own positions; the rate is read back from its cost series and checked
        own_holding = holding_cost(today, self.borrow[cols], self.funding)
        live_held = held_day[1:]
        trading_cost = self.costs[sleeve].to_numpy() - own_holding
        rate, residual, label = self._sleeve_rates(np.abs(asset_trade), trading_cost, live_held, cols,
                                                   self.known_rates.get(sleeve))
        self.sleeve_rate[sleeve] = label
        self.sleeve_cost_diff = np.maximum(self.sleeve_cost_diff, residual)
        gross_today = (today * R[1:]).sum(axis=1) + (1.0 - today.sum(axis=1)) * self.rf[1:]
        diff = np.where(held_day[1:], gross_today - self.gross[sleeve].to_numpy(), 0.0)
        self.gross_diff = np.maximum(self.gross_diff, np.abs(diff))
        rows = self.rebalance_rows
        for label, held_m in (("net", self.held_net), ("gross", self.held_gross)):
            m = held_m[sleeve].to_numpy()
            self.sleeve_volume[label] += m * trade
            self.meta_trade[label][:, cols] += self.delta_m[label][:, [j]] * pre[rows]
            target = self.book if label == "gross" else self.standalone_book
            target[:, cols] += m[:, None] * today
        m = self.held_gross[sleeve].to_numpy()
        component = np.abs(m[:, None] * asset_trade)
        self.component_volume[:, cols] += component
        self.rated_volume[:, cols] += component * rate[None, :]
        self.unnetted_holding += m * own_holding
        self.sleeve_trade[sleeve] = float(trade[max(self.emit, 1):].sum())  # the turnover rule: no initial build
        self.added.add(sleeve)

    def _sleeve_rates(self, traded: np.ndarray, trading_cost: np.ndarray, held: np.ndarray,
                      cols: np.ndarray, known: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
        """The sleeve's trading rate per asset, read back from its own cost series: one rate on every
        asset (a registry ``cost_bps``), or the cost file's per-ticker half-spreads with one rate for
        the tickers it does not list (a sleeve without ``cost_bps``). The default is fitted as
        Σ cost / Σ volume over the held days; the candidate with the smaller daily residual is kept
        (the residual is checked, ``sleeve_costs_priced``). ``known``: the rate an earlier run read
        back (bps; NaN = per-ticker): only that candidate, the uniform rate fixed to it. Returns
        (rates, |residual| per day, the rate in bps or NaN for per-ticker rates)."""
        listed = np.array([t in self.model.half_spread_bps for t in (self.tickers[c] for c in cols)], dtype=bool)
        best = None
        candidates = (False, True) if listed.any() else (False,)
        if known is not None:
            candidates = (bool(np.isnan(known)) and bool(listed.any()),)
        for per_ticker in candidates:
            fixed = np.where(listed, self.h[cols], 0.0) if per_ticker else np.zeros(len(cols))
            free = ~listed if per_ticker else np.ones(len(cols), dtype=bool)
            rest = trading_cost - traded @ fixed
            volume = traded[:, free].sum(axis=1)
            total = float(volume[held].sum())
            default = float(rest[held].sum() / total) if total > 0 else 0.0
            if known is not None and not np.isnan(known):
                default = known / 1e4
            rates = np.where(free, default, fixed)
            residual = np.abs(np.where(held, trading_cost - traded @ rates, 0.0))
            if best is None or residual.max() < best[1].max():
                best = (rates, residual, float("nan") if per_ticker else default * 1e4)
        return best

    def result(self) -> CostViews:
        """Finish both views and run every reconciliation (see ``CostViews.checks``), on the rows
        from ``emit_from`` (all live days without it)."""
        missing = [s for s in self.sleeves if s not in self.added]
        if missing:
            raise StageInputError(f"cost views: no weights were added for sleeves {missing}")
        R, rf = self.R[1:], self.rf[1:]
        a = self.book
        drifted = np.zeros_like(a)
        drifted[1:] = _one_day_drift(a[:-1], R[:-1], rf[:-1])  # first live day: built from cash
        drifted[self.no_return[1:]] = 0.0  # delisted at yesterday's close: cash, not a trade (as the engine)
        net_trade = a - drifted
        book_volume = np.abs(net_trade).sum(axis=1)
        book_gross = (a * R).sum(axis=1) + (1.0 - a.sum(axis=1)) * rf

        # the meta trades (same-holdings view) are components of the book's trade at h_i
        rows = self.rebalance_rows
        rated, volume = self.rated_volume.copy(), self.component_volume.copy()
        meta_gross = np.abs(self.meta_trade["gross"])
        rated[rows] += meta_gross * self.h
        volume[rows] += meta_gross
        blended = np.where(volume > 0, rated / np.where(volume > 0, volume, 1.0), self.h)
        book_trading = (np.abs(net_trade) * blended).sum(axis=1)
        book_holding = holding_cost(a, self.borrow, self.funding)
        book_cost = book_trading + book_holding
        netted = book_gross - book_cost

        def meta_volume(label: str) -> np.ndarray:
            out = np.zeros(len(self.live))
            out[rows] = np.abs(self.meta_trade[label]).sum(axis=1)
            return out

        sa_meta_volume = meta_volume("net")
        sa_sleeve_cost = (self.held_net * self.costs).sum(axis=1, skipna=False).to_numpy()
        sa_meta_cost = np.zeros(len(self.live))
        sa_meta_cost[rows] = np.abs(self.meta_trade["net"]) @ self.h
        standalone = (self.held_net * self.net).sum(axis=1, skipna=False).to_numpy() - sa_meta_cost
        sa_volume = self.sleeve_volume["net"] + sa_meta_volume
        sa_cost = sa_sleeve_cost + sa_meta_cost
        unnetted_volume = volume.sum(axis=1)
        unnetted_trading = rated.sum(axis=1)
        unnetted_cost = unnetted_trading + self.unnetted_holding
        e = self.emit  # the rows kept (a trailing window's carry-forward rows are dropped)
        live = self.live[e:]
        daily = pd.DataFrame({
            "netted_return": netted, "standalone_return": standalone,
            "book_volume": book_volume, "book_trading_cost": book_trading, "book_holding_cost": book_holding,
            "book_cost": book_cost,
            "standalone_sleeve_volume": self.sleeve_volume["net"], "standalone_meta_volume": sa_meta_volume,
            "standalone_volume": sa_volume,
            "standalone_sleeve_cost": sa_sleeve_cost, "standalone_meta_cost": sa_meta_cost,
            "standalone_cost": sa_cost,
            "unnetted_book_volume": unnetted_volume, "unnetted_book_cost": unnetted_cost,
            "savings_volume": unnetted_volume - book_volume, "savings_cost": unnetted_cost - book_cost,
            "savings_cost_trading": unnetted_trading - book_trading,
            "savings_cost_holding": self.unnetted_holding - book_holding,
        }, index=self.live)[DAILY_COLUMNS].iloc[e:]
        book_weights = pd.DataFrame(a[e:], index=live, columns=self.tickers)
        sums = pd.DataFrame({
            "trade": pd.Series(self.sleeve_trade, dtype=float).reindex(self.sleeves),
            "cost": self.costs.iloc[e:].sum(),
            "rate_bps": pd.Series(self.sleeve_rate, dtype=float).reindex(self.sleeves),  # NaN: per-ticker
        }).rename_axis("sleeve")
        return CostViews(daily=daily, book_weights=book_weights, cost_bps=self.cost_bps,
                         checks=self._checks(daily, R[e:], rf[e:]), sleeve_totals=_sleeve_totals(sums, len(daily)),
                         book_trades=pd.DataFrame(net_trade[e:], index=live, columns=self.tickers),
                         cost_model=self.model, sleeve_sums=sums)

    def _checks(self, daily: pd.DataFrame, R: np.ndarray, rf: np.ndarray) -> pd.DataFrame:
        """Each identity recomputed along a second path (sleeves vs assets), daily (emitted rows)."""
        tol, idx, e = self.tolerance, daily.index, self.emit
        held_gross, held_net, gross = self.held_gross.iloc[e:], self.held_net.iloc[e:], self.gross.iloc[e:]
        sleeve_path_book = (held_gross * gross).sum(axis=1, skipna=False).to_numpy()
        b = self.standalone_book[e:]
        asset_path_sa = ((b * R).sum(axis=1) + (1.0 - b.sum(axis=1)) * rf
                         - daily["standalone_sleeve_cost"].to_numpy() - daily["standalone_meta_cost"].to_numpy())
        sa_cost_read_back = (held_net * gross).sum(axis=1, skipna=False).to_numpy() \
            - daily["standalone_return"].to_numpy()
        book_cost_read_back = sleeve_path_book - daily["netted_return"].to_numpy()
        meta_cost_gross = np.zeros(len(self.live))
        meta_cost_gross[self.rebalance_rows] = np.abs(self.meta_trade["gross"]) @ self.h
        unnetted_sleeve_path = (held_gross * self.costs.iloc[e:]).sum(axis=1, skipna=False).to_numpy() \
            + meta_cost_gross[e:]
        rows = [
            _check("sleeve_gross_returns",
                   "each sleeve's weights x asset returns (+ cash) == its gross return reconstructed from "
                   "net return and own cost (max over sleeves)", self.gross_diff[e:], idx, tol),
            _check("netted_book_return",
                   "netted return == sum_i a_i R_i + cash - cost_book, recomputed as sum_s m_s g_s - cost_book "
                   "(g_s gross sleeve returns, m drifting with them)",
                   daily["netted_return"].to_numpy() - (sleeve_path_book - daily["book_cost"].to_numpy()),
                   idx, tol),
            _check("standalone_return",
                   "stand-alone return == sum_s m_s r_s(net) - cost_meta, recomputed through the assets: "
                   "sum_i a_i R_i + cash - sum_s m_s cost_s - cost_meta",
                   daily["standalone_return"].to_numpy() - asset_path_sa, idx, tol),
            _check("standalone_cost",
                   "stand-alone cost == its sleeves' own costs + its meta trades' cost, read back as gross - net",
                   daily["standalone_cost"].to_numpy() - sa_cost_read_back, idx, tol),
            _check("sleeve_costs_priced",
                   "each sleeve's own cost == its rate x its asset trade + the holding cost of its positions "
                   "under the cost model (max over sleeves)", self.sleeve_cost_diff[e:], idx, tol),
            _check("crossing_savings",
                   "savings == the un-netted cost (sum_s m_s x sleeve's own cost + the meta trades at h_i, same "
                   "holdings as the book) - the book's cost read back as gross - net return",
                   daily["savings_cost"].to_numpy() - (unnetted_sleeve_path - book_cost_read_back), idx, tol),
            _check("costs_nonnegative", "both views' daily costs and volumes are >= 0 (negative part shown)",
                   np.minimum(daily[["book_volume", "standalone_volume", "book_cost", "standalone_cost"]]
                              .to_numpy().min(axis=1), 0.0), idx, tol),
            _check("savings_nonnegative", "crossing savings in volume, trading cost and holding cost are >= 0 "
                   "(negative part shown)",
                   np.minimum(daily[["savings_volume", "savings_cost_trading", "savings_cost_holding"]]
                              .to_numpy().min(axis=1), 0.0), idx, tol),
            _check("triangle_inequality",
                   "book net trade <= its sleeves' trades + its meta trade on the same holdings (excess shown)",
                   np.maximum(daily["book_volume"] - daily["unnetted_book_volume"], 0.0).to_numpy(), idx, tol),
        ]
        return pd.DataFrame(rows, columns=CHECK_COLUMNS)


def _sleeve_totals(sums: pd.DataFrame, days: int) -> pd.DataFrame:
    """Each sleeve's own turnover and cost drag a year over ``days`` live days, and its rate."""
    years = days / PERIODS_PER_YEAR
    return pd.DataFrame({"asset_turnover": sums["trade"] / years, "cost_drag": sums["cost"] / years,
                         "rate_bps": sums["rate_bps"]}).rename_axis("sleeve")


def fold_checks(previous: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Two tables of daily checks on consecutive day ranges as one over both: per check the larger
    difference and where it is (NaN is larger than any number), passed only if both passed.
    A check in one table only is kept as it is."""
    old = {row["check"]: row for row in previous.to_dict("records")}
    rows = []
    for row in new.to_dict("records"):
        before = old.pop(row["check"], None)
        if before is not None:
            a, b = float(before["max_abs_diff"]), float(row["max_abs_diff"])
            if np.isnan(a) or (not np.isnan(b) and a >= b):
                row = {**row, "max_abs_diff": a, "where": before["where"]}
            row["passed"] = bool(before["passed"]) and bool(row["passed"])
        rows.append(row)
    rows.extend(old.values())
    return pd.DataFrame(rows, columns=list(new.columns))


def fold_cost_views(previous: CostViews, new: CostViews) -> CostViews:
    """The views of the live days so far from those of the earlier days (``previous``, stored by
    the last run) and of the days after them (``new``: a trailing window's ``emit_from`` rows):
    daily rows appended, sleeve sums added, checks folded (``fold_checks``). Identical to the
    views of all days computed at once, up to the order of the additions."""
    if previous.sleeve_sums is None or new.sleeve_sums is None:
        raise StageInputError("cost views: folding needs the sleeve sums of both parts")
    if len(previous.daily) and len(new.daily) and new.daily.index[0] <= previous.daily.index[-1]:
        raise StageInputError(f"cost views: the new days start {new.daily.index[0].date()}, not after the "
                              f"previous ones ({previous.daily.index[-1].date()})")
    if list(previous.sleeve_sums.index) != list(new.sleeve_sums.index):
        raise StageInputError("cost views: the sleeves changed between the two parts")
    daily = pd.concat([previous.daily, new.daily])
    sums = pd.DataFrame({"trade": previous.sleeve_sums["trade"] + new.sleeve_sums["trade"],
                         "cost": previous.sleeve_sums["cost"] + new.sleeve_sums["cost"],
                         "rate_bps": previous.sleeve_sums["rate_bps"]}).rename_axis("sleeve")
    return CostViews(daily=daily, book_weights=None, cost_bps=new.cost_bps,
                     checks=fold_checks(previous.checks, new.checks), sleeve_totals=_sleeve_totals(sums, len(daily)),
                     book_trades=None, cost_model=new.cost_model, sleeve_sums=sums)


def cost_views(
    *,
    meta_weights: pd.DataFrame,
    sleeve_returns: pd.DataFrame,
    sleeve_costs: pd.DataFrame | Mapping[str, pd.Series],
    sleeve_weights: Mapping[str, pd.DataFrame] | Iterable[tuple[str, pd.DataFrame]],
    asset_returns: pd.DataFrame,
    cost_bps: float | None = None,
    cash_return: float | pd.Series = 0.0,
    tolerance: float = 1e-10,
    cost_model: CostModel | None = None,
    emit_from: pd.Timestamp | None = None,
    sleeve_rates: Mapping[str, float] | None = None,
) -> CostViews:
    """Both cost views in one call; ``sleeve_weights`` may be a mapping or an iterator of
    ``(sleeve, weights)`` chunks (consumed one at a time). ``emit_from``/``sleeve_rates``: a
    trailing window's views (``BookCosts``)."""
    if not isinstance(sleeve_costs, pd.DataFrame):
        sleeve_costs = pd.DataFrame({s: pd.Series(v, dtype=float) for s, v in sleeve_costs.items()})
    acc = BookCosts(meta_weights=meta_weights, sleeve_returns=sleeve_returns, sleeve_costs=sleeve_costs,
                    asset_returns=asset_returns, cost_bps=cost_bps, cash_return=cash_return,
                    tolerance=tolerance, cost_model=cost_model, emit_from=emit_from, sleeve_rates=sleeve_rates)
    chunks = sleeve_weights.items() if isinstance(sleeve_weights, Mapping) else sleeve_weights
    for sleeve, weights in chunks:
        if str(sleeve) in acc.sleeves:
            acc.add(sleeve, weights)
    return acc.result()


def _check_not_held_without_return(sleeve: str, w: np.ndarray, no_return: np.ndarray, days, tickers) -> None:
    """StageInputError if the sleeve holds a ticker on a day it has no return (not listed)."""
    bad = (w != 0.0) & no_return
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise StageInputError(f"cost views: sleeve {sleeve!r} holds {tickers[col]!r} on {days[row].date()}, "
                              "a day it has no return (not listed yet, or delisted)")


class DriftedSleeveHoldings:
    """Each sleeve's asset holdings drifted to the close of a decision date, for the optimizer's
    ``turnover_space="asset"`` (``sleeve_holdings(date, sleeves) -> sleeves x assets``).

    The holdings at the close of ``d`` are the start-of-day weights of ``d`` after that day's asset
    returns (cash earning ``cash_return``): known at the close, before the sleeve's own trade.
    A sleeve with no weights on ``d`` (not live yet) holds nothing.
    """

    def __init__(self, sleeve_weights: Mapping[str, pd.DataFrame], asset_returns: pd.DataFrame,
                 cash_return: float = 0.0) -> None:
        self.weights = dict(sleeve_weights)
        self.returns = asset_returns
        self.tickers = [str(c) for c in asset_returns.columns]
        self.cash_return = float(cash_return)

    def __call__(self, date: pd.Timestamp, sleeves) -> np.ndarray:
        if date not in self.returns.index:
            raise StageInputError(f"sleeve holdings: {date} is not a date of the asset returns")
        R = self.returns.loc[date].to_numpy(dtype=float)[None, :]
        no_return = np.isnan(R)  # point in time: a ticker without a return that day is held by no one
        R = np.where(no_return, 0.0, R)
        out = np.zeros((len(sleeves), len(self.tickers)))
        for i, sleeve in enumerate(sleeves):
            if sleeve not in self.weights:
                raise StageInputError(f"sleeve holdings: no weights for sleeve {sleeve!r}")
            frame = self.weights[sleeve]
            if date not in frame.index:
                continue
            row = frame.loc[date].reindex(self.tickers)
            if row.isna().all():
                continue  # not live: holds nothing
            w = row.to_numpy(dtype=float)
            if np.isnan(w[row.index.isin(frame.columns)]).any():
                raise StageInputError(f"sleeve holdings: sleeve {sleeve!r} has a NaN weight on {date.date()}")
            w = np.nan_to_num(w)
            _check_not_held_without_return(str(sleeve), w[None, :], no_return, [date], self.tickers)
            out[i] = _one_day_drift(w[None, :], R, np.array([self.cash_return]))[0]
        return out
