"""The run-failure sensor that sends an alert to $QUANT_META_ALERT_WEBHOOK_URL.

Off when the variable is unset: the sensor then starts stopped and, if turned on anyway, skips.
It runs in `dagster-daemon run` and covers every job of this code location (meta_full, the
sensors' sleeves_job and meta_job).
"""

import dagster as dg

from quant_meta_assets import settings
from quant_meta_assets.alerts import failure_alert, post_json
from quant_meta_assets.dagster_defs.instance_queries import SLEEVES_KEY

ALERT_SENSOR_NAME = "run_failure_webhook"


def failed_sleeves_of_run(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Sleeve -> error, from the run's own events: sleeve partitions stored with status error, and
    the blocking check's per-sleeve errors (which also names sleeves never materialized)."""
    failed: dict[str, str] = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        if materialization is None or materialization.asset_key != SLEEVES_KEY:
            continue
        metadata = materialization.metadata
        status = metadata.get("status")
        if status is not None and getattr(status, "value", status) != "success":
            error = metadata.get("error")
            failed[str(materialization.partition)] = str(getattr(error, "value", error) or f"status {status}")
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.asset_check_evaluation_data if entry.dagster_event else None
        if evaluation is None or evaluation.passed:
            continue
        for key, value in evaluation.metadata.items():
            if key.startswith("error/"):
                failed.setdefault(key.split("/", 1)[1], str(getattr(value, "value", value)))
    return failed


def step_errors_of_run(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    errors = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        error = event.step_failure_data.error if event and event.step_failure_data else None
        lines = error.message.strip().splitlines() if error is not None and error.message else []
        errors[event.step_key or "?"] = lines[0][:500] if lines else "step failed"
    return errors


def run_failure_webhook_sensor() -> dg.SensorDefinition:
    """Built when the code location loads: running by default only if the webhook URL is set."""
    enabled = settings.alert_webhook_url() is not None

    @dg.run_failure_sensor(
        name=ALERT_SENSOR_NAME,
        default_status=dg.DefaultSensorStatus.RUNNING if enabled else dg.DefaultSensorStatus.STOPPED,
        description=f"POSTs a JSON alert (job, run id, failed sleeves and their errors, link to the run) to "
        f"${settings.ALERT_WEBHOOK_ENV} when a run fails; links use ${settings.UI_URL_ENV} "
        f"(default {settings.DEFAULT_UI_URL}). Off while ${settings.ALERT_WEBHOOK_ENV} is unset.",
    )
    def run_failure_webhook(context: dg.RunFailureSensorContext):
        url = settings.alert_webhook_url()
        if url is None:
            return dg.SkipReason(f"{settings.ALERT_WEBHOOK_ENV} is unset: alerts are off")
        run = context.dagster_run
        payload = failure_alert(
            job=run.job_name,
            run_id=run.run_id,
            ui_url=settings.ui_url(),
            failed_sleeves=failed_sleeves_of_run(context.instance, run.run_id),
            step_errors=step_errors_of_run(context.instance, run.run_id),
        )
        post_json(url, payload)
        return None

    return run_failure_webhook
