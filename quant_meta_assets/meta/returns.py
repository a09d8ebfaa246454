"""meta.returns: one date x sleeve frame of the sleeves' daily net returns.

Alignment policy ("common start"): sleeves start at different dates (a 12-1 momentum sleeve
needs a year of history, equal weight needs a day). The frame starts on the first date on
which *every* sleeve is live, so the optimizer never sees a sleeve that did not exist yet.
After that date a missing return is a data error, not something to fill.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd

from quant_meta_assets.errors import SleeveFailureError, StageInputError


def failed_sleeves(records: Iterable[Mapping]) -> list[Mapping]:
    """The records whose status is not "success" (failed, errored, timed out, crashed)."""
    return [r for r in records if r.get("status") != "success"]


def describe_failures(records: Iterable[Mapping]) -> str:
    """One line per failed sleeve, `name: error`, for error messages and check descriptions."""
    return "\n".join(f"- {r.get('sleeve')}: {r.get('error') or 'status ' + repr(r.get('status'))}" for r in records)


def aggregate_returns(records: Iterable[Mapping]) -> pd.DataFrame:
    """Align the sleeves' daily returns on their common live period.

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
    start = max(live_from.values())
    live_to = {name: s.last_valid_index() for name, s in frame.items()}
    end = min(live_to.values())
    if start > end:
        latest = max(live_from, key=live_from.get)
        earliest_end = min(live_to, key=live_to.get)
        raise StageInputError(
            "sleeves have no overlapping dates: "
            f"{latest!r} starts {start.date()} but {earliest_end!r} ends {end.date()}"
        )
    common = frame.loc[start:end]
    holes = common.isna()
    if holes.to_numpy().any():
        sleeve = holes.any().idxmax()
        date = holes[sleeve].idxmax()
        raise StageInputError(
            f"sleeve {sleeve!r} has a missing return on {date.date()} inside the common period "
            f"{start.date()}..{end.date()}"
        )
    return common
