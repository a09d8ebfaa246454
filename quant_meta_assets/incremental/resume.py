"""A sleeve resumes from its state: the update of its new days, identical to a full recompute.

The sleeve engine is a daily fold. What it needs to continue after the last day ``T`` of a run is
the **resume state**, stored in the sleeve's bundle (record key ``resume_state``, JSON):

* ``carry``: the segment open at the close of ``T`` (``engine.Carry``): its target, each asset's
  growth since the segment's first open, its cash and days of cash interest, and the weights at
  the close of ``T`` (the turnover of the next trade is measured against them);
* ``last_row``: the strategy's last target row dated strictly before ``T`` (a later rebalance
  carries it forward when the strategy decides nothing newer, e.g. ``min_variance`` at month ends);
* ``prices``: the digest of the sleeve's price panel (``prefix.prices_digest``), the append test;
* ``warmup``: the strategy's declared window, in rows (``strategy_warmup``).

**What an update recomputes.** The run on ``...T`` treated ``T`` as the close of its (possibly
partial) period and did not trade its target (nothing left to earn). With new days the period of
``T`` may continue (``T`` is no rebalance date any more) or ``T`` was a real period end (its target
now trades, earning from ``T + 1``). So the update re-decides every rebalance date from ``T`` on:
the strategy runs on the ``warmup`` rows ending at ``last_row``'s date plus everything after (the
window), its rows dated ``>= T`` are kept, and the window run must reproduce ``last_row`` exactly (a
warm-up declaration that is too short, or a strategy whose rows depend on more than its window,
is caught there and the sleeve is recomputed in full). A ticker whose last price is ``T`` delisted
at ``T``: the update lists its close and drops it from the drifted weights, as a full run does.

**Who is recomputed in full.** No previous good result, a changed registry entry / risk-free rate /
cost model (config hash), changed code, a price panel that is not an append (a revised price, a new
ticker, changed dates), no new day, a strategy without a warm-up declaration (a plug-in without
``fn.warmup``), a plug-in the look-ahead detector flagged, too little history before the window.
``plan_sleeve`` says which, and why.

Numbers: the carried segment's values are ``target * growth * W`` instead of ``target * W_full / W_s``
(another rounding order): update and full run agree to about 1e-15 (tests: 1e-10).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from quant_meta_assets import rates
from quant_meta_assets.costs.cost_model import CostModel, load_cost_model
from quant_meta_assets.errors import QuantMetaError
from quant_meta_assets.incremental.prefix import AppendCheck, PanelHashes, compare_prefix, prices_digest
from quant_meta_assets.prices import asset_returns

__all__ = [
    "FRAME_KEYS",
    "NotExactError",
    "SleevePlan",
    "UpdateJob",
    "appended_record",
    "extend_record",
    "plan_sleeve",
    "resume_state",
    "run_sleeve_update",
    "strategy_warmup",
]

FRAME_KEYS = ("returns", "weights", "costs", "turnover")
STATE_VERSION = 1


class NotExactError(QuantMetaError):
    """The update cannot be proven identical to a full recompute (the sleeve is recomputed in full)."""


def strategy_warmup(fn, params: Mapping[str, Any]) -> int | None:
    """The declared warm-up of a strategy for ``params`` (rows of prices ending at ``t`` that decide
    its target row of ``t``), or None when it declares none.

    Declaration: a function attribute ``fn.warmup``, a callable taking the strategy's params (the
    registry's, defaults filled in from the signature) and returning a positive int.
    """
    declared = getattr(fn, "warmup", None)
    if declared is None:
        return None
    try:
        signature = inspect.signature(fn)
        bound = signature.bind_partial(None, **params)
        bound.apply_defaults()
        arguments = {}
        for key, value in list(bound.arguments.items())[1:]:
            if signature.parameters[key].kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(value)
            elif signature.parameters[key].kind is not inspect.Parameter.VAR_POSITIONAL:
                arguments[key] = value
        rows = declared(**arguments) if callable(declared) else declared
    except Exception as exc:  # noqa: BLE001 - a bad declaration: named, and the sleeve runs in full
        raise NotExactError(f"strategy warmup declaration failed: {type(exc).__name__}: {exc}") from exc
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 1:
        raise NotExactError(f"strategy warmup must be a positive int of rows, got {rows!r}")
    return int(rows)


def _iso(day) -> str:
    return pd.Timestamp(day).date().isoformat()


def resume_state(sub: pd.DataFrame, weights: pd.DataFrame, sim, warmup: int | None) -> dict | None:
    """The resume state of a sleeve after a run on ``sub`` (its price panel): JSON-able, or None
    when the run has no open segment."""
    carry = sim.carry_out
    if carry is None:
        return None
    end = sub.index[-1]
    before = weights[weights.index < end]
    last_row = None
    if len(before):
        row = before.iloc[-1].reindex(sub.columns, fill_value=0.0)
        last_row = {"date": _iso(before.index[-1]), "weights": [float(v) for v in row.to_numpy(dtype="float64")]}
    return {
        "version": STATE_VERSION,
        "as_of": _iso(end),
        "tickers": [str(t) for t in sub.columns],
        "warmup": warmup,
        "prices": prices_digest(sub),
        "last_row": last_row,
        "carry": {"target": [float(v) for v in carry.target], "growth": [float(v) for v in carry.growth],
                  "cash0": float(carry.cash0), "cash_days": int(carry.cash_days),
                  "close_weights": [float(v) for v in carry.close_weights]},
    }


@dataclass(frozen=True)
class UpdateJob:
    """What a worker needs to update one sleeve: its profile, the trailing window of its prices
    (the ``warmup`` rows ending at ``last_row``'s date, then every later date) and its state."""

    profile: Any
    window: pd.DataFrame
    state: dict
    from_run: str | None = None

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def strategy(self) -> str:
        return self.profile.strategy

    @property
    def timeout_s(self):
        return getattr(self.profile, "timeout_s", None)

    @property
    def max_retries(self):
        return getattr(self.profile, "max_retries", 0)


def run_sleeve_update(profile, window: pd.DataFrame, state: Mapping, risk_free_rate: float | None = None,
                      cost_model: CostModel | None = None) -> dict[str, Any]:
    """The new days of a sleeve from its state: a record whose frames cover only the days after
    ``state['as_of']`` (turnover: the trades dated from ``as_of`` on), its new delistings and its
    new state (``prices`` left for the driver, which has the whole panel). Raises ``NotExactError``
    when the window does not reproduce the stored state (then recompute in full)."""
    from quant_meta_assets.sleeves.engine import (
        Carry, check_gross, check_solvent, rebalance_dates, sample_weights, simulate, success_record,
        untradable_to_cash, validate_target_weights,
    )
    from quant_meta_assets.sleeves.registry import resolve_strategy, validate_universe

    t0 = time.perf_counter()
    rf = rates.resolve(risk_free_rate)
    universe = validate_universe(profile, window)
    sub = window.loc[:, list(universe)]
    tickers = [str(t) for t in sub.columns]
    if tickers != list(state["tickers"]):
        raise NotExactError(f"sleeve {profile.name!r}: the window's tickers are not the state's")
    as_of = pd.Timestamp(state["as_of"])
    if as_of not in sub.index or sub.index[-1] <= as_of:
        raise NotExactError(f"sleeve {profile.name!r}: the window has no day after {state['as_of']}")
    fn = resolve_strategy(profile.strategy)
    weights = validate_target_weights(fn(sub, **profile.params), sub, universe, profile.name)
    weights = weights.reindex(columns=sub.columns, fill_value=0.0)
    last = state.get("last_row")
    if last is None:
        raise NotExactError(f"sleeve {profile.name!r}: the state has no strategy row before {state['as_of']}")
    last_date = pd.Timestamp(last["date"])
    stored = pd.DataFrame([last["weights"]], index=pd.DatetimeIndex([last_date], name=sub.index.name),
                          columns=sub.columns, dtype="float64")
    # the window must reproduce the stored row, and decide nothing between it and as_of
    between = weights[(weights.index >= last_date) & (weights.index < as_of)]
    if list(between.index) != [last_date]:
        raise NotExactError(
            f"sleeve {profile.name!r}: the window run decided {len(between)} row(s) in "
            f"[{last['date']}, {state['as_of']}), the full run one on {last['date']} (warm-up too short?)")
    diff = float(np.max(np.abs(between.to_numpy() - stored.to_numpy())))
    if diff > 1e-10:
        raise NotExactError(f"sleeve {profile.name!r}: the window run's target on {last['date']} differs from "
                            f"the stored one by {diff:.3g} (warm-up too short?)")
    combined = pd.concat([stored, weights[weights.index >= as_of]])
    dates = rebalance_dates(sub.index, profile.rebalance)
    sampled = untradable_to_cash(sample_weights(combined, dates[dates >= as_of]), sub)
    check_gross(sampled, profile.max_gross, profile.name)
    model = load_cost_model() if cost_model is None else cost_model
    rate = profile.cost_bps if profile.cost_bps is not None else pd.Series(
        model.half_spreads(sub.columns) * 1e4, index=sub.columns)
    rets = asset_returns(sub).loc[sub.index[sub.index.get_loc(as_of) + 1]:]
    c = state["carry"]
    close = np.asarray(c["close_weights"], dtype="float64")
    first_day = sub.iloc[sub.index.get_loc(as_of) + 1]
    gone = first_day.isna().to_numpy()  # no price after as_of: delisted at (or before) as_of
    at_as_of = sub.loc[as_of].notna().to_numpy()
    delisted_now = [{"ticker": tickers[j], "last_price_date": state["as_of"], "weight": float(close[j])}
                    for j in np.flatnonzero(gone & at_as_of) if close[j] != 0.0]
    carry = Carry(target=np.asarray(c["target"], dtype="float64"), growth=np.asarray(c["growth"], dtype="float64"),
                  cash0=float(c["cash0"]), cash_days=int(c["cash_days"]), close_weights=np.where(gone, 0.0, close))
    sim = simulate(sampled, rets, rate, rf, model, carry=carry)
    check_solvent(sim, profile.name)
    new_state = resume_state(sub, combined, sim, state.get("warmup"))
    new_state["prices"] = None  # the driver fills it from the whole panel
    return success_record(
        profile.name, sim, t0,
        delistings=delisted_now + [dict(d) for d in sim.delistings],
        resume_state=new_state,
        update_of=state["as_of"],
    )


def extend_record(previous: Mapping[str, Any], update: Mapping[str, Any], prices_digest_now: dict) -> dict[str, Any]:
    """The full record of an updated sleeve: the previous record's frames (up to its ``as_of``)
    followed by the update's, delistings merged in ticker order, the state's prices digest set."""
    tickers = list(update["resume_state"]["tickers"])
    frames = {}
    for key in FRAME_KEYS:
        old, new = previous[key], update[key]
        if key == "turnover":
            old = old[old.index < pd.Timestamp(update["update_of"])]
        else:
            old = old[old.index <= pd.Timestamp(update["update_of"])]
        if key == "weights":
            new = new.reindex(columns=old.columns)
        frames[key] = pd.concat([old, new]) if len(old) else new
        if isinstance(frames[key], pd.Series):
            frames[key] = frames[key].rename(update[key].name)
    order = {t: i for i, t in enumerate(tickers)}
    delistings = sorted([*(previous.get("delistings") or []), *update["delistings"]],
                        key=lambda d: order.get(d["ticker"], len(order)))
    live = frames["returns"].dropna()
    state = dict(update["resume_state"])
    state["prices"] = prices_digest_now
    return {
        **{k: v for k, v in update.items() if k not in FRAME_KEYS},
        **frames,
        "delistings": delistings,
        "start": live.index[0].date().isoformat(),
        "end": live.index[-1].date().isoformat(),
        "lookahead": previous.get("lookahead"),
        "resume_state": state,
    }


def appended_record(previous_meta: Mapping[str, Any], tails: Mapping[str, Any], update: Mapping[str, Any],
                    prices_digest_now: dict) -> tuple[dict[str, Any], dict[str, pd.Timestamp]] | None:
    """``extend_record`` without the previous frames: the record whose frames are only the rows to
    append to the previous bundle, and ``replace_from`` (the previous turnover rows the update
    restates, from its ``update_of`` on). ``tails``: the previous frames read since ``update_of``
    (only their last chunk), for the weights' columns and to see nothing follows ``update_of``.
    None when the append is not the same as the extension (rows after ``update_of``, no live
    previous start): then the frames are extended in full."""
    as_of = pd.Timestamp(update["update_of"])
    if any(len(tails[key].index[tails[key].index > as_of]) for key in ("returns", "weights", "costs")):
        return None
    if not previous_meta.get("start"):
        return None
    tickers = list(update["resume_state"]["tickers"])
    frames = {key: update[key] for key in FRAME_KEYS}
    frames["weights"] = frames["weights"].reindex(columns=tails["weights"].columns)
    order = {t: i for i, t in enumerate(tickers)}
    delistings = sorted([*(previous_meta.get("delistings") or []), *update["delistings"]],
                        key=lambda d: order.get(d["ticker"], len(order)))
    live = frames["returns"].dropna()
    state = dict(update["resume_state"])
    state["prices"] = prices_digest_now
    record = {
        **{k: v for k, v in update.items() if k not in FRAME_KEYS},
        **frames,
        "delistings": delistings,
        "start": previous_meta["start"],
        "end": live.index[-1].date().isoformat() if len(live) else previous_meta.get("end"),
        "lookahead": previous_meta.get("lookahead"),
        "resume_state": state,
    }
    return record, {"turnover": as_of}


@dataclass(frozen=True)
class SleevePlan:
    """``mode``: ``update`` or ``full``; ``reason``: why (a full recompute) or what (an update)."""

    sleeve: str
    mode: str
    reason: str
    window_start: int | None = None  # row of the panel where the update's window starts
    new_days: int = 0
    from_run: str | None = None

    @property
    def update(self) -> bool:
        return self.mode == "update"

    @property
    def describe(self) -> str:
        if self.update:
            return f"update (+{self.new_days} days from run {self.from_run})"
        return f"full recompute: {self.reason}"


def plan_sleeve(profile, prices: pd.DataFrame, previous_meta: Mapping[str, Any] | None, *,
                changed: str | None = None, from_run: str | None = None, hashes: PanelHashes | None = None,
                previous_prices: pd.DataFrame | None = None) -> SleevePlan:
    """Update or full recompute for one sleeve.

    ``previous_meta``: the scalars of its latest stored record (``status``, ``lookahead``,
    ``resume_state``), None when there is none; ``changed``: why its stored identity differs
    from now (registry entry, risk-free rate, costs, code), None when it does not;
    ``prices``: the whole new panel (``hashes`` its shared prefix hashes)."""
    from quant_meta_assets.sleeves.registry import is_plugin, resolve_strategy, validate_universe

    name = profile.name

    def full(reason: str) -> SleevePlan:
        return SleevePlan(name, "full", reason, from_run=from_run)

    if previous_meta is None:
        return full("no previous result")
    if previous_meta.get("status") != "success":
        return full("the previous result failed")
    if changed:
        return full(changed)
    fn = resolve_strategy(profile.strategy)
    try:
        warmup = strategy_warmup(fn, profile.params)
    except NotExactError as exc:
        return full(str(exc))
    if warmup is None:
        return full(f"strategy {profile.strategy!r} declares no warm-up (fn.warmup): recomputed in full every run")
    lookahead = previous_meta.get("lookahead") or {}
    if is_plugin(profile.strategy) and lookahead.get("suspect"):
        return full(f"look-ahead suspect: {lookahead.get('message', '')}".rstrip(": "))
    state = previous_meta.get("resume_state")
    if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION or not state.get("prices"):
        return full("the previous result has no resume state")
    universe = list(validate_universe(profile, prices))
    check: AppendCheck = compare_prefix(state["prices"], prices.loc[:, universe], hashes=hashes,
                                        previous_prices=previous_prices)
    if not check.is_append:
        return full(check.reason)
    last = state.get("last_row")
    if last is None:
        return full("the previous result has no strategy row before its last day")
    start = int(prices.index.get_loc(pd.Timestamp(last["date"]))) - warmup + 1
    if start < 0:
        return full(f"not enough history for the warm-up of {warmup} rows before {last['date']}")
    return SleevePlan(name, "update", f"+{check.new_days} days", window_start=start, new_days=check.new_days,
                      from_run=from_run)
