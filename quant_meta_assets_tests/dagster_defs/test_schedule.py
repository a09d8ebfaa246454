"""The daily schedule of meta_full: after the US close on weekdays, env-configurable, stopped by default."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from quant_meta_assets.dagster_defs.schedules import DAILY_SCHEDULE_NAME, daily_meta_schedule


def _next_ticks(schedule: dg.ScheduleDefinition, after: datetime, n: int) -> list[datetime]:
    ticks = cron_string_iterator(after.timestamp(), schedule.cron_schedule, schedule.execution_timezone)
    return [next(ticks) for _ in range(n)]


def test_default_is_weekdays_after_the_us_close_and_stopped(monkeypatch):
    monkeypatch.delenv("QUANT_META_SCHEDULE_CRON", raising=False)
    monkeypatch.delenv("QUANT_META_SCHEDULE_TIMEZONE", raising=False)
    schedule = daily_meta_schedule()
    assert schedule.job_name == "meta_full"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert f"dagster schedule start {DAILY_SCHEDULE_NAME}" in schedule.description
    assert "dagster-daemon run" in schedule.description
    ny = ZoneInfo("America/New_York")
    friday_noon = datetime(2026, 11, 27, 12, 0, tzinfo=ny)
    ticks = _next_ticks(schedule, friday_noon, 2)
    assert [t.astimezone(ny).strftime("%a %H:%M") for t in ticks] == ["Fri 17:30", "Mon 17:30"]
    # 17:30 New York is after the 16:00 close in summer and in winter time alike
    summer = _next_ticks(schedule, datetime(2026, 7, 1, 12, 0, tzinfo=ny), 1)[0]
    assert summer.astimezone(ZoneInfo("UTC")).hour == 21 and ticks[0].astimezone(ZoneInfo("UTC")).hour == 22


def test_cron_and_timezone_from_env(monkeypatch):
    monkeypatch.setenv("QUANT_META_SCHEDULE_CRON", "0 18 * * 1-5")
    monkeypatch.setenv("QUANT_META_SCHEDULE_TIMEZONE", "Europe/London")
    schedule = daily_meta_schedule()
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 18 * * 1-5", "Europe/London")
    assert "0 18 * * 1-5" in schedule.description


def test_a_bad_cron_fails_when_the_code_location_loads(monkeypatch):
    monkeypatch.setenv("QUANT_META_SCHEDULE_CRON", "every day at five")
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="every day at five"):
        daily_meta_schedule()


def test_schedule_is_in_the_code_location_and_requests_meta_full():
    from quant_meta_assets.dagster_defs.definitions import defs

    schedule = defs.resolve_schedule_def(DAILY_SCHEDULE_NAME)
    assert schedule.job_name == "meta_full"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 27, 17, 30))
    requests = schedule.evaluate_tick(context).run_requests
    assert len(requests) == 1
