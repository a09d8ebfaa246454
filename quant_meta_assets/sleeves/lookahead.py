"""The look-ahead detector: a strategy's target for date t must not change when later dates are appended.

Prefix invariance is the contract "no look-ahead" rests on, and the one an incremental update relies
on. The check is cheap, one more call of the strategy: run it on the prices cut ``cut_rows`` rows
before the end and compare every date both runs decided. A strategy that peeks at t+1 changes its
last targets (the future it read is missing from the shorter window); one that normalises by a
full-sample statistic (mean, rank, z-score over all dates) changes all of them. Either is reported
with the strategy's name and the first date whose target changed ("look-ahead suspect: ...").

Passing the check does not prove the absence of look-ahead (a strategy may peek further than
``cut_rows`` ahead, or only on some dates); failing it proves its presence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["DEFAULT_CUT_ROWS", "PrefixCheck", "check_prefix_invariance"]

DEFAULT_CUT_ROWS = 5
"""Rows cut from the end for the shorter run: a week of trading days."""
TOLERANCE = 1e-10
"""Absolute difference in a weight above which a target "changed" (the same arithmetic on a prefix
gives identical numbers; the slack only absorbs a summation order that depends on the length)."""


@dataclass(frozen=True)
class PrefixCheck:
    """The outcome: which window was compared and, for a suspect, where the first change is."""

    strategy: str
    sleeve: str
    cut: pd.Timestamp | None  # the last date of the shorter window (None: history too short to check)
    compared: int  # decided dates both runs share
    first_changed: pd.Timestamp | None = None
    ticker: str | None = None
    before: float | None = None  # the target on the shorter window
    after: float | None = None  # the same date's target once later dates were appended

    @property
    def suspect(self) -> bool:
        return self.first_changed is not None

    @property
    def message(self) -> str:
        if self.cut is None:
            return f"look-ahead check skipped for strategy {self.strategy!r}: history too short to cut"
        if not self.suspect:
            return (f"prefix-invariant: strategy {self.strategy!r} decided the same targets for the {self.compared} "
                    f"dates up to {self.cut.date()} with and without the later dates")
        day = self.first_changed.date().isoformat()
        if self.ticker is None:  # a date only one run decided
            what = (f"only the run on {'the full history' if np.isnan(self.before) else f'the prices up to {self.cut.date()}'}"
                    " decided a target for it")
        else:
            what = (f"{self.ticker}: {self.before:.6g} on the prices up to {self.cut.date()}, {self.after:.6g} on "
                    "the full history")
        return (f"look-ahead suspect: strategy {self.strategy!r} (sleeve {self.sleeve!r}): its target for {day} "
                f"changed when later dates were appended ({what}); a target must use only data up to its own "
                "date (no future rows, no full-sample normalisation)")

    def as_record(self) -> dict[str, Any]:
        """Plain values for a sleeve's record and metadata."""
        return {
            "suspect": self.suspect,
            "message": self.message,
            "first_changed": self.first_changed.date().isoformat() if self.first_changed is not None else None,
            "compared_dates": int(self.compared),
        }


def _first_change(short: pd.DataFrame, full: pd.DataFrame, cut: pd.Timestamp, tolerance: float):
    """(date, ticker, before, after) of the earliest difference on the dates up to ``cut``, or None.

    Dates both runs decided are compared weight by weight (a ticker one run left out holds 0). A
    date only one run decided is a change, except the cut date decided only by the shorter run: a
    strategy that decides at period ends closes its last, partial period on the last date it sees.
    """
    full = full.loc[full.index <= cut]
    only = full.index.difference(short.index).union(short.index.difference(full.index).drop(cut, errors="ignore"))
    tickers = short.columns.union(full.columns)
    shared = short.index.intersection(full.index)
    a = short.reindex(index=shared, columns=tickers, fill_value=0.0).to_numpy(dtype=float)
    b = full.reindex(index=shared, columns=tickers, fill_value=0.0).to_numpy(dtype=float)
    rows, cols = np.nonzero(np.abs(a - b) > tolerance)
    first = (shared[int(rows[0])], str(tickers[int(cols[0])]), float(a[rows[0], cols[0]]), float(b[rows[0], cols[0]])) \
        if len(rows) else None  # np.nonzero is row-major: the earliest date, then the first ticker
    if len(only) and (first is None or only[0] < first[0]):
        day = only[0]  # a NaN "weight" says which run did not decide it
        return (day, None, float("nan") if day not in short.index else 0.0,
                float("nan") if day not in full.index else 0.0)
    return first


def check_prefix_invariance(
    strategy_fn: Callable[..., pd.DataFrame],
    prices: pd.DataFrame,
    params: Mapping[str, Any],
    full_targets: pd.DataFrame,
    *,
    strategy: str,
    sleeve: str,
    cut_rows: int = DEFAULT_CUT_ROWS,
    validate: Callable[[Any, pd.DataFrame], pd.DataFrame] | None = None,
    tolerance: float = TOLERANCE,
) -> PrefixCheck:
    """Run ``strategy_fn`` on ``prices`` without its last ``cut_rows`` rows and compare its targets
    with ``full_targets`` (its targets on all of ``prices``) on every date up to the cut.

    ``validate(raw, prices)`` turns the shorter run's raw output into a checked frame (the sleeve
    engine's ``validate_target_weights``); an error there propagates: a strategy that cannot run on
    a shorter history is itself a finding.
    """
    if len(prices) <= cut_rows + 1:
        return PrefixCheck(strategy=strategy, sleeve=sleeve, cut=None, compared=0)
    shorter = prices.iloc[:-cut_rows]
    cut = shorter.index[-1]
    raw = strategy_fn(shorter, **dict(params))
    short = validate(raw, shorter) if validate is not None else raw
    compared = int((full_targets.index <= cut).sum())
    found = _first_change(short, full_targets, cut, tolerance)
    if found is None:
        return PrefixCheck(strategy=strategy, sleeve=sleeve, cut=cut, compared=compared)
    date, ticker, before, after = found
    return PrefixCheck(strategy=strategy, sleeve=sleeve, cut=cut, compared=compared, first_changed=date,
                       ticker=ticker, before=before, after=after)
