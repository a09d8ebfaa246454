"""The daily schedule of meta_full: once per exchange session (exchange_calendars, XNYS by
default) after its close, early closes included; holidays skip with the reason; a scheduled run
stops with StalePricesError, publishes nothing and alerts when the prices miss its session."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg
import pandas as pd
import pytest
from dagster._utils.schedules import cron_string_iterator

from quant_meta_assets.dagster_defs.schedules import DAILY_SCHEDULE_NAME, daily_meta_schedule
from quant_meta_assets.market_calendar import SESSION_TAG, exchange_calendar

pytestmark = [pytest.mark.timeout(300)]
NY = ZoneInfo("America/New_York")


def _next_ticks(schedule: dg.ScheduleDefinition, after: datetime, n: int) -> list[datetime]:
    ticks = cron_string_iterator(after.timestamp(), schedule.cron_schedule, schedule.execution_timezone)
    return [next(ticks) for _ in range(n)]


def _tick(schedule: dg.ScheduleDefinition, when: datetime):
    """The schedule's evaluation at ``when``: (run requests, skip message)."""
    data = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=when))
    return list(data.run_requests or []), data.skip_message


@pytest.fixture
def default_schedule(monkeypatch) -> dg.ScheduleDefinition:
    for name in ("CRON", "TIMEZONE", "CALENDAR", "AFTER_CLOSE_MINUTES"):
        monkeypatch.delenv(f"QUANT_META_SCHEDULE_{name}", raising=False)
    return daily_meta_schedule()


def test_default_ticks_on_weekdays_after_the_close_and_is_stopped(default_schedule):
    schedule = default_schedule
    assert schedule.job_name == "meta_full"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert f"dagster schedule start {DAILY_SCHEDULE_NAME}" in schedule.description
    assert "dagster-daemon run" in schedule.description and "XNYS" in schedule.description
    ticks = _next_ticks(schedule, datetime(2026, 11, 27, 12, 0, tzinfo=NY), 3)
    assert [t.astimezone(NY).strftime("%a %H:%M") for t in ticks] == ["Fri 14:30", "Fri 17:30", "Mon 14:30"]


def test_ticks_on_a_session_thanksgiving_and_the_early_close(default_schedule):
    runs, skip = _tick(default_schedule, datetime(2026, 11, 25, 14, 30, tzinfo=NY))
    assert runs == [] and skip == "XNYS session 2026-11-25 closes 16:00 America/New_York: meta_full waits until 17:30"
    runs, skip = _tick(default_schedule, datetime(2026, 11, 25, 17, 30, tzinfo=NY))
    assert [r.tags[SESSION_TAG] for r in runs] == ["2026-11-25"] and runs[0].run_key == "XNYS-2026-11-25"
    for hour in (14, 17):  # Thanksgiving: both ticks skip, naming the holiday
        runs, skip = _tick(default_schedule, datetime(2026, 11, 26, hour, 30, tzinfo=NY))
        assert runs == [] and skip == "2026-11-26 is not a session of XNYS: a holiday (Thanksgiving)"
    # the day after: 13:00 early close, so the 14:30 tick runs and the 17:30 one does not run it again
    runs, skip = _tick(default_schedule, datetime(2026, 11, 27, 14, 30, tzinfo=NY))
    assert [r.tags[SESSION_TAG] for r in runs] == ["2026-11-27"]
    runs, skip = _tick(default_schedule, datetime(2026, 11, 27, 17, 30, tzinfo=NY))
    assert runs == [] and "closes 13:00 (early close)" in skip and "the tick at 14:30 already ran it" in skip
    runs, skip = _tick(default_schedule, datetime(2026, 12, 25, 17, 30, tzinfo=NY))
    assert runs == [] and skip == "2026-12-25 is not a session of XNYS: a holiday (Christmas)"
    # a naive time (the UI's "test schedule" passes the schedule's own zone) is read in America/New_York
    runs, _ = _tick(default_schedule, datetime(2026, 11, 25, 17, 30))
    assert [r.tags[SESSION_TAG] for r in runs] == ["2026-11-25"]


def test_cron_timezone_calendar_and_delay_are_settable(monkeypatch):
    monkeypatch.setenv("QUANT_META_SCHEDULE_CRON", "0 18 * * 1-5")
    monkeypatch.setenv("QUANT_META_SCHEDULE_TIMEZONE", "Europe/London")
    monkeypatch.setenv("QUANT_META_SCHEDULE_CALENDAR", "XLON")
    monkeypatch.setenv("QUANT_META_SCHEDULE_AFTER_CLOSE_MINUTES", "60")
    schedule = daily_meta_schedule()
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 18 * * 1-5", "Europe/London")
    assert "0 18 * * 1-5" in schedule.description and "XLON" in schedule.description
    london = ZoneInfo("Europe/London")
    runs, _ = _tick(schedule, datetime(2026, 11, 26, 18, 0, tzinfo=london))  # Thanksgiving trades in London
    assert [r.tags[SESSION_TAG] for r in runs] == ["2026-11-26"]
    runs, skip = _tick(schedule, datetime(2026, 12, 28, 18, 0, tzinfo=london))
    assert runs == [] and "not a session of XLON" in skip
    monkeypatch.setenv("QUANT_META_SCHEDULE_AFTER_CLOSE_MINUTES", "150")  # 16:30 close + 150 min > 18:00
    runs, skip = _tick(daily_meta_schedule(), datetime(2026, 11, 26, 18, 0, tzinfo=london))
    assert runs == [] and "waits until 19:00" in skip


