"""The run-failure sensor that sends an alert to $QUANT_META_ALERT_WEBHOOK_URL.

Off when the variable is unset: the sensor then starts stopped and, if turned on anyway, skips.
It runs in `dagster-daemon run` and covers every failed run of the instance (meta_full, the
sensors' sleeves_job and meta_job, runs launched from the UI or the CLI).

Like Dagster's `run_failure_sensor` (and dagster-slack's `make_slack_on_run_failure_sensor`, which
builds on it) it reads the instance's RUN_FAILURE events after a storage-id cursor, starting from
the newest one when it is first turned on. Unlike it, a delivery that fails does not move past the
run: the cursor (`alerts.AlertQueue`) keeps the run pending and the next ticks retry it with
backoff, up to $QUANT_META_ALERT_MAX_ATTEMPTS attempts, after which the alert is logged as
undelivered on the tick. Delivered runs are remembered, so no run is alerted twice.
"""

import time

import dagster as dg

from quant_meta_assets import settings
from quant_meta_assets.alerts import AlertDeliveryError, AlertQueue, failure_alert, post_json, root_cause_text
from quant_meta_assets.dagster_defs.instance_queries import SLEEVES_KEY

ALERT_SENSOR_NAME = "run_failure_webhook"
FETCH_LIMIT = 200


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


def error_chain(error) -> list[tuple[str, str]]:
    """[(class name, message)] of a SerializableErrorInfo and its ``raise ... from`` causes, outermost first."""
    chain = []
    while error is not None and len(chain) < 50:
        chain.append((error.cls_name or "Error", error.message or ""))
        error = error.cause
    return chain


def step_errors_of_run(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Failed step -> its root cause, ``Type: message`` of the innermost error (not Dagster's
    "Error occurred while executing op" wrapper); a dg.Failure adds its description."""
    errors = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        data = event.step_failure_data if event else None
        cause = root_cause_text(error_chain(data.error if data else None)) or "step failed"
        description = data.user_failure_data.description if data and data.user_failure_data else None
        if description and description not in cause:
            cause = f"{cause} ({description})"
        errors[(event.step_key if event else None) or "?"] = cause
    return errors


def run_failure_of_run(instance: dg.DagsterInstance, run_id: str) -> str:
    """The run's own failure: the RUN_FAILURE event's message and, if it carries one, its error's root cause."""
    entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    if not entries:
        return ""
    event = entries[-1].dagster_event
    message = (event.message or "").strip() if event else ""
    data = event.event_specific_data if event else None
    cause = root_cause_text(error_chain(getattr(data, "error", None)))
    return f"{message} {cause}".strip() if cause and cause not in message else message


def alert_for_run(instance: dg.DagsterInstance, run_id: str) -> dict:
    run = instance.get_run_by_id(run_id)
    return failure_alert(
        job=run.job_name if run else "?",
        run_id=run_id,
        ui_url=settings.ui_url(),
        failed_sleeves=failed_sleeves_of_run(instance, run_id),
        step_errors=step_errors_of_run(instance, run_id),
        run_failure=run_failure_of_run(instance, run_id),
    )


def _new_failures(context: dg.SensorEvaluationContext, queue: AlertQueue) -> list[str]:
    """Queue the runs whose RUN_FAILURE event is after the cursor; the run ids newly queued."""
    added = []
    while True:
        records = context.instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(
                event_type=dg.DagsterEventType.RUN_FAILURE, after_storage_id=queue.after_storage_id
            ),
            limit=FETCH_LIMIT,
            ascending=True,
        ).records
        for record in records:
            queue.after_storage_id = record.storage_id
            if queue.add(record.event_log_entry.run_id):
                added.append(record.event_log_entry.run_id)
        if len(records) < FETCH_LIMIT:
            return added


def run_failure_webhook_sensor() -> dg.SensorDefinition:
    """Built when the code location loads: running by default only if the webhook URL is set."""
    enabled = settings.alert_webhook_url() is not None

    @dg.sensor(
        name=ALERT_SENSOR_NAME,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING if enabled else dg.DefaultSensorStatus.STOPPED,
        description=f"POSTs a JSON alert (job, run id, root cause, failed sleeves and their errors, link to the "
        f"run) to ${settings.ALERT_WEBHOOK_ENV} when a run fails, retrying an undelivered alert on later "
        f"ticks with backoff (${settings.ALERT_BACKOFF_ENV}, ${settings.ALERT_MAX_ATTEMPTS_ENV}); links use "
        f"${settings.UI_URL_ENV} (default {settings.DEFAULT_UI_URL}). Off while ${settings.ALERT_WEBHOOK_ENV} "
        "is unset.",
    )
    def run_failure_webhook(context: dg.SensorEvaluationContext):
        url = settings.alert_webhook_url()
        if url is None:
            return dg.SkipReason(f"{settings.ALERT_WEBHOOK_ENV} is unset: alerts are off")
        queue = AlertQueue.from_cursor(context.cursor)
        if queue.after_storage_id is None:  # first tick: failures from now on, as run_failure_sensor does
            latest = context.instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=1).records
            queue.after_storage_id = latest[0].storage_id if latest else -1
            context.update_cursor(queue.to_cursor())
            return dg.SkipReason(f"watching run failures after event {queue.after_storage_id}")
        _new_failures(context, queue)
        max_attempts, backoff = settings.alert_max_attempts(), settings.alert_backoff_s()
        sent, retrying, given_up = [], [], []
        for pending in queue.due():
            run_id = pending.run_id
            try:
                post_json(url, alert_for_run(context.instance, run_id))
            except AlertDeliveryError as exc:
                if queue.attempt_failed(run_id, str(exc), max_attempts=max_attempts, backoff_s=backoff,
                                        max_backoff_s=settings.ALERT_MAX_BACKOFF_S):
                    given_up.append(run_id)
                    context.log.error(f"alert for failed run {run_id} UNDELIVERED after {max_attempts} attempt(s), "
                                      f"given up: {exc}")
                else:
                    retrying.append(run_id)
                    context.log.warning(f"alert for failed run {run_id} not delivered (attempt "
                                        f"{queue.pending[run_id].attempts}/{max_attempts}), next try after "
                                        f"{time.strftime('%H:%M:%S', time.gmtime(queue.pending[run_id].next_try))} "
                                        f"UTC: {exc}")
                break  # the webhook is failing: the other due alerts wait for the next tick, uncounted
            else:
                queue.delivered_ok(run_id)
                sent.append(run_id)
                context.log.info(f"alert for failed run {run_id} delivered")
        context.update_cursor(queue.to_cursor())
        parts = [f"{len(sent)} alert(s) delivered"]
        if retrying:
            parts.append(f"{len(retrying)} to retry ({', '.join(r[:8] for r in retrying)})")
        if given_up:
            parts.append(f"{len(given_up)} UNDELIVERED, given up ({', '.join(r[:8] for r in given_up)})")
        waiting = len(queue.pending) - len(retrying)
        if waiting:
            parts.append(f"{waiting} waiting for the next try")
        return dg.SkipReason("; ".join(parts))

    return run_failure_webhook
