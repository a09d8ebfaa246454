"""run_summary: the lines printed at the end of a run (pure formatting) and reports/latest."""

from __future__ import annotations

from quant_meta_assets.run_summary import RunSummary, format_summary, latest_report_path, update_latest_report

METRICS = {
    "meta": {"cagr": 0.1403, "sharpe": 0.955, "max_drawdown": -0.3687},
    "benchmark": {"cagr": 0.0739, "sharpe": 0.48, "max_drawdown": -0.5678},
    "momentum_12_1": {"cagr": 0.2, "sharpe": 0.9, "max_drawdown": -0.5},
}


def test_success_names_headline_against_benchmark_and_the_report_last() -> None:
    lines = format_summary(RunSummary(
        job="meta_full", run_id="r1", status="SUCCESS", seconds=29.4, metrics=METRICS,
        period=("1991-12-31", "2022-12-28"), report_html="/s/reports/r1/report.html",
        latest_html="/s/reports/latest/report.html",
        publication={"published": True, "generation": 3, "as_of": "2022-12-28"},
        benchmark_label="S&P 500 (price index)",
    ))
    assert lines[0] == "meta_full run r1 succeeded in 29 s."
    assert lines[1] == ("Published generation 3: prices as of 2022-12-28; this is what read_published() returns now.")
    assert "1991-12-31 to 2022-12-28" in lines[2]
    meta, bench = lines[3], lines[4]
    assert meta.split()[:3] == ["meta", "(netted", "book)"] and "14.03%" in meta and "0.95" in meta and "-36.87%" in meta
    assert "S&P 500 (price index)" in bench and "7.39%" in bench and "0.48" in bench and "-56.78%" in bench
    assert not any("momentum_12_1" in line for line in lines)  # headline only: the book and the benchmark
    assert lines[-2] == "Report: /s/reports/r1/report.html"
    assert lines[-1].startswith("Latest: /s/reports/latest/report.html")


def test_failure_prints_each_failed_sleeve_and_its_cause_last() -> None:
    lines = format_summary(RunSummary(
        job="meta_full", run_id="r2", status="FAILURE", seconds=150.0,
        failed_sleeves={"a": "ValueError: boom", "b": "SleeveTimeout: sleeve 'b' timed out after 5 s"},
        step_errors={"sleeves_all_sleeves_succeeded": "1 blocking asset check failed"},
        latest_html="/s/reports/latest/report.html",
    ))
    assert lines[0].startswith("meta_full run r2 FAILED in 2.5 min")
    assert "Previous report: /s/reports/latest/report.html" in lines
    assert lines[-3:] == ["2 failed sleeves:", "  a: ValueError: boom", "  b: SleeveTimeout: sleeve 'b' timed out after 5 s"]


def test_failure_without_sleeves_ends_on_the_step_error() -> None:
    lines = format_summary(RunSummary(job="meta_full", run_id="r3", status="FAILURE",
                                      step_errors={"meta__optimize": "OptimizationError: 2020-01-31: every attempt failed"}))
    assert lines[-1] == "Failed step meta__optimize: OptimizationError: 2020-01-31: every attempt failed"
    canceled = format_summary(RunSummary(job="meta_full", run_id="r4", status="CANCELED"))
    assert "was canceled" in canceled[0] and "No step failed" in canceled[-1]


def test_nan_metrics_read_n_a() -> None:
    lines = format_summary(RunSummary(job="meta_full", run_id="r5", status="SUCCESS",
                                      metrics={"meta": {"cagr": float("nan"), "sharpe": None}}))
    assert "CAGR     n/a" in lines[3] and "Sharpe   n/a" in lines[3]
    assert "no benchmark" in lines[4]


def test_a_succeeded_run_that_was_not_published_says_so_second() -> None:
    refused = {"published": False, "reason": "not published: as_of 2022-12-27 is older than the published 2022-12-28"}
    lines = format_summary(RunSummary(job="meta_full", run_id="r6", status="SUCCESS", publication=refused))
    assert lines[1] == "NOT published: as_of 2022-12-27 is older than the published 2022-12-28"
    lines = format_summary(RunSummary(job="sleeves_job", run_id="r7", status="SUCCESS"))
    assert lines[1].startswith("Not published: this job has no publication step")


def test_update_latest_report_replaces_the_copy(tmp_path) -> None:
    first, second = tmp_path / "r1.html", tmp_path / "r2.html"
    first.write_text("one")
    second.write_text("two")
    root = tmp_path / "storage"
    assert update_latest_report(root, first) == latest_report_path(root) == root / "reports" / "latest" / "report.html"
    update_latest_report(root, second)
    assert latest_report_path(root).read_text() == "two"
    assert [p.name for p in latest_report_path(root).parent.iterdir()] == ["report.html"]  # no temp file left

