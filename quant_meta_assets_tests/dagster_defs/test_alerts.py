"""Run-failure alerts: a JSON POST to $QUANT_META_ALERT_WEBHOOK_URL, tested against a local HTTP
server on 127.0.0.1; off when the variable is unset. Delivery is retried across sensor ticks while
the webhook is down, each run is alerted once, and the alert names the root cause."""

from __future__ import annotations

import dagster as dg
import pytest

from quant_meta_assets.alerts import AlertDeliveryError, AlertQueue, failure_alert, post_json
from quant_meta_assets.dagster_defs.alerts import run_failure_webhook_sensor
from quant_meta_assets_tests.dagster_defs.test_graph import FAILING, GOOD
from quant_meta_assets_tests.dagster_support import materialize_all, use_registry
from quant_meta_assets_tests.webhook_server import closed_port, webhook_server

pytestmark = [pytest.mark.timeout(300)]


def test_post_json_delivers_and_names_the_url_when_it_cannot():
    payload = failure_alert(job="meta_full", run_id="abc12345-0000", ui_url="http://ui:3000/",
                            failed_sleeves={"s1": "ValueError: boom"}, step_errors={})
    assert payload["run_url"] == "http://ui:3000/runs/abc12345-0000"
    assert payload["failed_sleeves"] == [{"sleeve": "s1", "error": "ValueError: boom"}]
    assert "s1" in payload["text"] and payload["run_url"] in payload["text"]
    assert payload["root_cause"] == "ValueError: boom" and "ValueError: boom" in payload["text"]
    with webhook_server() as (url, received):
        assert post_json(url, payload) == 200
    assert received == [{"content_type": "application/json", **payload}]
    with webhook_server(status=500) as (url, _), pytest.raises(AlertDeliveryError, match="HTTP 500"):
        post_json(url, payload)
    closed = f"http://127.0.0.1:{closed_port()}/hook"
    with pytest.raises(AlertDeliveryError, match="unreachable"):
        post_json(closed, payload, timeout_s=5)
    with pytest.raises(AlertDeliveryError, match="http"):
        post_json("file:///etc/passwd", payload)


