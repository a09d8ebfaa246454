"""The environment variables the project reads, in one place, with their defaults."""

from __future__ import annotations

import os
from pathlib import Path

PRICES_ENV = "QUANT_META_PRICES"  # CSV/Parquet of daily adjusted closes; unset = skfolio's S&P 500
SLEEVES_ENV = "QUANT_META_SLEEVES"  # sleeve registry YAML; unset = the bundled data/sleeves.yaml
STORAGE_ENV = "QUANT_META_STORAGE"  # root of every stored output (Parquet/JSON/HTML)
RAY_ADDRESS_ENV = "RAY_ADDRESS"  # an existing Ray cluster; unset = a local Ray started on demand
RAY_NUM_CPUS_ENV = "QUANT_META_RAY_NUM_CPUS"  # CPUs of the local Ray; unset = all cores
RAY_RUNTIME_ENV_ENV = "QUANT_META_RAY_RUNTIME_ENV"  # JSON/YAML runtime_env merged in on a cluster
RISK_FREE_RATE_ENV = "QUANT_META_RISK_FREE_RATE"  # annual decimal; unset = 0 (see rates.py)
COSTS_FILE_ENV = "QUANT_META_COSTS"  # CSV: ticker, half_spread_bps, borrow_bps, adv (costs/cost_model.py)
BORROW_BPS_ENV = "QUANT_META_BORROW_BPS"  # default borrow fee on shorts, bps/yr; unset = 0
FUNDING_SPREAD_BPS_ENV = "QUANT_META_FUNDING_SPREAD_BPS"  # spread over rf on borrowed cash, bps/yr; unset = 0
RAY_MAX_IN_FLIGHT_ENV = "QUANT_META_RAY_MAX_IN_FLIGHT"  # sleeve tasks in flight; unset = the CPUs free at start
RAY_QUEUE_TIMEOUT_ENV = "QUANT_META_RAY_QUEUE_TIMEOUT_S"  # tasks waiting and none running: give up after
DEFAULT_RAY_QUEUE_TIMEOUT_S = 1800.0

DEFAULT_STORAGE_DIRNAME = ".quant_meta_storage"


def env_number(env: str, default, kind: type, *, minimum: int, strict: bool = False, unit: str = "a number"):
    """``kind(os.environ[env])``, or ``default`` when unset/empty; a ValueError naming the variable,
    the rule and the value when it does not parse or is below ``minimum`` (``strict``: at or below)."""
    value = os.environ.get(env)
    if not value:
        return default
    message = f"{env} must be {unit} {'>' if strict else '>='} {minimum}, got {value!r}"
    try:
        number = kind(value)
    except ValueError:
        raise ValueError(message) from None
    if number < minimum or (strict and number == minimum):
        raise ValueError(message)
    return number


def storage_root() -> Path:
    """Where outputs go: $QUANT_META_STORAGE, else $DAGSTER_HOME/storage/quant_meta, else ./.quant_meta_storage."""
    explicit = os.environ.get(STORAGE_ENV)
    if explicit:
        return Path(explicit)
    dagster_home = os.environ.get("DAGSTER_HOME")
    if dagster_home:
        return Path(dagster_home) / "storage" / "quant_meta"
    return Path(DEFAULT_STORAGE_DIRNAME)


def ray_address() -> str | None:
    """The address of an existing Ray cluster, or None for a local one."""
    return os.environ.get(RAY_ADDRESS_ENV) or None


def local_ray_num_cpus() -> int | None:
    value = os.environ.get(RAY_NUM_CPUS_ENV)
    return int(value) if value else None


def ray_max_in_flight() -> int | None:
    return env_number(RAY_MAX_IN_FLIGHT_ENV, None, int, minimum=1, unit="a whole number of tasks")


def ray_queue_timeout_s() -> float:
    return env_number(RAY_QUEUE_TIMEOUT_ENV, DEFAULT_RAY_QUEUE_TIMEOUT_S, float, minimum=0, strict=True, unit="seconds")


def ray_runtime_env_file() -> str | None:
    """A JSON/YAML runtime_env (pip, env_vars, container, ...) merged into the cluster's, or None."""
    return os.environ.get(RAY_RUNTIME_ENV_ENV) or None


