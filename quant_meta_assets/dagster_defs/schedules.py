"""The daily schedule of `meta_full`: after the US close, on weekdays, stopped until someone turns it on.

Cron and timezone come from QUANT_META_SCHEDULE_CRON / QUANT_META_SCHEDULE_TIMEZONE (read when
the code location loads), default "30 17 * * 1-5" in America/New_York: 17:30 New York time,
after the 16:00 close and the vendors' end-of-day prints.
"""

import dagster as dg

from quant_meta_assets import settings

DAILY_SCHEDULE_NAME = "meta_full_daily"


def daily_meta_schedule() -> dg.ScheduleDefinition:
    cron, timezone = settings.schedule_cron(), settings.schedule_timezone()
    return dg.ScheduleDefinition(
        name=DAILY_SCHEDULE_NAME,
        job_name="meta_full",
        cron_schedule=cron,
        execution_timezone=timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"meta_full every trading day at '{cron}' ({timezone}); set {settings.SCHEDULE_CRON_ENV} / "
            f"{settings.SCHEDULE_TZ_ENV} to change it. Stopped by default: turn it on in the UI "
            f"(Automation, then the {DAILY_SCHEDULE_NAME} toggle) or with "
            f"`dagster schedule start {DAILY_SCHEDULE_NAME} -w workspace.yaml`; `dagster-daemon run` "
            "must be running for it to tick."
        ),
    )