def test_no_calendar_runs_every_tick_without_a_session(monkeypatch):
    monkeypatch.setenv("QUANT_META_SCHEDULE_CALENDAR", "none")
    runs, _ = _tick(daily_meta_schedule(), datetime(2026, 11, 26, 17, 30, tzinfo=NY))
    assert len(runs) == 1 and SESSION_TAG not in runs[0].tags


def test_a_bad_cron_fails_when_the_code_location_loads_and_a_bad_calendar_at_its_tick(monkeypatch):
    monkeypatch.setenv("QUANT_META_SCHEDULE_CRON", "every day at five")
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="every day at five"):
        daily_meta_schedule()
    monkeypatch.delenv("QUANT_META_SCHEDULE_CRON")
    monkeypatch.setenv("QUANT_META_SCHEDULE_CALENDAR", "NYSEE")
    schedule = daily_meta_schedule()  # loading stays cheap: exchange_calendars is read at the tick
    with pytest.raises(dg.DagsterUserCodeExecutionError) as raised:  # the tick fails, naming the choices
        _tick(schedule, datetime(2026, 11, 25, 17, 30, tzinfo=NY))
    assert "unknown exchange calendar 'NYSEE': use an exchange_calendars name such as XNYS" in str(raised.value.__cause__)


def test_schedule_is_in_the_code_location_and_requests_meta_full():
    from quant_meta_assets.dagster_defs.definitions import defs

    schedule = defs.resolve_schedule_def(DAILY_SCHEDULE_NAME)
    assert schedule.job_name == "meta_full"
    requests, _ = _tick(schedule, datetime(2026, 11, 25, 17, 30, tzinfo=NY))
    assert len(requests) == 1


def _prices_ending(path, last_session: str):
    """A price file of the bundled S&P 500 closes laid on the XNYS sessions up to ``last_session``."""
    from skfolio.datasets import load_sp500_dataset

    closes = load_sp500_dataset().iloc[-300:, :8]
    sessions = exchange_calendar("XNYS").sessions_window(pd.Timestamp(last_session), -len(closes))
    closes.index = pd.DatetimeIndex(sessions, name="date")
    closes.reset_index().to_csv(path, index=False)
    return path


def test_a_scheduled_run_on_late_prices_stops_publishes_nothing_and_alerts(tmp_path, monkeypatch, default_schedule):
    from quant_meta_assets.dagster_defs.alerts import run_failure_webhook_sensor
    from quant_meta_assets.dagster_defs.definitions import defs
    from quant_meta_assets.settings import storage_root
    from quant_meta_assets_tests.dagster_support import META_DIRS, meta_materialization_count, step_failures
    from quant_meta_assets_tests.webhook_server import webhook_server

    instance = dg.DagsterInstance.get()
    monkeypatch.setenv("QUANT_META_PRICES", str(_prices_ending(tmp_path / "late.csv", "2026-11-24")))
    (request,), _ = _tick(default_schedule, datetime(2026, 11, 25, 17, 30, tzinfo=NY))

    with webhook_server() as (url, received):
        monkeypatch.setenv("QUANT_META_ALERT_WEBHOOK_URL", url)
        sensor = run_failure_webhook_sensor()
        context = dg.build_sensor_context(instance=instance)
        sensor(context)
        result = defs.resolve_job_def("meta_full").execute_in_process(
            instance=instance, tags=request.tags, raise_on_error=False)
        assert not result.success
        sensor(dg.build_sensor_context(instance=instance, cursor=context.cursor))
    failures = step_failures(result)
    assert list(failures) == ["prices"]
    assert "StalePricesError" in failures["prices"]
    assert "prices end 2026-11-24, the session is 2026-11-25" in failures["prices"]
    assert "nothing is computed or published for 2026-11-25" in failures["prices"]
    assert meta_materialization_count(instance) == 0
    assert not (storage_root() / "published.json").exists()
    assert not any((storage_root() / d).exists() for d in META_DIRS)
    assert [a["run_id"] for a in received] == [result.run_id]
    assert received[0]["root_cause"].startswith("StalePricesError: prices end 2026-11-24, the session is 2026-11-25")

    # the same file with the session's prices passes the rule; an untagged run (make run) is never checked
    monkeypatch.setenv("QUANT_META_PRICES", str(_prices_ending(tmp_path / "on_time.csv", "2026-11-25")))
    assert dg.materialize([defs.resolve_assets_def("prices")], instance=instance, tags=request.tags).success
    monkeypatch.setenv("QUANT_META_PRICES", str(tmp_path / "late.csv"))
    assert dg.materialize([defs.resolve_assets_def("prices")], instance=instance).success
