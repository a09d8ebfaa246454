"""Is a new price panel the previous one plus new dates? Per-ticker prefix hashes, pure.

A panel's digest is small and cheap to store next to a sleeve's bundle: its last date, its number
of rows, a hash of its dates and one hash per ticker of that ticker's prices (NaN, i.e. not listed,
included). A new panel is an *append* of the previous one when its first ``rows`` dates hash to
the same value, every previous ticker's first ``rows`` prices hash to the same value, it has no
other ticker and it has at least one more date. Anything else names what changed:
``prices revised on 2022-11-03 for AAPL`` (the date when the previous frame is at hand, else
"on or before" the previous last date), ``new ticker(s) ['XYZ']``, ``dates changed``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["AppendCheck", "PanelHashes", "compare_prefix", "prices_digest"]


def _index_hash(index: pd.DatetimeIndex) -> str:
    return hashlib.sha256(np.ascontiguousarray(pd.DatetimeIndex(index).as_unit("us").asi8).tobytes()).hexdigest()[:16]


def _column_hashes(frame: pd.DataFrame) -> dict[str, str]:
    values = np.array(frame.to_numpy(dtype="float64", na_value=np.nan), order="F", copy=True)
    values[np.isnan(values)] = np.nan  # one NaN bit pattern, whatever produced it
    return {str(t): hashlib.sha256(values[:, j].tobytes()).hexdigest()[:16] for j, t in enumerate(frame.columns)}


def prices_digest(frame: pd.DataFrame) -> dict:
    """``{"end", "rows", "index", "tickers": {ticker: hash}}`` of a validated price frame (JSON-able)."""
    if len(frame) == 0:
        raise ValueError("prices_digest: empty price frame")
    return {"end": frame.index[-1].date().isoformat(), "rows": int(len(frame)), "index": _index_hash(frame.index),
            "tickers": _column_hashes(frame)}


class PanelHashes:
    """The digests of one panel's prefixes, computed once per prefix length and shared by every
    sleeve (a sleeve's digest is the panel's restricted to its tickers)."""

    def __init__(self, prices: pd.DataFrame) -> None:
        self.prices = prices
        self._cache: dict[int, dict] = {}

    def prefix(self, rows: int) -> dict:
        if rows not in self._cache:
            self._cache[rows] = prices_digest(self.prices.iloc[:rows])
        return self._cache[rows]

    def of(self, tickers, rows: int | None = None) -> dict:
        """The digest of ``prices[tickers]`` over its first ``rows`` rows (all by default)."""
        full = self.prefix(len(self.prices) if rows is None else rows)
        return {**full, "tickers": {str(t): full["tickers"][str(t)] for t in tickers}}


@dataclass(frozen=True)
class AppendCheck:
    """``kind``: ``append`` (only new dates), ``same`` (nothing new) or ``changed``; ``reasons``
    say what changed; ``new_days`` the dates added (append)."""

    kind: str
    new_days: int = 0
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_append(self) -> bool:
        return self.kind == "append"

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else self.kind


def _first_difference(old: pd.Series, new: pd.Series) -> str | None:
    a, b = old.to_numpy(dtype="float64"), new.to_numpy(dtype="float64")
    differs = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    return old.index[int(np.argmax(differs))].date().isoformat() if differs.any() else None


def compare_prefix(previous: Mapping, prices: pd.DataFrame, hashes: PanelHashes | None = None,
                   previous_prices: pd.DataFrame | None = None) -> AppendCheck:
    """Compare the digest of the previous panel (``prices_digest``) with the new panel ``prices``
    (already restricted to the same universe). ``hashes``: the new panel's shared ``PanelHashes``
    (``prices`` may then be the whole panel). ``previous_prices``: the previous frame, to name the
    first revised date."""
    rows, end = int(previous["rows"]), str(previous["end"])
    old_tickers = list(previous["tickers"])
    if len(prices) < rows:
        return AppendCheck("changed", reasons=(f"dates removed: {len(prices)} dates, the previous panel had {rows} "
                                               f"up to {end}",))
    prefix_index = prices.index[:rows]
    if prefix_index[-1].date().isoformat() != end or _index_hash(prefix_index) != previous["index"]:
        return AppendCheck("changed", reasons=(f"dates changed: the dates up to {end} are not the previous panel's "
                                               "(a date added, removed or moved inside its history)",))
    reasons = []
    missing = [t for t in old_tickers if t not in prices.columns]
    if missing:
        reasons.append(f"ticker(s) removed: {missing[:5]}")
    new = [str(t) for t in prices.columns if str(t) not in previous["tickers"]]
    if new:
        reasons.append(f"new ticker(s) {new[:5]}" + (f" and {len(new) - 5} more" if len(new) > 5 else ""))
    present = [t for t in old_tickers if t in prices.columns]
    now = (hashes.of(present, rows) if hashes is not None else prices_digest(prices[present].iloc[:rows]))["tickers"]
    revised = [t for t in present if now[t] != previous["tickers"][t]]
    for ticker in revised[:3]:
        when = None
        if previous_prices is not None and ticker in previous_prices.columns and len(previous_prices) == rows:
            when = _first_difference(previous_prices[ticker], prices[ticker].iloc[:rows])
        reasons.append(f"prices revised on {when} for {ticker}" if when else
                       f"prices revised for {ticker} (on or before {end})")
    if len(revised) > 3:
        reasons.append(f"and {len(revised) - 3} more revised ticker(s)")
    if reasons:
        return AppendCheck("changed", reasons=tuple(reasons))
    added = len(prices) - rows
    if added == 0:
        return AppendCheck("same", reasons=(f"no new dates after {end}",))
    return AppendCheck("append", new_days=added)
