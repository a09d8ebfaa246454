"""The benchmark: a total-return file is accepted, its kind is stated near the report's top (issue 18 item 8)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.benchmark import (
    BENCHMARK_ENV,
    BENCHMARK_KIND_ENV,
    BENCHMARK_NAME_ENV,
    Benchmark,
    as_benchmark,
    load_benchmark,
)
from quant_meta_assets.errors import PriceDataError
from quant_meta_assets.settings import PRICES_ENV

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def clean_env(monkeypatch):
    for var in (BENCHMARK_ENV, BENCHMARK_KIND_ENV, BENCHMARK_NAME_ENV, PRICES_ENV):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _write_levels(path, columns=("MSCI_TR",)):
    dates = pd.bdate_range("2020-01-01", periods=30)
    frame = pd.DataFrame({c: 100 * np.cumprod(1 + np.linspace(-0.01, 0.01, 30) + i * 1e-3)
                          for i, c in enumerate(columns)}, index=dates)
    frame.index.name = "date"
    frame.to_csv(path)
    return frame


def test_default_is_the_bundled_sp500_price_index(clean_env):
    bench = load_benchmark()
    assert bench.name == "S&P 500" and not bench.total_return and bench.label == "S&P 500 (price index)"
    assert bench.levels.index.is_monotonic_increasing and bench.levels.notna().all()


def test_a_user_price_file_has_no_benchmark_unless_one_is_given(clean_env, tmp_path):
    _write_levels(tmp_path / "prices.csv", ("A", "B"))
    clean_env.setenv(PRICES_ENV, str(tmp_path / "prices.csv"))
    assert load_benchmark() is None


def test_a_total_return_file_is_read_with_its_kind_and_name(clean_env, tmp_path):
    frame = _write_levels(tmp_path / "tr.csv")
    clean_env.setenv(BENCHMARK_ENV, str(tmp_path / "tr.csv"))
    clean_env.setenv(BENCHMARK_KIND_ENV, "total_return")
    bench = load_benchmark()
    assert bench.total_return and bench.name == "MSCI_TR" and bench.label == "MSCI_TR (total return)"
    np.testing.assert_allclose(bench.levels.to_numpy(), frame["MSCI_TR"].to_numpy(), rtol=1e-15)
    clean_env.setenv(BENCHMARK_NAME_ENV, "MSCI World")
    assert load_benchmark().describe() == {"name": "MSCI World", "kind": "total_return",
                                           "label": "MSCI World (total return)", "source": "benchmark file 'tr.csv'"}


def test_bad_benchmark_files_are_named(clean_env, tmp_path):
    _write_levels(tmp_path / "tr.csv")
    clean_env.setenv(BENCHMARK_ENV, str(tmp_path / "tr.csv"))
    with pytest.raises(PriceDataError, match=r"\$QUANT_META_BENCHMARK_KIND is not set: .*'total_return'"):
        load_benchmark()
    clean_env.setenv(BENCHMARK_KIND_ENV, "dividends")
    with pytest.raises(PriceDataError, match=r"is 'dividends'"):
        load_benchmark()
    clean_env.setenv(BENCHMARK_KIND_ENV, "price")
    _write_levels(tmp_path / "two.csv", ("A", "B"))
    clean_env.setenv(BENCHMARK_ENV, str(tmp_path / "two.csv"))
    with pytest.raises(PriceDataError, match=r"ONE value column, got \['A', 'B'\]"):
        load_benchmark()
    clean_env.setenv(BENCHMARK_ENV, str(tmp_path / "missing.csv"))
    with pytest.raises(PriceDataError, match="no such file"):
        load_benchmark()


def test_a_bare_series_is_read_as_a_price_index():
    bench = as_benchmark(pd.Series([1.0, 1.1], index=pd.bdate_range("2020-01-01", periods=2), name="IDX"))
    assert bench.name == "IDX" and not bench.total_return


def test_the_report_states_the_kind_near_its_top_and_measures_against_it(tmp_path):
    from quant_meta_assets import metrics as M
    from quant_meta_assets.report import build_report
    from quant_meta_assets_tests.unit.report.toy import make_report_inputs

    inputs = make_report_inputs()
    levels = inputs["benchmark"].levels
    total = Benchmark(levels=levels * np.cumprod(np.full(len(levels), 1 + 0.02 / 252)), name="S&P 500 TR",
                      total_return=True, source="test")
    report = build_report(**{**inputs, "benchmark": total}, output_dir=tmp_path / "tr")
    html = open(report["html"], encoding="utf-8").read()
    top = html[html.index("<main>"):html.index('class="cards"')]
    assert "S&amp;P 500 TR (total return) is a TOTAL RETURN index" in top and "Survivorship" in top
    assert "PRICE index" not in top
    b = total.levels.pct_change().reindex(report["meta_returns"].index)
    assert report["metrics"].loc["meta", "beta"] == pytest.approx(M.beta(report["meta_returns"], b), abs=1e-12)
    assert report["summary"]["benchmark"]["kind"] == "total_return"
    assert "TOTAL RETURN" in report["conventions"]["benchmark"]

    price = build_report(**inputs, output_dir=tmp_path / "price")
    top = open(price["html"], encoding="utf-8").read()
    top = top[top.index("<main>"):top.index('class="cards"')]
    assert "S&amp;P 500 (price index) is a PRICE index, without dividends" in top


def test_the_survivorship_caveat_reads_the_universe():
    from quant_meta_assets.report.build import _survivorship

    days = pd.bdate_range("2020-01-01", periods=10)
    fixed = pd.DataFrame(0.01, index=days, columns=["A", "B", "C"])
    assert "No ticker of the 3" in _survivorship(fixed, days)[0]
    pit = fixed.copy()
    pit.iloc[:4, 1] = np.nan  # B lists on day 4
    pit.iloc[7:, 2] = np.nan  # C delists after day 6
    assert _survivorship(pit, days)[0].startswith("2 of the 3 tickers list or delist inside the window")
