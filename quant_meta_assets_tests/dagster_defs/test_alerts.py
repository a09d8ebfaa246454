"""Run-failure alerts: a JSON POST to $QUANT_META_ALERT_WEBHOOK_URL, tested against a local HTTP
server on 127.0.0.1; off when the variable is unset."""

from __future__ import annotations

import socket

import dagster as dg
import pytest

from quant_meta_assets.alerts import AlertDeliveryError, failure_alert, post_json
from quant_meta_assets.dagster_defs.alerts import ALERT_SENSOR_NAME, run_failure_webhook_sensor
from quant_meta_assets_tests.dagster_defs.test_graph import FAILING
from quant_meta_assets_tests.dagster_support import materialize_all, use_registry
from quant_meta_assets_tests.webhook_server import webhook_server

pytestmark = [pytest.mark.timeout(300)]


def test_post_json_delivers_and_names_the_url_when_it_cannot():
    payload = failure_alert(job="meta_full", run_id="abc12345-0000", ui_url="http://ui:3000/",
                            failed_sleeves={"s1": "ValueError: boom"}, step_errors={})
    assert payload["run_url"] == "http://ui:3000/runs/abc12345-0000"
    assert payload["failed_sleeves"] == [{"sleeve": "s1", "error": "ValueError: boom"}]
    assert "s1" in payload["text"] and payload["run_url"] in payload["text"]
    with webhook_server() as (url, received):
        assert post_json(url, payload) == 200
    assert received == [{"content_type": "application/json", **payload}]
    with webhook_server(status=500) as (url, _), pytest.raises(AlertDeliveryError, match="HTTP 500"):
        post_json(url, payload)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/hook"
    with pytest.raises(AlertDeliveryError, match="unreachable"):
        post_json(closed, payload, timeout_s=5)
    with pytest.raises(AlertDeliveryError, match="http"):
        post_json("file:///etc/passwd", payload)


def _failure_context(instance: dg.DagsterInstance, run_id: str) -> dg.RunFailureSensorContext:
    run = instance.get_run_by_id(run_id)
    failure = next(
        e.dagster_event for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    )
    return dg.build_run_status_sensor_context(
        sensor_name=ALERT_SENSOR_NAME, dagster_event=failure, dagster_instance=instance, dagster_run=run
    ).for_run_failure()


def test_failed_run_posts_job_run_failed_sleeves_and_link(tmp_path, monkeypatch, local_ray):
    instance = dg.DagsterInstance.get()
    names = use_registry(tmp_path / "failing.yaml", FAILING, monkeypatch, instance)
    result = materialize_all(instance, names)
    assert not result.success
    monkeypatch.setenv("QUANT_META_UI_URL", "http://dagster.internal:3000")
    with webhook_server() as (url, received):
        monkeypatch.setenv("QUANT_META_ALERT_WEBHOOK_URL", url)
        sensor = run_failure_webhook_sensor()
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        sensor(_failure_context(instance, result.run_id))
    assert len(received) == 1
    alert = received[0]
    assert alert["job"] == result.dagster_run.job_name and alert["run_id"] == result.run_id
    assert alert["run_url"] == f"http://dagster.internal:3000/runs/{result.run_id}"
    sleeves = {s["sleeve"]: s["error"] for s in alert["failed_sleeves"]}
    assert list(sleeves) == ["broken_sleeve"]
    assert "ValueError: boom from the strategy" in sleeves["broken_sleeve"]
    assert "sleeves_all_sleeves_succeeded" in {s["step"] for s in alert["failed_steps"]}

    # off when unset: stopped by default, and a forced evaluation sends nothing
    monkeypatch.delenv("QUANT_META_ALERT_WEBHOOK_URL")
    with webhook_server() as (_url, received):
        sensor = run_failure_webhook_sensor()
        assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
        outcome = sensor(_failure_context(instance, result.run_id))
    assert received == []
    assert isinstance(outcome, dg.SkipReason) and "unset" in outcome.skip_message
