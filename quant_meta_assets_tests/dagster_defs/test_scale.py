"""A scaled-down book (200 sleeves x 50 tickers x 1,260 days) through the real CLI, real Dagster
and a real local Ray (2 CPUs): driver memory stays bounded, the check and the sensors query the
instance in bulk, and the report stays under its size ceiling. Timings live in bench/bench_scale.py.

Memory: the peak RSS of the `dagster job execute` process (the driver: in-process executor) for
the 200-sleeve book may exceed the same run's peak for an 8-sleeve book by at most half of what
every sleeve's daily weights take in float64. The data flow before streaming held every sleeve's
weights at least once in the sleeves step (and again in each meta step that reloaded them), so
it needs more than the whole amount on top of the small book: this check fails for it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import pytest
import yaml

from quant_meta_assets_tests.conftest import REPO_ROOT
from quant_meta_assets_tests.integration.test_report_browser import driver, wait_for_plots  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

N_SLEEVES, N_TICKERS, N_DAYS, N_SMALL = 200, 50, 1260, 8
REPORT_CEILING_BYTES = 8_000_000

RUN_CLI = """
import atexit, resource, sys
atexit.register(lambda: sys.stderr.write(f"QM_MAXRSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n"))
from dagster._cli import main
sys.argv = ["dagster", "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full", "-c", sys.argv[1]]
main()
"""


def _book(tmp_path: Path, n_sleeves: int) -> tuple[Path, Path, int]:
    """Prices file, registry file, and the bytes of every sleeve's daily weights in float64."""
    from quant_meta_assets.synthetic_book import book_registry, factor_prices

    prices = tmp_path / "prices.parquet"
    if not prices.exists():
        factor_prices(N_TICKERS, N_DAYS, seed=3).to_parquet(prices)
    registry = tmp_path / f"registry_{n_sleeves}.yaml"
    registry.write_text(book_registry(n_sleeves, [f"T{i:04d}" for i in range(N_TICKERS)], seed=3))
    entries = yaml.safe_load(registry.read_text())["sleeves"]
    weights_bytes = sum(len(e.get("universe") or range(N_TICKERS)) for e in entries) * (N_DAYS - 1) * 8
    return prices, registry, weights_bytes


def _meta_full(home: Path, prices: Path, registry: Path, config: Path) -> int:
    """Run meta_full in a fresh process; its peak RSS in bytes."""
    env = {**os.environ, "DAGSTER_HOME": str(home), "QUANT_META_STORAGE": str(home / "storage"),
           "QUANT_META_PRICES": str(prices), "QUANT_META_SLEEVES": str(registry),
           "QUANT_META_RAY_NUM_CPUS": "2", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(RUN_CLI), str(config)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = [x for x in proc.stderr.splitlines() if x.startswith("QM_MAXRSS_KB ")][-1]
    return int(line.split()[1]) * 1024


def _fresh_home(tmp_path: Path, name: str) -> Path:
    home = tmp_path / name
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    return home


class CountingEventStorage:
    """Counts the reads made into the instance's event-log storage from outside it (``get_*``,
    ``fetch_*``, ``all_*``): the queries; connection plumbing and nested calls are not counted."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.calls: list[str] = []
        self._depth = 0
        storage = instance.event_log_storage
        for name in dir(type(storage)):
            if name.startswith("_") or not callable(getattr(storage, name, None)):
                continue
            setattr(storage, name, self._wrap(name, getattr(storage, name)))

    def _wrap(self, name, method):
        def counted(*args, **kwargs):
            if self._depth == 0 and name.startswith(("get_", "fetch_", "all_")):
                self.calls.append(name)
            self._depth += 1
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1

        return counted


def test_a_200_sleeve_book_runs_with_bounded_memory_bulk_queries_and_a_small_report(tmp_path, monkeypatch, driver):
    config = tmp_path / "run.yaml"  # the data flow is under test, not the optimizer: a cheap method
    config.write_text("ops:\n  meta__optimize:\n    config:\n      method: inverse_vol\n")
    prices, small_registry, _ = _book(tmp_path, N_SMALL)
    _, registry, weights_bytes = _book(tmp_path, N_SLEEVES)

    small_peak = _meta_full(_fresh_home(tmp_path, "home_small"), prices, small_registry, config)
    home = _fresh_home(tmp_path, "home")
    peak = _meta_full(home, prices, registry, config)
    assert weights_bytes > 90e6  # the book is big enough for the bound to mean something
    assert peak - small_peak <= 0.5 * weights_bytes, (
        f"driver peak RSS {peak / 1e6:.0f} MB vs {small_peak / 1e6:.0f} MB for {N_SMALL} sleeves: "
        f"{(peak - small_peak) / 1e6:.0f} MB more, ceiling {0.5 * weights_bytes / 1e6:.0f} MB "
        f"(half of all sleeves' weights, {weights_bytes / 1e6:.0f} MB)"
    )

    # every sleeve stored once, one materialization each; the report exists and is small
    storage = home / "storage"
    stored = [p for run in (storage / "runs").iterdir() if (run / "sleeves").is_dir()
              for p in (run / "sleeves").iterdir() if not p.name.startswith(".")]
    assert len(stored) == N_SLEEVES
    reports = list((storage / "reports").rglob("report.html"))
    assert len(reports) == 1
    assert reports[0].stat().st_size <= REPORT_CEILING_BYTES, f"report.html is {reports[0].stat().st_size:,} bytes"
    _opens_in_chromium(driver, reports[0])

    # the check's and the sensors' instance queries do not grow with the number of sleeves
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("QUANT_META_STORAGE", str(storage))
    monkeypatch.setenv("QUANT_META_PRICES", str(prices))
    monkeypatch.setenv("QUANT_META_SLEEVES", str(registry))
    from quant_meta_assets.dagster_defs.instance_queries import sleeve_statuses
    from quant_meta_assets.dagster_defs.sensors import meta_on_fresh_sleeves, sleeve_registry_sensor
    from quant_meta_assets.sleeves.registry import load_registry

    with dg.DagsterInstance.get() as instance:
        counter = CountingEventStorage(instance)
        statuses = sleeve_statuses(instance, load_registry())  # what the blocking check asks
        check_calls = list(counter.calls)
        assert len(statuses) == N_SLEEVES and all(s.ok for s in statuses)
        # meta/optimize's UI metadata: every weight in one table, plottable entries for the largest only
        optimized = instance.fetch_materializations(dg.AssetKey(["meta", "optimize"]), limit=1).records[0]
        entries = [k for k in optimized.asset_materialization.metadata if k.startswith("weight/")]
        assert len(entries) == 50 and "latest_weights" in optimized.asset_materialization.metadata
        assert 1 <= len(check_calls) <= 6, check_calls

        for sensor in (meta_on_fresh_sleeves, sleeve_registry_sensor):
            counter.calls.clear()
            sensor(dg.build_sensor_context(instance=instance))
            assert 1 <= len(counter.calls) <= 12, (sensor.name, counter.calls)


def _opens_in_chromium(driver, path: Path) -> None:  # noqa: F811 (the fixture's name)
    """The run's own report in headless Chromium: every plot drawn, no JavaScript error."""
    from selenium.webdriver.common.by import By

    expected = path.read_text(encoding="utf-8").count("Plotly.newPlot(")
    assert expected >= 5
    driver.get(path.resolve().as_uri())
    assert wait_for_plots(driver, expected) == expected == len(driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"))
    assert driver.execute_script("return document.getElementById('fig-cumulative').data.length") >= 3
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, f"JavaScript errors in the report: {severe}"
