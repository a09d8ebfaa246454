"""A trading day costs a day: the meta stages extend their previous output when their inputs
are an append of the inputs that output was computed on, and recompute in full otherwise.

Each stage stores an *append key* next to its output: digests of the inputs it read, over the
rows it covered (``frame_digest``: the dates, the column names and the exact float64 bytes, so
two frames have the same digest only if they are equal element by element, NaN at the same
cells). On the next run the stage digests the same rows of its new inputs; if every digest is
equal (and its configuration and code are the same), the previous rows are kept and only the new
ones are computed, with the same arithmetic a full recompute performs on them, so an update is
identical to a full recompute. Otherwise it recomputes in full and says why (``Update.reason``).

* ``meta.returns`` is the outer join of the sleeves' return series (one series per sleeve, cheap):
  it is always computed; ``extend_returns`` keeps the previous rows and appends the new ones when
  the new frame equals the previous one on its rows (up to rounding between two sleeve runs,
  ``RETURN_REVISION_TOLERANCE``), else it is the new frame and the update names the first revised
  date and sleeve.
* ``meta.optimize`` (``extend_optimize``): same parameters and code (``optimize_fingerprint``),
  the previous returns equal to the new ones on every previous row: only the rebalances after the
  previous last one are solved, resumed from the stored walk state (last target, warm starts).
* ``meta.flatten`` (``extend_flatten``): the previous meta returns, the meta-weights dated in the
  previous range, and each sleeve's weights on the previous rows all unchanged, and each sleeve's
  daily cost within ``COST_REVISION_TOLERANCE`` of the stored one (two sleeve runs may round a cost
  differently, ~1e-20): only
  the new rows are computed, drifting from the last rebalance on or before the previous last day.

Pure: no dagster import; the assets (``dagster_defs/meta_assets.py``) load the previous output
and store what these functions return.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from quant_meta_assets.meta.flatten import FlattenResult, flatten_weights
from quant_meta_assets.meta.optimize import OptimizationResult, optimize_meta_weights

APPEND_KEY_VERSION = 1


@dataclass(frozen=True)
class Update:
    """How a stage's output was made: ``extend`` (the previous rows kept, ``new_rows`` computed)
    or ``full`` (everything computed; ``reason`` says why it could not extend)."""

    mode: str  # "extend" | "full"
    reason: str
    new_rows: int

    def describe(self) -> str:
        if self.mode == "extend":
            return f"extended: {self.new_rows} new row(s); {self.reason}"
        return f"full recompute: {self.reason}"


def _hasher(frame: pd.DataFrame | pd.Series) -> Any:
    columns = frame.columns if isinstance(frame, pd.DataFrame) else pd.Index([frame.name])
    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in columns.tolist()]).encode())
    return h


def frame_digest(frame: pd.DataFrame | pd.Series, until: pd.Timestamp | None = None) -> str:
    """Digest of ``frame``'s rows dated on or before ``until`` (all rows if None): dates, column
    names and float64 values; equal digests mean equal frames element by element (two NaNs of
    different bit patterns differ: at worst a needless full recompute)."""
    return prefix_digests(frame, [until])[0]


def prefix_digests(frame: pd.DataFrame | pd.Series, until: list[pd.Timestamp | None]) -> list[str]:
    """``frame_digest(frame, u)`` for each ``u`` of ``until`` (ascending), hashing each row once:
    the dates and the row-major values are hashed separately, so the first k rows' bytes are a
    prefix of all rows' bytes in both."""
    dates = hashlib.sha256()  # sha256: the fastest hashlib digest on CPUs with SHA extensions
    values = hashlib.sha256()
    stamps = np.ascontiguousarray(pd.DatetimeIndex(frame.index).as_unit("ns").asi8)
    cells = np.ascontiguousarray(np.asarray(frame.to_numpy(), dtype=float).reshape(len(frame), -1))
    done, out = 0, []
    for u in until:
        k = len(frame) if u is None else int(np.searchsorted(frame.index.to_numpy(), np.datetime64(u), side="right"))
        dates.update(memoryview(stamps[done:k]))  # C-contiguous rows: no copy
        values.update(memoryview(cells[done:k]))
        done = k
        h = _hasher(frame)
        h.update(dates.copy().digest())
        h.update(values.copy().digest())
        out.append(h.hexdigest()[:32])
    return out


