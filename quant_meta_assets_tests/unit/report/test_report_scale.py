"""The report at book scale: which sleeves the plots draw, how daily series are thinned, and that
the tables keep every sleeve (the size ceiling and the browser run: integration/test_report_browser.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.errors import StageInputError
from quant_meta_assets.report import build_report
from quant_meta_assets.report import plots as P
from quant_meta_assets_tests.unit.report.book import make_book_inputs, simulate_basket
from quant_meta_assets_tests.unit.report.toy import load_inputs, simulate_sleeve


def test_book_sleeves_match_the_toy_day_loop():
    R, _ = load_inputs("2019-01-01", "2020-12-31")
    target = {"AAPL": 0.3, "KO": 0.5, "XOM": -0.2}
    for ours, ref in zip(simulate_basket(R, target, 5.0), simulate_sleeve(R, target, 5.0), strict=True):
        a, b = np.asarray(ours, dtype=float), np.asarray(ref, dtype=float)
        assert np.array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(np.nan_to_num(a), np.nan_to_num(b), rtol=0, atol=1e-14)


def test_display_positions_and_drawdown_buckets():
    assert list(P.display_positions(5, 10)) == [0, 1, 2, 3, 4]
    pos = P.display_positions(2500, 1000)  # every 3rd row and the last
    assert pos[0] == 0 and pos[-1] == 2499 and np.all(np.diff(pos[:-1]) == 3) and len(pos) <= 1001
    dd = np.zeros(2500)
    dd[1234] = -0.5  # a one-day trough between two drawn rows
    kept = P._bucket_minima(dd, 1000)
    assert 1234 in kept and len(kept) <= 1000


def test_top_sleeves_by_average_held_weight():
    held = pd.DataFrame({"a": [0.1, 0.1], "b": [0.5, 0.7], "c": [0.4, 0.2], "d": [0.0, 0.0]})
    assert P.top_sleeves(held, 2) == ["b", "c"]
    assert P.top_sleeves(held, 10) == ["b", "c", "a", "d"]


@pytest.fixture(scope="module")
def book_report(tmp_path_factory):
    inputs = make_book_inputs(30, start="2014-01-01")
    return inputs, build_report(**inputs, output_dir=tmp_path_factory.mktemp("book"), top_k=4)


def test_plots_draw_meta_benchmarks_and_top_k_tables_keep_every_sleeve(book_report):
    inputs, report = book_report
    html = open(report["html"], encoding="utf-8").read()
    sleeves = list(inputs["meta_weights"].columns)
    top = P.top_sleeves(inputs["flatten"].meta_weights_daily.loc[report["meta_returns"].index], 4)

    def figure(div_id: str) -> dict:
        start = html.index(f'"{div_id}",') + len(f'"{div_id}",')
        return json.JSONDecoder().raw_decode(html[start:].lstrip())[0]

    cumulative = [t["name"] for t in figure("fig-cumulative")]
    assert cumulative == ["meta", "meta_standalone", "equal_weight_meta", "benchmark", *top]
    weights = [t["name"] for t in figure("fig-meta_weights")]
    assert set(weights[:4]) == set(top) and weights[4] == f"other ({len(sleeves) - 4} sleeves)"
    risk = [t["name"] for t in figure("fig-risk_contributions")]  # realised, per year: top 4 + other
    assert set(risk[:4]) == set(top) and risk[4:] == [f"other ({len(sleeves) - 4} sleeves)"]
    for div in ("fig-rolling_sharpe", "fig-rolling_vol"):  # the decision layer's books only
        assert [t["name"] for t in figure(div)] == ["meta", "equal_weight_meta", "benchmark"]
    assert len(figure("fig-monthly_returns")) == 1 and len(figure("fig-turnover")) == 3
    # the decision layer's weights table lists every sleeve
    assert len(report["decision"]["weights"]) == len(sleeves)
    # thinned: ~2,000 live days drawn at every 2nd day plus the last, from the first live day
    x = figure("fig-cumulative")[0]["x"]
    live = report["meta_returns"].index
    assert len(live) > P.MAX_POINTS and len(x) <= P.MAX_POINTS + 1
    assert x[0] == str(live[0].date()) and x[-1] == str(live[-1].date())
    # the log-scale switch
    assert '"yaxis.type":"log"' in html.replace(" ", "")
    # every sleeve in the (full-data) metrics table and the convention saying so
    assert set(sleeves) <= set(report["metrics"].index)
    assert all(html.count(f">{s}<") >= 2 for s in sleeves)
    assert "top 4 of 30 sleeves" in report["conventions"]["display"]
    assert 'class="sortable"' in html and "table.sortable th" in html


def test_top_k_must_be_a_positive_integer(book_report):
    inputs, _ = book_report
    with pytest.raises(StageInputError, match="top_k must be an integer >= 1"):
        build_report(**inputs, output_dir="unused", top_k=0)


def test_long_tables_state_what_every_row_shares_once(book_report):
    """Hundreds of rebalances or sleeves: a column with one value on every row is stated once
    above its table (nothing is dropped), so the report does not grow by it per row."""
    from quant_meta_assets.report import html as H

    frame = pd.DataFrame({"method": ["rp"] * 3, "x": [1.0, 2.0, 3.0], "empty": [None] * 3, "run_id": ["r<1>"] * 3})
    varying, note = H.constant_columns(frame)
    assert list(varying.columns) == ["x"]
    assert "method = rp" in note and "run_id = r&lt;1&gt;" in note and "empty on every row: empty" in note
    one_row, no_note = H.constant_columns(frame.iloc[:1])
    assert no_note == "" and one_row.equals(frame.iloc[:1])

    inputs, report = book_report
    html = open(report["html"], encoding="utf-8").read()
    lineage = html[html.index("Lineage per sleeve"):]
    assert "code_version = abc1234" in lineage  # the same for every sleeve of the book
    assert all(f"run-{i:04d}" in lineage for i in range(len(inputs["meta_weights"].columns)))  # varies: kept
    diagnostics = html[html.index("Optimizer diagnostics per rebalance"):html.index("Lineage per sleeve")]
    assert "The same on every row" in diagnostics


def test_turnover_figure_is_per_year_whatever_the_number_of_sleeves(book_report):
    """The turnover plot draws one bar per calendar year for the meta's reallocation and the two
    books' asset turnover (× per year), not one point per rebalance per sleeve; weighted by the
    years' lengths the bars average to the annualised figures of the metrics table."""
    inputs, report = book_report
    per_year = report["turnover_per_year"]
    live = report["meta_returns"].index
    assert list(per_year.index) == sorted(set(live.year))
    fig = P.turnover_per_year(per_year)
    assert [t.name for t in fig.data] == list(per_year.columns) and all(len(t.x) == len(per_year) for t in fig.data)
    days = pd.Series(1, index=live).groupby(live.year).sum()
    average = (per_year.mul(days, axis=0).sum() / days.sum())
    metrics = report["metrics"]
    assert average["meta: sleeve reallocation"] == pytest.approx(metrics.loc["meta", "turnover"], rel=1e-12)
    assert average["meta: asset turnover (netted book)"] == pytest.approx(metrics.loc["meta", "asset_turnover"], rel=1e-12)
    assert average["stand-alone: asset turnover"] == pytest.approx(
        metrics.loc["meta_standalone", "asset_turnover"], rel=1e-12)