# --- deployment (issue 10): schedule, alerts, retention
SCHEDULE_CRON_ENV = "QUANT_META_SCHEDULE_CRON"  # cron of the daily meta_full schedule
SCHEDULE_TZ_ENV = "QUANT_META_SCHEDULE_TIMEZONE"  # its IANA timezone
SCHEDULE_CALENDAR_ENV = "QUANT_META_SCHEDULE_CALENDAR"  # exchange_calendars name whose sessions it runs for
SCHEDULE_AFTER_CLOSE_ENV = "QUANT_META_SCHEDULE_AFTER_CLOSE_MINUTES"  # run this long after the session's close
# 14:30 and 17:30 on weekdays: each session runs at the first tick 90 minutes after its close
# (17:30 after the regular 16:00 close, 14:30 after a 13:00 early close); other ticks skip
DEFAULT_SCHEDULE_CRON = "30 14,17 * * 1-5"
DEFAULT_SCHEDULE_TZ = "America/New_York"
DEFAULT_SCHEDULE_CALENDAR = "XNYS"
DEFAULT_SCHEDULE_AFTER_CLOSE_MINUTES = 90
ALERT_WEBHOOK_ENV = "QUANT_META_ALERT_WEBHOOK_URL"  # run-failure alerts POST JSON here; unset = off
ALERT_MAX_ATTEMPTS_ENV = "QUANT_META_ALERT_MAX_ATTEMPTS"  # deliveries tried per alert before it is given up
DEFAULT_ALERT_MAX_ATTEMPTS = 10
ALERT_BACKOFF_ENV = "QUANT_META_ALERT_BACKOFF_S"  # wait after the first failed delivery; doubles each time
DEFAULT_ALERT_BACKOFF_S = 30.0
ALERT_MAX_BACKOFF_S = 3600.0  # the backoff never exceeds an hour
UI_URL_ENV = "QUANT_META_UI_URL"  # the webserver's address, for links in alerts
DEFAULT_UI_URL = "http://127.0.0.1:3000"
KEEP_RUNS_ENV = "QUANT_META_KEEP_RUNS"  # run-scoped outputs (bundles, reports) of the last N runs are kept
DEFAULT_KEEP_RUNS = 30


def schedule_cron() -> str:
    return os.environ.get(SCHEDULE_CRON_ENV) or DEFAULT_SCHEDULE_CRON


def schedule_timezone() -> str:
    return os.environ.get(SCHEDULE_TZ_ENV) or DEFAULT_SCHEDULE_TZ


def schedule_calendar() -> str:
    return os.environ.get(SCHEDULE_CALENDAR_ENV) or DEFAULT_SCHEDULE_CALENDAR


def schedule_after_close_minutes() -> int:
    return env_number(SCHEDULE_AFTER_CLOSE_ENV, DEFAULT_SCHEDULE_AFTER_CLOSE_MINUTES, int, minimum=0, unit="whole minutes")


def alert_webhook_url() -> str | None:
    return os.environ.get(ALERT_WEBHOOK_ENV) or None


def alert_max_attempts() -> int:
    """Deliveries tried per alert (QUANT_META_ALERT_MAX_ATTEMPTS, default 10), at least 1."""
    return max(1, int(env_number(ALERT_MAX_ATTEMPTS_ENV, DEFAULT_ALERT_MAX_ATTEMPTS, int, minimum=0)))


def alert_backoff_s() -> float:
    """Seconds before the first retry (QUANT_META_ALERT_BACKOFF_S, default 30); doubles per retry."""
    return float(env_number(ALERT_BACKOFF_ENV, DEFAULT_ALERT_BACKOFF_S, float, minimum=0))


def ui_url() -> str:
    return (os.environ.get(UI_URL_ENV) or DEFAULT_UI_URL).rstrip("/")


def keep_runs() -> int:
    """N of QUANT_META_KEEP_RUNS (default 30); at least 1, so the latest outputs always stay."""
    return env_number(KEEP_RUNS_ENV, DEFAULT_KEEP_RUNS, int, minimum=1, unit="a whole number of runs")
