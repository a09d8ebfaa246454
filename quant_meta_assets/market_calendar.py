"""Exchange sessions for the daily schedule, and the freshness rule of a scheduled run.

The calendar is `exchange_calendars` (XNYS by default): its sessions, holidays and early closes
(13:00 New York on the day after Thanksgiving, Christmas Eve, ...) are maintained upstream.
Nothing here knows Dagster: the schedule (dagster_defs/schedules.py) asks `decide_tick` whether a
tick runs, and the `prices` step of a scheduled run asks `check_prices_cover` whether the price
file reaches the session the run is for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import pandas as pd

from quant_meta_assets.errors import StalePricesError

SESSION_TAG = "quant_meta/session"  # run tag of a scheduled run: the session (YYYY-MM-DD) it is for

__all__ = ["SESSION_TAG", "TickDecision", "check_prices_cover", "decide_tick", "exchange_calendar"]


@lru_cache(maxsize=8)
def exchange_calendar(name: str):
    """The exchange_calendars calendar ``name`` (XNYS, XLON, ...); ValueError naming the choices."""
    import exchange_calendars as xcals

    try:
        return xcals.get_calendar(name)
    except xcals.errors.InvalidCalendarName:
        raise ValueError(
            f"unknown exchange calendar {name!r}: use an exchange_calendars name such as XNYS, XLON, XTKS"
        ) from None


@dataclass(frozen=True)
class TickDecision:
    """What a schedule tick does: run for ``session`` or skip with ``reason``."""

    run: bool
    reason: str
    session: date | None = None
    close: datetime | None = None  # the session's close, in the exchange's timezone


def _closed_reason(calendar, day: date) -> str:
    if day.weekday() >= 5:
        return "a weekend"
    stamp = pd.Timestamp(day)
    names = calendar.regular_holidays.holidays(stamp, stamp, return_name=True) if calendar.regular_holidays else None
    if names is not None and len(names):
        return f"a holiday ({names.iloc[0]})"
    return "a holiday"


def decide_tick(
    tick: datetime, *, calendar_name: str, after_close: timedelta, previous_tick: datetime | None
) -> TickDecision:
    """Run at the first tick at least ``after_close`` after the session's close.

    ``tick`` and ``previous_tick`` (the schedule's tick before this one) are timezone-aware. The
    session is the exchange-local date of ``tick``. A tick on a non-session skips; a tick before
    close + ``after_close`` skips; a tick whose previous tick was already past that time skips
    (the earlier tick ran: an early close is served by an earlier tick of the same cron)."""
    calendar = exchange_calendar(calendar_name)
    tz = ZoneInfo(str(calendar.tz))
    local = tick.astimezone(tz)
    day = local.date()
    if not (calendar.first_session.date() <= day <= calendar.last_session.date()):
        return TickDecision(False, f"{day} is outside the {calendar_name} calendar "
                                   f"({calendar.first_session.date()}..{calendar.last_session.date()}): "
                                   "upgrade exchange_calendars")
    if not calendar.is_session(pd.Timestamp(day)):
        return TickDecision(False, f"{day} is not a session of {calendar_name}: {_closed_reason(calendar, day)}")
    close = calendar.session_close(pd.Timestamp(day)).tz_convert(tz).to_pydatetime()
    ready = close + after_close
    early = " (early close)" if close.time() < _regular_close(calendar) else ""
    when = f"{calendar_name} session {day} closes {close:%H:%M}{early} {tz.key}"
    if local < ready:
        return TickDecision(False, f"{when}: meta_full waits until {ready:%H:%M}", day, close)
    if previous_tick is not None and previous_tick.astimezone(tz) >= ready:
        return TickDecision(False, f"{when}: the tick at {previous_tick.astimezone(tz):%H:%M} already ran it",
                            day, close)
    return TickDecision(True, f"{when}: meta_full for {day}", day, close)


def _regular_close(calendar):
    return calendar.close_times[-1][1]


def check_prices_cover(last_price_day: date, session: date) -> None:
    """StalePricesError unless the prices reach ``session`` (a late vendor file would otherwise
    republish the previous day's book as the session's)."""
    if last_price_day < session:
        raise StalePricesError(f"prices end {last_price_day}, the session is {session}: the price file is "
                               f"late; nothing is computed or published for {session}")