def _first_difference(previous: pd.DataFrame, current: pd.DataFrame) -> str:
    """Where ``current`` differs from ``previous`` on ``previous``'s rows (a sentence)."""
    if list(map(str, previous.columns)) != list(map(str, current.columns)):
        gone = [c for c in previous.columns if c not in current.columns]
        new = [c for c in current.columns if c not in previous.columns]
        return f"the sleeves changed (removed {gone}, added {new})" if gone or new else "the sleeve order changed"
    if len(current) < len(previous) or not current.index[: len(previous)].equals(previous.index):
        return (f"the dates changed: the previous frame ran {previous.index[0].date()}..{previous.index[-1].date()} "
                f"({len(previous)} rows), the new one starts {current.index[0].date() if len(current) else '-'} "
                f"with {len(current)} rows")
    a = previous.to_numpy(dtype=float)
    b = current.iloc[: len(previous)].to_numpy(dtype=float)
    differs = ~((np.abs(a - b) <= RETURN_REVISION_TOLERANCE) | (np.isnan(a) & np.isnan(b)))
    row, col = (int(v) for v in np.argwhere(differs)[0])
    return (f"meta/returns revised on {previous.index[row].date()} for sleeve {str(previous.columns[col])!r} "
            f"({a[row, col]!r} -> {b[row, col]!r}; {int(differs.sum())} revised cell(s))")


RETURN_REVISION_TOLERANCE = 1e-14  # two sleeve runs may round a day's return differently (~1e-19)


def returns_update(previous: pd.DataFrame | None, current: pd.DataFrame) -> Update:
    """Whether the new meta returns append to the previous ones: equal on every previous row, up
    to ``RETURN_REVISION_TOLERANCE`` per cell (rounding between two sleeve runs)."""
    return extend_returns(previous, current)[1]


def extend_returns(previous: pd.DataFrame | None, current: pd.DataFrame) -> tuple[pd.DataFrame, Update]:
    """meta.returns of an update: ``current`` (the aggregate of today's sleeves) when it revises
    the previous frame, else the previous rows followed by the new ones. A revision within
    ``RETURN_REVISION_TOLERANCE`` (rounding between two sleeve runs) keeps the previous value, so
    every later stage sees the very rows its previous output was computed on; the update says how
    many cells and by how much."""
    if previous is None:
        return current, Update("full", "no previous meta/returns", len(current))
    n = len(previous)
    same_shape = (list(map(str, previous.columns)) == list(map(str, current.columns)) and len(current) >= n
                  and current.index[:n].equals(previous.index))
    if same_shape:
        a, b = previous.to_numpy(dtype=float), current.iloc[:n].to_numpy(dtype=float)
        if np.array_equal(np.isnan(a), np.isnan(b)):
            diff = np.abs(np.where(np.isnan(a), 0.0, a - b))
            if diff.max(initial=0.0) <= RETURN_REVISION_TOLERANCE:
                revised = int((diff > 0).sum())
                tail = current.iloc[n:]
                frame = pd.concat([previous, tail]) if len(tail) else previous.copy()
                frame.index.name = current.index.name
                note = (f"equal to the previous frame on its {n} rows" if not revised else
                        f"{revised} cell(s) of the previous {n} rows differ by rounding (max {diff.max():.3g}), "
                        "the previous values kept")
                return frame, Update("extend", note, len(tail))
    return current, Update("full", _first_difference(previous, current), len(current))


# ------------------------------------------------------------------------------ meta.optimize