def _tick(instance: dg.DagsterInstance, cursor: str | None) -> tuple[object, str | None]:
    """One evaluation of the sensor as the daemon runs it: the outcome and the cursor it stores."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor)
    outcome = run_failure_webhook_sensor()(context)
    return outcome, context.cursor


def _failed_run_without_a_step(instance: dg.DagsterInstance, message: str) -> str:
    """A run that fails outside any step (as run monitoring or a vanished run worker fails one)."""

    @dg.op
    def noop():
        return None

    @dg.job(name="meta_full")
    def job():
        noop()

    run = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
    instance.report_run_failed(run, message=message)
    return run.run_id


def test_alert_is_retried_while_the_webhook_is_down_and_delivered_once(tmp_path, monkeypatch, local_ray):
    instance = dg.DagsterInstance.get()
    port = closed_port()
    monkeypatch.setenv("QUANT_META_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{port}/hook")
    monkeypatch.setenv("QUANT_META_UI_URL", "http://dagster.internal:3000")
    monkeypatch.setenv("QUANT_META_ALERT_BACKOFF_S", "0")  # every tick may retry
    assert run_failure_webhook_sensor().default_status == dg.DefaultSensorStatus.RUNNING
    outcome, cursor = _tick(instance, None)  # turned on: watches failures from now on
    assert "watching" in outcome.skip_message

    names = use_registry(tmp_path / "failing.yaml", FAILING, monkeypatch, instance)
    result = materialize_all(instance, names)
    assert not result.success

    for attempt in (1, 2):  # the webhook is down for two ticks: the run stays pending
        outcome, cursor = _tick(instance, cursor)
        assert "1 to retry" in outcome.skip_message, outcome.skip_message
        pending = AlertQueue.from_cursor(cursor).pending
        assert list(pending) == [result.run_id] and pending[result.run_id].attempts == attempt
        assert "Connection refused" in pending[result.run_id].last_error
    with webhook_server(port=port) as (_url, received):
        outcome, cursor = _tick(instance, cursor)
        assert outcome.skip_message.startswith("1 alert(s) delivered")
        outcome, cursor = _tick(instance, cursor)  # delivered runs are never sent again
        assert outcome.skip_message == "0 alert(s) delivered"
    assert len(received) == 1
    alert = received[0]
    assert alert["job"] == result.dagster_run.job_name and alert["run_id"] == result.run_id
    assert alert["run_url"] == f"http://dagster.internal:3000/runs/{result.run_id}"
    sleeves = {s["sleeve"]: s["error"] for s in alert["failed_sleeves"]}
    assert list(sleeves) == ["broken_sleeve"]
    assert "ValueError: boom from the strategy" in sleeves["broken_sleeve"]
    assert "ValueError: boom from the strategy" in alert["root_cause"] and alert["root_cause"] in alert["text"]
    assert "sleeves_all_sleeves_succeeded" in {s["step"] for s in alert["failed_steps"]}
    assert AlertQueue.from_cursor(cursor).pending == {}

    # off when unset: stopped by default, and a forced evaluation sends nothing
    monkeypatch.delenv("QUANT_META_ALERT_WEBHOOK_URL")
    with webhook_server() as (_url, received):
        assert run_failure_webhook_sensor().default_status == dg.DefaultSensorStatus.STOPPED
        outcome, _ = _tick(instance, None)
    assert received == []
    assert isinstance(outcome, dg.SkipReason) and "unset" in outcome.skip_message


def test_the_alert_names_the_innermost_error_not_the_step_wrapper(tmp_path, monkeypatch, local_ray):
    instance = dg.DagsterInstance.get()
    monkeypatch.setenv("QUANT_META_ALERT_BACKOFF_S", "0")
    with webhook_server() as (url, received):
        monkeypatch.setenv("QUANT_META_ALERT_WEBHOOK_URL", url)
        _, cursor = _tick(instance, None)
        registry = tmp_path / "sleeves.yaml"
        names = use_registry(registry, GOOD, monkeypatch, instance)
        registry.write_text(registry.read_text() + "  - name: late\n    strategy: equal_weight\n    weight_cap: 3\n")
        result = materialize_all(instance, names)
        assert not result.success
        _tick(instance, cursor)
    assert len(received) == 1, received
    alert = received[0]
    assert alert["root_cause"].startswith("RegistryError: "), alert
    assert alert["root_cause"].startswith("RegistryError: registry file '")
    assert "sleeves.yaml', sleeve 'late' (line 12): unknown key(s) ['weight_cap']" in alert["root_cause"]
    assert "Error occurred while executing" not in alert["text"]
    assert f"at sleeves: {alert['root_cause']}" in alert["text"]


def test_a_run_failed_outside_any_step_sends_its_failure_message_and_gives_up_after_the_bound(monkeypatch):
    instance = dg.DagsterInstance.get()
    port = closed_port()
    monkeypatch.setenv("QUANT_META_ALERT_WEBHOOK_URL", f"http://127.0.0.1:{port}/hook")
    monkeypatch.setenv("QUANT_META_ALERT_BACKOFF_S", "0")
    monkeypatch.setenv("QUANT_META_ALERT_MAX_ATTEMPTS", "2")
    _, cursor = _tick(instance, None)
    lost = _failed_run_without_a_step(instance, "run worker gone: process 4242 is not running")
    outcome, cursor = _tick(instance, cursor)
    assert "1 to retry" in outcome.skip_message
    outcome, cursor = _tick(instance, cursor)  # the second failed attempt reaches the bound
    assert f"1 UNDELIVERED, given up ({lost[:8]})" in outcome.skip_message
    with webhook_server(port=port) as (_url, received):
        outcome, cursor = _tick(instance, cursor)  # a given-up alert is not sent later
        assert received == []
        monkeypatch.setenv("QUANT_META_ALERT_MAX_ATTEMPTS", "10")
        second = _failed_run_without_a_step(instance, "run worker gone: process 4343 is not running")
        outcome, cursor = _tick(instance, cursor)
    assert [a["run_id"] for a in received] == [second]
    alert = received[0]
    assert alert["failed_steps"] == [] and alert["failed_sleeves"] == []
    assert "process 4343 is not running" in alert["run_failure"]
    assert alert["root_cause"] == alert["run_failure"]
    assert "failed: " in alert["text"] and "process 4343 is not running" in alert["text"]
