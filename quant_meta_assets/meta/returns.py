"""meta.returns: one date x sleeve frame of the sleeves' daily net returns.

Alignment policy ("sleeves come and go"): sleeves start at different dates (a 12-1 momentum
sleeve needs a year of history, equal weight needs a day) and may stop before the others. The
frame is the outer join of the sleeves' live spans: it starts on the first date on which *any*
sleeve is live and ends on the last date on which any sleeve is live; a sleeve is NaN before its
first live day and after its last one. A late sleeve therefore never shortens the book's history:
the optimizer holds it at exactly 0 until it has a full window of live rows. A NaN *inside* a
sleeve's live span (between its first and last live day) is a data error naming the sleeve and
the date, never something to fill. What the meta does with a sleeve that stops is in
``meta.drift`` (its capital goes to cash at its last live day).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from quant_meta_assets.errors import SleeveFailureError, StageInputError


def failed_sleeves(records: Iterable[Mapping]) -> list[Mapping]:
    """The records whose status is not "success" (failed, errored, timed out, crashed)."""
    return [r for r in records if r.get("status") != "success"]


def describe_failures(records: Iterable[Mapping]) -> str:
    """One line per failed sleeve, `name: error`, for error messages and check descriptions."""
    return "\n".join(f"- {r.get('sleeve')}: {r.get('error') or 'status ' + repr(r.get('status'))}" for r in records)


def aggregate_returns(records: Iterable[Mapping]) -> pd.DataFrame:
    """The sleeves' daily returns, outer-joined on their live spans (NaN where a sleeve is not live).

    Raises SleeveFailureError when any sleeve is not successful: the meta-portfolio is never
    built on a partial set of sleeves.
    """
    records = list(records)
    if not records:
        raise StageInputError("meta.returns needs at least one sleeve result; got none")
    failed = failed_sleeves(records)
    if failed:
        raise SleeveFailureError(
            f"{len(failed)} of {len(records)} sleeves failed; meta.returns refuses a partial set:\n"
            + describe_failures(failed)
        )
    series = {}
    for record in records:
        returns = record.get("returns")
        name = record["sleeve"]
        if not isinstance(returns, pd.Series):
            raise StageInputError(f"sleeve {name!r} has status success but no returns series")
        if name in series:
            raise StageInputError(f"sleeve {name!r} appears twice in the sleeve results")
        series[name] = returns.astype(float)
    frame = pd.DataFrame(series)
    frame.index.name = "date"
    live_from = {name: s.first_valid_index() for name, s in frame.items()}
    never_live = [name for name, first in live_from.items() if first is None]
    if never_live:
        raise StageInputError(f"sleeves with no live returns at all: {never_live}")
    live_to = {name: s.last_valid_index() for name, s in frame.items()}
    frame = frame.loc[min(live_from.values()):max(live_to.values())]
    values = frame.to_numpy()
    rows = np.arange(len(frame))[:, None]
    first = frame.index.get_indexer(list(live_from.values()))
    last = frame.index.get_indexer(list(live_to.values()))
    holes = np.isnan(values) & (rows >= first) & (rows <= last)
    if holes.any():
        col = int(np.flatnonzero(holes.any(axis=0))[0])
        row = int(np.flatnonzero(holes[:, col])[0])
        name = frame.columns[col]
        raise StageInputError(
            f"sleeve {name!r} has a missing return on {frame.index[row].date()} inside its live span "
            f"{live_from[name].date()}..{live_to[name].date()} ({int(holes[:, col].sum())} such day(s))"
        )
    return frame
