"""Print the summary of a run from the Dagster instance: ``make run`` calls it after the job.

    python -m quant_meta_assets.dagster_defs.run_summary [--job meta_full] [--run-id ID] [--since EPOCH_S]

It reads the run's own events ($DAGSTER_HOME): its status, the failed sleeves from the sleeve
materializations and the blocking check (``alerts.failed_sleeves_of_run``), the failed steps, and
the ``meta/report`` materialization's report, whose ``summary.json`` holds the headline numbers.
The ``meta/published`` materialization says whether the set was published (and if not, why). A
published run's report is copied to ``reports/latest/report.html`` under the storage root.
Exit status: 0 when the run succeeded, 1 otherwise (also when no run matches).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import dagster as dg

from quant_meta_assets import settings
from quant_meta_assets.dagster_defs.alerts import failed_sleeves_of_run
from quant_meta_assets.run_summary import RunSummary, format_summary, latest_report_path, update_latest_report

REPORT_KEY = dg.AssetKey(["meta", "report"])  # = meta_assets.REPORT_KEY (not imported: it loads every asset)
PUBLISHED_KEY = dg.AssetKey(["meta", "published"])  # = dagster_defs.publishing.PUBLISHED_KEY


def _report_of_run(instance: dg.DagsterInstance, run_id: str) -> tuple[Path | None, dict]:
    """The run's report.html and its summary.json (empty when the run stored no report)."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        if materialization is None or materialization.asset_key != REPORT_KEY:
            continue
        path = materialization.metadata.get("report_path")
        html = Path(str(getattr(path, "value", path))) if path is not None else None
        summary = html.with_name("summary.json") if html is not None else None
        data = json.loads(summary.read_text()) if summary is not None and summary.is_file() else {}
        return html, data
    return None, {}


def _publication_of_run(instance: dg.DagsterInstance, run_id: str) -> dict | None:
    """The run's meta/published metadata as plain values (None when the run has no such step)."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        if materialization is not None and materialization.asset_key == PUBLISHED_KEY:
            return {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
    return None


MAX_CAUSE_LINES = 20


def _cause(error) -> str:
    """The user-facing cause of a step failure: below Dagster's step-execution wrapper, with the
    exception's class name instead of its module path (``RegistryError: registry file ...``)."""
    while error.cause is not None and error.cls_name in ("DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError"):
        error = error.cause
    lines = (error.message or "").strip().splitlines() or [error.cls_name or "step failed"]
    head, sep, rest = lines[0].partition(": ")
    if sep and head.split(".")[-1] == error.cls_name:
        lines[0] = f"{error.cls_name}: {rest}"
    if len(lines) > MAX_CAUSE_LINES:
        lines = [*lines[:MAX_CAUSE_LINES], f"... ({len(lines) - MAX_CAUSE_LINES} more lines in the run's log)"]
    return "\n".join(lines)


def step_causes_of_run(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Step key -> the cause of its failure, from the run's STEP_FAILURE events."""
    causes = {}
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        error = event.step_failure_data.error if event and event.step_failure_data else None
        causes[event.step_key or "?"] = _cause(error) if error is not None else "step failed"
    return causes


def summarize_run(instance: dg.DagsterInstance, run_id: str, storage_root: Path | None = None) -> RunSummary:
    run = instance.get_run_by_id(run_id)
    if run is None:
        raise ValueError(f"no run {run_id!r} in the instance at $DAGSTER_HOME")
    stats = instance.get_run_stats(run_id)
    seconds = stats.end_time - stats.start_time if stats.start_time and stats.end_time else None
    root = Path(storage_root or settings.storage_root()).resolve()
    html, data = _report_of_run(instance, run_id)
    latest = latest_report_path(root)
    succeeded = run.status == dg.DagsterRunStatus.SUCCESS
    publication = _publication_of_run(instance, run_id)
    if succeeded and publication and publication.get("published") and html is not None and html.is_file():
        latest = update_latest_report(root, html)  # "latest" is the published report, never a refused one
    return RunSummary(
        job=run.job_name,
        run_id=run_id,
        status=run.status.value,
        seconds=seconds,
        failed_sleeves=failed_sleeves_of_run(instance, run_id),
        step_errors={} if succeeded else step_causes_of_run(instance, run_id),
        metrics=data.get("metrics", {}),
        benchmark_label=(data.get("benchmark") or {}).get("label"),
        period=(data["start"][:10], data["end"][:10]) if data.get("start") and data.get("end") else None,
        report_html=str(html.resolve()) if html is not None else None,
        latest_html=str(latest.resolve()) if latest.is_file() else None,
        publication=publication,
    )


def latest_run_id(instance: dg.DagsterInstance, job: str, since: float | None = None) -> str | None:
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=job, created_after=_utc(since) if since is not None else None), limit=1
    )
    return records[0].dagster_run.run_id if records else None


def _utc(epoch_s: float):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(epoch_s, tz=timezone.utc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print the summary of a run of this code location.")
    parser.add_argument("--job", default="meta_full", help="the latest run of this job (default meta_full)")
    parser.add_argument("--run-id", help="this run instead of the latest")
    parser.add_argument("--since", type=float, help="only a run created after this Unix time (what make run passes)")
    args = parser.parse_args(argv)
    with dg.DagsterInstance.get() as instance:
        run_id = args.run_id or latest_run_id(instance, args.job, args.since)
        if run_id is None:
            print(f"No {args.job} run was started: the error above is the cause." if args.since is not None
                  else f"No {args.job} run in the instance at $DAGSTER_HOME yet: `make run` starts one.", flush=True)
            return 1
        summary = summarize_run(instance, run_id)
    print("\n".join(format_summary(summary)), flush=True)
    return 0 if summary.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
