"""The few lines a person reads at the end of a run: how it ended, each failed sleeve and why,
the headline numbers against the benchmark, and where the report is.

Pure formatting over plain values; ``dagster_defs/run_summary.py`` reads them from the run's own
events in the Dagster instance and prints them (``make run`` calls it after the job). On failure
the cause is printed last, so it is the last thing on the screen.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

LATEST_DIRNAME = "latest"  # reports/latest/report.html: the report of the latest succeeded run
HEADLINE_ROWS = ("meta", "benchmark")  # the netted book, then the benchmark
_ENDED = {"FAILURE": "FAILED", "CANCELED": "was canceled", "CANCELING": "was canceled"}

__all__ = ["RunSummary", "format_summary", "latest_report_path", "update_latest_report"]


@dataclass(frozen=True)
class RunSummary:
    job: str
    run_id: str
    status: str  # Dagster's run status: SUCCESS, FAILURE, CANCELED, ...
    seconds: float | None = None
    failed_sleeves: Mapping[str, str] = field(default_factory=dict)
    step_errors: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # summary.json "metrics"
    period: tuple[str, str] | None = None
    report_html: str | None = None
    latest_html: str | None = None
    publication: Mapping[str, object] | None = None  # the run's meta/published metadata (published, reason, ...)
    benchmark_label: str | None = None  # summary.json "benchmark" label, e.g. "S&P 500 (price index)"

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCESS"


def _pct(value: object) -> str:
    return f"{value * 100:.2f}%" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _num(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) and math.isfinite(value) else "n/a"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f" in {seconds:.0f} s" if seconds < 120 else f" in {seconds / 60:.1f} min"


def _publication_lines(publication: Mapping[str, object] | None) -> list[str]:
    """Whether the run's set became what consumers read (a succeeded run may be refused: older)."""
    if publication is None:
        return ["Not published: this job has no publication step (meta_full and meta_job publish)."]
    if publication.get("published"):
        return [f"Published generation {publication.get('generation')}: prices as of {publication.get('as_of')}; "
                "this is what read_published() returns now."]
    return [f"NOT published: {str(publication.get('reason', 'no reason recorded')).removeprefix('not published: ')}"]


def format_summary(summary: RunSummary) -> list[str]:
    """The summary's lines; on failure the cause comes last."""
    lines = []
    if summary.succeeded:
        lines.append(f"{summary.job} run {summary.run_id} succeeded{_duration(summary.seconds)}.")
        lines += _publication_lines(summary.publication)
        rows = [r for r in HEADLINE_ROWS if r in summary.metrics]
        if rows:
            period = f" {summary.period[0]} to {summary.period[1]}" if summary.period else ""
            lines.append(f"Headline{period}, annualised over 252 days:")
            labels = {"meta": "meta (netted book)", "benchmark": f"benchmark {summary.benchmark_label or ''}".strip()}
            width = max(len(labels[r]) for r in rows)
            for r in rows:
                m = summary.metrics[r]
                lines.append(
                    f"  {labels[r]:<{width}}  CAGR {_pct(m.get('cagr')):>7}  Sharpe {_num(m.get('sharpe')):>5}"
                    f"  max drawdown {_pct(m.get('max_drawdown')):>8}"
                )
            if "benchmark" not in rows:
                lines.append("  no benchmark: set QUANT_META_BENCHMARK to an index file (the bundled prices "
                             "come with the S&P 500)")
        if summary.report_html:
            lines.append(f"Report: {summary.report_html}")
        if summary.latest_html:
            lines.append(f"Latest: {summary.latest_html}  (make report prints it again)")
        return lines

    ended = _ENDED.get(summary.status, f"ended {summary.status}")
    lines.append(f"{summary.job} run {summary.run_id} {ended}{_duration(summary.seconds)}: "
                 "no meta output was published; the previous report stays.")
    if summary.latest_html:
        lines.append(f"Previous report: {summary.latest_html}")
    sleeves = dict(summary.failed_sleeves)
    # the check's and the gate's step failures only repeat the sleeves' errors: name the step, not the text
    for step, error in summary.step_errors.items():
        lines.append(f"Failed step {step}: " + ("see the sleeves below" if sleeves else error))
    if sleeves:
        lines.append(f"{len(sleeves)} failed sleeve{'s' if len(sleeves) > 1 else ''}:")
        lines += [f"  {name}: {error}" for name, error in sleeves.items()]
    elif not summary.step_errors:
        lines.append(f"No step failed: the run ended {summary.status} (interrupted or canceled).")
    return lines


def latest_report_path(storage_root: Path | str) -> Path:
    return Path(storage_root) / "reports" / LATEST_DIRNAME / "report.html"


def update_latest_report(storage_root: Path | str, report_html: Path | str) -> Path:
    """Copy a succeeded run's report to ``reports/latest/report.html`` (atomically: temp + os.replace)."""
    target = latest_report_path(storage_root)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".report-", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(report_html, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
