"""The daily schedule of `meta_full`: once per exchange session, after its close, stopped until
someone turns it on.

Every tick asks the exchange calendar (market_calendar.decide_tick, `exchange_calendars`) what to
do: a holiday or weekend skips with the reason ("2026-11-26 is not a session of XNYS: a holiday
(Thanksgiving)"); a session runs at the first tick QUANT_META_SCHEDULE_AFTER_CLOSE_MINUTES (90)
after its close, so the default cron "30 14,17 * * 1-5" (America/New_York) runs at 17:30 after a
16:00 close and at 14:30 after a 13:00 early close. The run carries the session as the tag
`quant_meta/session`; its `prices` step stops the run unless the price file reaches that session.

Cron, timezone, calendar and delay come from QUANT_META_SCHEDULE_CRON / _TIMEZONE / _CALENDAR /
_AFTER_CLOSE_MINUTES, read when the code location loads. QUANT_META_SCHEDULE_CALENDAR=none turns
the calendar off: every cron tick runs meta_full, without a session tag and so without the
freshness rule.
"""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
from dagster._utils.schedules import reverse_cron_string_iterator

from quant_meta_assets import settings
from quant_meta_assets.market_calendar import SESSION_TAG, decide_tick

DAILY_SCHEDULE_NAME = "meta_full_daily"
CALENDAR_TAG = "quant_meta/calendar"
NO_CALENDAR = "none"


def _previous_tick(tick: datetime, cron: str, timezone: str) -> datetime:
    """The schedule's tick before ``tick``."""
    for earlier in reverse_cron_string_iterator(tick.timestamp(), cron, timezone):
        if earlier.timestamp() < tick.timestamp():
            return earlier
    raise AssertionError("a cron schedule always has an earlier tick")


def daily_meta_schedule() -> dg.ScheduleDefinition:
    cron, timezone = settings.schedule_cron(), settings.schedule_timezone()
    calendar_name = settings.schedule_calendar()
    after_close = timedelta(minutes=settings.schedule_after_close_minutes())
    use_calendar = calendar_name.lower() != NO_CALENDAR
    # the calendar is loaded at the first tick, not here (exchange_calendars costs ~1 s of every
    # code-location load); an unknown name fails that tick with the list of choices
    rule = (
        f"once per {calendar_name} session, at the first tick of '{cron}' ({timezone}) "
        f"{after_close.seconds // 60} min after the session's close (early closes included); holidays "
        "and weekends skip with the reason. The run stops (StalePricesError) if the prices do not reach "
        "the session"
        if use_calendar else f"at every tick of '{cron}' ({timezone}), no exchange calendar"
    )

    @dg.schedule(
        name=DAILY_SCHEDULE_NAME,
        job_name="meta_full",
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"meta_full {rule}. Set {settings.SCHEDULE_CRON_ENV} / {settings.SCHEDULE_TZ_ENV} / "
            f"{settings.SCHEDULE_CALENDAR_ENV} / {settings.SCHEDULE_AFTER_CLOSE_ENV} to change it. Stopped by "
            f"default: turn it on in the UI (Automation, then the {DAILY_SCHEDULE_NAME} toggle) or with "
            f"`dagster schedule start {DAILY_SCHEDULE_NAME} -w workspace.yaml`; `dagster-daemon run` "
            "must be running for it to tick."
        ),
    )
    def meta_full_daily(context: dg.ScheduleEvaluationContext):
        if not use_calendar:
            return dg.RunRequest()
        tick = context.scheduled_execution_time
        if tick.tzinfo is None:  # build_schedule_context with a naive time: the schedule's timezone
            tick = tick.replace(tzinfo=ZoneInfo(timezone))
        decision = decide_tick(tick, calendar_name=calendar_name, after_close=after_close,
                               previous_tick=_previous_tick(tick, cron, timezone))
        if not decision.run:
            return dg.SkipReason(decision.reason)
        session = decision.session.isoformat()
        return dg.RunRequest(
            run_key=f"{calendar_name}-{session}",
            tags={SESSION_TAG: session, CALENDAR_TAG: calendar_name},
        )

    return meta_full_daily
