"""Benchmark of the report at book scale: bytes and time to open in headless Chromium (a script, not a test).

Run from the repository root (needs Debian's chromium and chromium-driver, as the browser test):

    .venv/bin/python bench/bench_report_scale.py                 # 6, 200 and 1,000 sleeves
    .venv/bin/python bench/bench_report_scale.py --sleeves 200
    .venv/bin/python bench/bench_report_scale.py --open path/to/report.html ...   # existing reports

Data: the synthetic book of the report tests (``quant_meta_assets_tests/unit/report/book.py``):
seeded fixed-weight baskets of the bundled tickers, month-end rebalanced, with seeded Dirichlet
meta-weights, over 1990-2022 (about 8,000 live days). For each size it prints the report's bytes
(against the 8 MB ceiling and plotly.js's own share), the build time, and the time from
``driver.get`` until every plot has drawn its SVG, the same way the browser test waits.
The build time includes computing every table on the full data.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests package (book generator)

CEILING = 8 * 1024 * 1024


def open_seconds(path: Path, n_figures: int) -> tuple[float, int]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        drv.get("about:blank")
        t0 = time.perf_counter()
        drv.get(path.resolve().as_uri())
        from quant_meta_assets_tests.integration.test_report_browser import PLOTS_DRAWN_JS

        while drv.execute_script(PLOTS_DRAWN_JS) < n_figures:  # every plot has drawn its SVG
            if time.perf_counter() - t0 > 60:
                break
            time.sleep(0.02)
        dt = time.perf_counter() - t0
        severe = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
        return dt, len(severe)
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    import warnings

    from quant_meta_assets.report import build_report
    from quant_meta_assets_tests.unit.report.book import make_book_inputs

    ap = argparse.ArgumentParser()
    ap.add_argument("--sleeves", type=int, nargs="*", default=[6, 200, 1000])
    ap.add_argument("--start", default="1990-01-01")
    ap.add_argument("--open", type=Path, nargs="*", default=[],
                    help="existing report.html files (e.g. of bench_scale runs) to time in Chromium instead")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.open:
        print("| report | MB | figures | open in Chromium (s) | JS errors |")
        print("|---|---:|---:|---:|---:|")
        for path in args.open:
            n_figures = path.read_text(encoding="utf-8").count("Plotly.newPlot(")
            open_s, errors = open_seconds(path, n_figures)
            print(f"| {path.name} | {path.stat().st_size / 1e6:.2f} | {n_figures} | {open_s:.2f} | {errors} |")
        return
    import plotly.offline

    plotly_js = len(plotly.offline.get_plotlyjs())
    rows = []
    for n in args.sleeves:
        inputs = make_book_inputs(n, start=args.start)
        out = Path(tempfile.mkdtemp(prefix=f"report-{n}-"))
        t0 = time.perf_counter()
        report = build_report(**inputs, output_dir=out)
        build_s = time.perf_counter() - t0
        path = Path(report["html"])
        size = path.stat().st_size
        open_s, errors = open_seconds(path, len(report["figures"]))
        rows.append((n, len(report["meta_returns"]), size, build_s, open_s, errors))
        shutil.rmtree(out, ignore_errors=True)
    print(f"plotly.js embedded: {plotly_js / 1e6:.2f} MB; ceiling {CEILING / 1e6:.2f} MB")
    print()
    print("| sleeves | live days | report MB | of ceiling | build (s) | open in Chromium (s) | JS errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n, days, size, build_s, open_s, errors in rows:
        print(f"| {n} | {days:,} | {size / 1e6:.2f} | {size / CEILING:.0%} | {build_s:.1f} | {open_s:.2f} | {errors} |")


if __name__ == "__main__":
    main()