def optimize_fingerprint(params: Mapping[str, Any], code_version: str | None) -> str:
    """The optimizer's configuration and code: the walk can only be resumed under the same one.
    ``params`` should hold resolved values (e.g. the annual risk-free rate, not None)."""
    text = json.dumps({"params": {k: params[k] for k in sorted(params)}, "code": code_version},
                      sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _optimize_reason(previous: Mapping[str, Any] | None, returns: pd.DataFrame, fingerprint: str) -> str | None:
    if previous is None:
        return "no previous meta/optimize output"
    key = previous.get("append_key")
    if not isinstance(key, Mapping) or key.get("version") != APPEND_KEY_VERSION or not previous.get("state"):
        return "the previous meta/optimize output stores no append key or walk state"
    if key.get("fingerprint") != fingerprint:
        return "the optimizer's configuration or code changed since the previous output"
    rows = int(key["returns_rows"])
    if len(returns) < rows:
        return f"meta/returns has {len(returns)} rows, fewer than the {rows} the previous output was computed on"
    if frame_digest(returns.iloc[:rows]) != key["returns_digest"]:
        return (f"meta/returns differs from the one the previous output was computed on, on its {rows} rows "
                f"(through {returns.index[rows - 1].date()})")
    return None


def extend_optimize(previous: Mapping[str, Any] | None, returns: pd.DataFrame, fingerprint: str,
                    **params: Any) -> tuple[OptimizationResult, dict[str, Any], Update]:
    """meta.optimize on ``returns``: resumed from ``previous`` (a stored output: ``weights``,
    ``diagnostics``, ``state``, ``append_key``) when ``returns`` appends to the returns it was
    computed on under the same ``fingerprint``, else in full. Returns the result, its append key
    and how it was made."""
    reason = _optimize_reason(previous, returns, fingerprint)
    resume = None
    if reason is None:
        resume = OptimizationResult(previous["weights"], previous["diagnostics"], dict(previous["state"]))
    result = optimize_meta_weights(returns, resume=resume, **params)
    key = {"version": APPEND_KEY_VERSION, "fingerprint": fingerprint, "returns_rows": len(returns),
           "returns_digest": frame_digest(returns)}
    if resume is None:
        return result, key, Update("full", str(reason), len(result.weights))
    new = len(result.weights) - len(resume.weights)
    return result, key, Update("extend", f"{new} new rebalance(s) solved, {len(resume.weights)} kept",
                               len(returns) - int(previous["append_key"]["returns_rows"]))


# ------------------------------------------------------------------------------ meta.flatten

COST_REVISION_TOLERANCE = 1e-14  # a sleeve's daily cost drag may differ by rounding between two sleeve runs


class _SleeveDigests:
    """Per sleeve: the digest of its weights on the rows through ``until`` (what the next update
    compares) and, when ``expected`` is given, whether they equal the stored ones on the previous
    rows (through ``previous_end``). ``carried`` sleeves are neither digested nor compared (their
    bundle extends the one the previous output read: ``carried_sleeves``)."""

    def __init__(self, until: pd.Timestamp, previous_end: pd.Timestamp | None = None,
                 expected: Mapping[str, str] | None = None, carried: frozenset[str] = frozenset()) -> None:
        self.until, self.previous_end, self.expected, self.carried = until, previous_end, expected, carried
        self.digests: dict[str, str] = {}
        self.mismatch: str | None = None

    def __call__(self, sleeve: str, weights: pd.DataFrame) -> None:
        if sleeve in self.carried:
            return
        if self.expected is None:
            self.digests[sleeve] = frame_digest(weights, self.until)
            return
        previous, self.digests[sleeve] = prefix_digests(weights, [self.previous_end, self.until])
        if self.mismatch is None:
            if self.expected.get(sleeve) != previous:
                self.mismatch = (f"sleeve {sleeve!r}: its weights on the previous rows (through "
                                 f"{self.previous_end.date()}) differ from those the previous output used")  # type: ignore[union-attr]


def cost_frame(sleeve_costs: Mapping[str, pd.Series], sleeves: list[str], index: pd.Index) -> pd.DataFrame:
    """The sleeves' daily cost drags on ``index`` (date x sleeve; 0 where a sleeve has no cost row,
    as ``meta.flatten`` reads them)."""
    frame = pd.DataFrame({s: pd.Series(sleeve_costs[s], dtype=float) for s in sleeves if s in sleeve_costs})
    return frame.reindex(index=index, columns=sleeves).fillna(0.0)


def _cost_revision(previous: pd.DataFrame, current: pd.DataFrame) -> str | None:
    if list(previous.columns) != list(current.columns) or not current.index[: len(previous)].equals(previous.index):
        return "the sleeves' cost series cover other dates or sleeves than the previous output's"
    diff = np.abs(current.iloc[: len(previous)].to_numpy() - previous.to_numpy())
    if diff.max(initial=0.0) > COST_REVISION_TOLERANCE:
        row, col = (int(v) for v in np.unravel_index(int(np.argmax(diff)), diff.shape))
        return (f"sleeve {str(previous.columns[col])!r}: its daily cost on {previous.index[row].date()} was revised "
                f"by {diff[row, col]:.3g}")
    return None


def _flatten_reason(previous: Mapping[str, Any] | None, meta_weights: pd.DataFrame,
                    meta_returns: pd.DataFrame, sleeve_costs: Mapping[str, pd.Series]) -> str | None:
    if previous is None:
        return "no previous meta/flatten output"
    key = previous.get("append_key")
    if not isinstance(key, Mapping) or key.get("version") != APPEND_KEY_VERSION:
        return "the previous meta/flatten output stores no append key"
    end = pd.Timestamp(key["end"])
    if list(map(str, meta_weights.columns)) != list(key["sleeves_order"]):
        return "the sleeves changed since the previous output"
    if meta_returns.index[-1] < end:
        return f"meta/returns ends {meta_returns.index[-1].date()}, before the previous output's {end.date()}"
    if frame_digest(meta_returns, end) != key["returns_digest"]:
        return f"meta/returns differs from the previous output's on its rows (through {end.date()})"
    if frame_digest(meta_weights, end) != key["weights_digest"]:
        return f"the meta-weights dated on or before {end.date()} differ from those the previous output used"
    stored = key.get("sleeve_costs")
    if not isinstance(stored, pd.DataFrame):
        return "the previous meta/flatten output stores no sleeve costs"
    return _cost_revision(stored, cost_frame(sleeve_costs, list(map(str, meta_weights.columns)), meta_returns.index))


def carried_sleeves(stored_runs: Mapping[str, str] | None,
                    bundles: Mapping[str, tuple[str | None, str | None]] | None) -> frozenset[str]:
    """The sleeves whose weights on the previous output's rows are known to be unchanged without
    reading them: their bundle (``bundles``: sleeve -> (its run, the run whose bundle it extends))
    is the one the previous output read (``stored_runs``), or appends to it. A sleeve update
    appends new rows to the previous bundle's frames and never rewrites one
    (``storage``, ``incremental.resume``)."""
    if not stored_runs or not bundles:
        return frozenset()
    return frozenset(s for s, (run, extends) in bundles.items()
                     if stored_runs.get(s) is not None and stored_runs[s] in (run, extends))


class _Trailing(Mapping):
    """``frames`` with the carried sleeves read from ``since`` on only (``SleeveFrames.read_since``)."""

    def __init__(self, frames: Mapping[str, pd.DataFrame], carried: frozenset[str], since: pd.Timestamp) -> None:
        self._frames, self._carried, self._since = frames, carried, since

    def __getitem__(self, sleeve: str) -> pd.DataFrame:
        read_since = getattr(self._frames, "read_since", None)
        if sleeve in self._carried and read_since is not None:
            return read_since(sleeve, self._since)
        return self._frames[sleeve]

    def __iter__(self):
        return iter(self._frames)

    def __len__(self) -> int:
        return len(self._frames)


def extend_flatten(previous: Mapping[str, Any] | None, meta_weights: pd.DataFrame,
                   sleeve_weights: Mapping[str, pd.DataFrame], meta_returns: pd.DataFrame,
                   sleeve_costs: Mapping[str, pd.Series], cash_return: float | pd.Series | None = None,
                   bundles: Mapping[str, tuple[str | None, str | None]] | None = None,
                   ) -> tuple[FlattenResult, dict[str, Any], Update]:
    """meta.flatten: only the rows after the previous output's last day when every input it read
    is unchanged on its rows (meta returns, meta-weights, each sleeve's weights and costs), else
    in full. A sleeve whose bundle extends the one the previous output read (``bundles``,
    ``carried_sleeves``) is read from the previous last day on only; every other sleeve's weights
    are read whole and compared with the stored digest (a revision found while streaming restarts
    in full). Returns the result, its append key and how it was made."""
    end = meta_returns.index[-1]
    reason = _flatten_reason(previous, meta_weights, meta_returns, sleeve_costs)
    carried: frozenset[str] = frozenset()
    if reason is None:
        key = previous["append_key"]  # type: ignore[index]
        carried = carried_sleeves(key.get("sleeve_runs"), bundles)
        unknown = [s for s in map(str, meta_weights.columns) if s not in carried and not key["sleeves"].get(s)]
        if unknown:
            reason = (f"sleeve {unknown[0]!r}: its bundle does not extend the one the previous output read, and "
                      "the previous output stores no digest of its weights to compare")
    if reason is None:
        previous_end = pd.Timestamp(key["end"])
        digests = _SleeveDigests(end, previous_end, key["sleeves"], carried)
        tail = flatten_weights(meta_weights, _Trailing(sleeve_weights, carried, previous_end), meta_returns,
                               sleeve_costs, cash_return, after=previous_end, on_frame=digests)
        old_assets = previous["asset_weights"]  # type: ignore[index]
        if digests.mismatch is not None:
            reason = digests.mismatch
        elif list(tail.asset_weights.columns) != list(old_assets.columns):
            reason = "the tickers the sleeves hold changed since the previous output"
        else:
            result = FlattenResult(
                asset_weights=_append(old_assets, tail.asset_weights),
                meta_weights_daily=_append(previous["meta_weights_daily"], tail.meta_weights_daily),  # type: ignore[index]
                exposure=_append(previous["exposure"], tail.exposure),  # type: ignore[index]
            )
            read = (f"; {len(carried)} sleeve(s) extend the bundles it read: their new rows only"
                    if carried else "")
            return result, _flatten_key(meta_weights, meta_returns, sleeve_costs, digests.digests, end, bundles), \
                Update("extend", f"the previous {len(old_assets)} rows kept{read}", len(tail.asset_weights))
    digests = _SleeveDigests(end)
    result = flatten_weights(meta_weights, sleeve_weights, meta_returns, sleeve_costs, cash_return, on_frame=digests)
    return result, _flatten_key(meta_weights, meta_returns, sleeve_costs, digests.digests, end, bundles), Update(
        "full", str(reason), len(result.asset_weights))


def _append(previous: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    if not len(new):
        return previous.copy()
    out = pd.concat([previous, new.astype(previous.dtypes.to_dict())])
    out.index.name = new.index.name
    return out


def _flatten_key(meta_weights: pd.DataFrame, meta_returns: pd.DataFrame, sleeve_costs: Mapping[str, pd.Series],
                 sleeves: Mapping[str, str], end: pd.Timestamp,
                 bundles: Mapping[str, tuple[str | None, str | None]] | None = None) -> dict[str, Any]:
    """``sleeves``: the digests of the sleeves' weights that were read whole (a carried sleeve has
    none); ``sleeve_runs``: the run of each sleeve bundle read."""
    costs = cost_frame(sleeve_costs, [str(c) for c in meta_weights.columns], meta_returns.index)
    return {"sleeve_costs": costs, "version": APPEND_KEY_VERSION, "end": str(end.date()), "sleeves_order": [str(c) for c in meta_weights.columns],
            "returns_digest": frame_digest(meta_returns, end), "weights_digest": frame_digest(meta_weights, end),
            "sleeves": dict(sleeves),
            "sleeve_runs": {s: run for s, (run, _) in (bundles or {}).items() if run is not None}}
