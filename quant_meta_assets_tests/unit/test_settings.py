"""settings: every numeric environment variable is parsed by one rule and a bad value names itself."""

import pytest

from quant_meta_assets import settings


@pytest.mark.parametrize(
    ("env", "read", "value", "message"),
    [
        (settings.KEEP_RUNS_ENV, settings.keep_runs, "abc", "must be a whole number of runs >= 1, got 'abc'"),
        (settings.KEEP_RUNS_ENV, settings.keep_runs, "0", "must be a whole number of runs >= 1, got '0'"),
        (settings.RAY_QUEUE_TIMEOUT_ENV, settings.ray_queue_timeout_s, "0", "must be seconds > 0, got '0'"),
        (settings.RAY_MAX_IN_FLIGHT_ENV, settings.ray_max_in_flight, "1.5", "must be a whole number of tasks >= 1"),
        (settings.SCHEDULE_AFTER_CLOSE_ENV, settings.schedule_after_close_minutes, "-5", "must be whole minutes >= 0"),
        (settings.ALERT_BACKOFF_ENV, settings.alert_backoff_s, "soon", "must be a number >= 0, got 'soon'"),
    ],
)
def test_a_bad_value_names_the_variable_the_rule_and_the_value(monkeypatch, env, read, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValueError, match=f"^{env} {message}"):
        read()


def test_unset_or_empty_is_the_default_and_a_good_value_is_parsed(monkeypatch):
    monkeypatch.setenv(settings.KEEP_RUNS_ENV, "")
    assert settings.keep_runs() == settings.DEFAULT_KEEP_RUNS
    monkeypatch.setenv(settings.KEEP_RUNS_ENV, "7")
    monkeypatch.setenv(settings.RAY_QUEUE_TIMEOUT_ENV, "2.5")
    monkeypatch.delenv(settings.RAY_MAX_IN_FLIGHT_ENV, raising=False)
    assert (settings.keep_runs(), settings.ray_queue_timeout_s(), settings.ray_max_in_flight()) == (7, 2.5, None)
