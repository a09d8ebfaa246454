"""The report leads with the book (issue 19 part 3): the decision layer's numbers recomputed
independently (numpy closed forms, index prices, quantstats as a test-only oracle) on the toy book
built from the real bundled skfolio data, and the page's order parsed from the HTML."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import quantstats as qs

from quant_meta_assets import metrics as M
from quant_meta_assets.report import build_report, headline_metrics
from quant_meta_assets_tests.unit.report.toy import make_report_inputs


@pytest.fixture(scope="module")
def inputs() -> dict:
    return make_report_inputs()


@pytest.fixture(scope="module")
def report(inputs, tmp_path_factory) -> dict:
    first = build_report(**inputs, output_dir=tmp_path_factory.mktemp("first"))
    previous = json.loads(json.dumps(first["summary"]))
    previous["latest_meta_weights"] = {"tech": 0.2, "defensive": 0.5, "long_short": 0.3}
    previous["metrics"]["meta"]["beta"] = 0.5
    return build_report(**{**inputs, "previous": previous}, output_dir=tmp_path_factory.mktemp("report"))


@pytest.fixture(scope="module")
def html(report) -> str:
    return open(report["html"], encoding="utf-8").read()


def _benchmark(inputs, live) -> pd.Series:
    prices = inputs["benchmark"].levels
    return (prices / prices.shift(1) - 1).reindex(live)


class _Outline(HTMLParser):
    """Section ids, h2 titles and table ids (with their header texts) in document order."""

    def __init__(self):
        super().__init__()
        self.sections, self.h2, self.tables = [], [], {}
        self._in = None
        self._table = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        elif tag in ("h2", "th"):
            self._in = tag
            if tag == "h2":
                self.h2.append("")
        elif tag == "table" and attrs.get("id"):
            self._table = attrs["id"]
            self.tables[self._table] = []
        if tag == "th" and self._table:
            self.tables[self._table].append("")

    def handle_endtag(self, tag):
        if tag in ("h2", "th"):
            self._in = None
        elif tag == "thead":
            self._table = None

    def handle_data(self, data):
        if self._in == "h2":
            self.h2[-1] += data
        elif self._in == "th" and self._table:
            self.tables[self._table][-1] += data


def test_the_page_opens_with_the_decision_layer(report, html):
    outline = _Outline()
    outline.feed(html)
    assert outline.sections == ["decision", "performance", "allocation", "assets", "attribution", "turnover",
                                "forensics", "conventions"]
    assert outline.h2[0] == "The book: meta vs benchmarks"
    main = html[html.index("<main>"):]
    decision = main[:main.index('<section id="performance"')]
    # what the page opens with: caveats, tiles against the benchmark, the comparison table
    for text in ("Survivorship", "PRICE index, without dividends", "Risk-free rate", "Beta to S&amp;P 500",
                 "Information ratio", "Tracking error", "Yearly returns", "fig-monthly_returns",
                 "Worst 5 drawdowns", "fig-rolling_sharpe", "fig-rolling_vol", "Current meta-weights",
                 "What changed since the last report", "summary-table"):
        assert text in decision, text
    assert decision.index("Survivorship") < decision.index('class="cards"') < decision.index("summary-table")
    # the reconciliations live in forensics; the header keeps a small pass/fail indicator
    assert "reconciliations passed" not in main[:main.index('<section id="forensics"')]
    assert "Max recon" not in html and "MAX RECON" not in html
    assert f"All {len(report['reconciliations'])} reconciliations passed" in main[main.index('id="forensics"'):]
    assert re.search(r'id="reconciliation-status"[^>]*>checks (\d+)/\1 pass<', html)


def test_readable_columns_and_one_turnover_unit(report, html):
    outline = _Outline()
    outline.feed(html)
    summary = outline.tables["summary-table"]
    assert summary == ["portfolio", "CAGR", "Volatility", "Sharpe", "Sortino", "Max drawdown", "Beta",
                       "Alpha (per year)", "Tracking error", "Information ratio"]
    for table in ("summary-table", "metrics-risk"):
        assert not [h for h in outline.tables[table][1:] if "_" in h], outline.tables[table]
    assert "Sleeve reallocation (× per year)" in html and "Asset turnover (× per year)" in html
    metrics = report["metrics"]
    assert f">{metrics.loc['meta', 'turnover']:.2f}×<" in html  # the meta's reallocation, × per year
    assert f">{metrics.loc['meta', 'asset_turnover']:.2f}×<" in html
    assert f"{metrics.loc['meta', 'turnover'] * 100:.2f}%" not in html  # never as a percentage
    assert "turnover / yr" not in html and "Two-sided turnover per rebalance" not in html
    # one implementation: a sleeve's asset turnover is its own (counted-rebalance) turnover column
    for sleeve in ("tech", "defensive", "long_short"):
        assert metrics.loc[sleeve, "asset_turnover"] == metrics.loc[sleeve, "turnover"]


def test_benchmark_relative_statistics_recomputed(report, inputs):
    live = report["meta_returns"].index
    r = report["portfolio_returns"]
    b = _benchmark(inputs, live).to_numpy()
    metrics = report["metrics"]
    for name in ("meta", "equal_weight_meta", "tech"):
        x = r[name].to_numpy()
        beta = np.cov(x, b, ddof=1)[0, 1] / np.var(b, ddof=1)
        te = np.std(x - b, ddof=1) * np.sqrt(252)
        assert metrics.loc[name, "beta"] == pytest.approx(beta, abs=1e-12)
        assert metrics.loc[name, "alpha"] == pytest.approx(252 * np.mean(x - beta * b), abs=1e-12)  # rf = 0
        assert metrics.loc[name, "tracking_error"] == pytest.approx(te, abs=1e-12)
        assert metrics.loc[name, "information_ratio"] == pytest.approx(252 * np.mean(x - b) / te, abs=1e-10)
        greeks = qs.stats.greeks(r[name], pd.Series(b, index=live))
        assert metrics.loc[name, "beta"] == pytest.approx(float(greeks["beta"]), abs=1e-8)
        assert metrics.loc[name, "alpha"] == pytest.approx(float(greeks["alpha"]), abs=1e-8)
    assert metrics.loc["benchmark", "beta"] == pytest.approx(1.0) and metrics.loc["benchmark", "tracking_error"] == 0.0
    head = headline_metrics(report)
    for k in ("beta", "alpha", "tracking_error", "information_ratio"):
        assert head[f"meta_{k}"] == metrics.loc["meta", k]
    assert report["summary"]["headline"]["beta"] == pytest.approx(metrics.loc["meta", "beta"])


def test_alpha_uses_the_one_rf(inputs, tmp_path):
    rf = 0.03
    # the toy sleeves' idle cash earned 0 when they were built: say so, so the book reconciles
    report = build_report(**inputs, output_dir=tmp_path, risk_free_rate=rf, cash_return=0.0)
    live = report["meta_returns"].index
    x, b = report["meta_returns"].to_numpy(), _benchmark(inputs, live).to_numpy()
    rf_d = (1 + rf) ** (1 / 252) - 1
    beta = np.cov(x, b, ddof=1)[0, 1] / np.var(b, ddof=1)
    assert report["metrics"].loc["meta", "alpha"] == pytest.approx(252 * np.mean((x - rf_d) - beta * (b - rf_d)), abs=1e-12)
    assert "rf = 3.00% a year" in open(report["html"], encoding="utf-8").read()


def test_yearly_and_monthly_tables(report, inputs):
    live = report["meta_returns"].index
    yearly = report["decision"]["yearly"]
    meta = report["meta_returns"]
    for year in sorted(set(live.year)):
        days = meta[meta.index.year == year]
        assert yearly.loc[year, "meta"] == pytest.approx(np.prod(1 + days.to_numpy()) - 1, abs=1e-12)
        assert yearly.loc[year, "days"] == len(days)
        # the index's year straight from its prices: last close of the year / close before its first live day
        prices = inputs["benchmark"].levels
        first, last = days.index[0], days.index[-1]
        before = prices.index[prices.index.get_loc(first) - 1]
        assert yearly.loc[year, "benchmark"] == pytest.approx(prices[last] / prices[before] - 1, abs=1e-12)
    monthly = report["decision"]["monthly"]
    for (year, month), days in meta.groupby([meta.index.year, meta.index.month]):
        assert monthly.loc[year, month] == pytest.approx(np.prod(1 + days.to_numpy()) - 1, abs=1e-12)
    assert monthly.notna().sum().sum() == len(set(zip(live.year, live.month)))
    assert list(monthly.columns) == list(range(1, 13))


def test_worst_drawdowns_of_the_meta(report):
    worst = report["decision"]["drawdowns"]
    meta = report["meta_returns"]
    assert len(worst) == 5 and list(worst.index) == [1, 2, 3, 4, 5]
    assert worst["depth"].is_monotonic_increasing
    assert worst["depth"].iloc[0] == pytest.approx(M.max_drawdown(meta), abs=1e-15)
    wealth = np.cumprod(1 + meta.to_numpy())
    peak = np.maximum.accumulate(np.concatenate([[1.0], wealth]))[1:]
    for row in worst.itertuples():
        s, t = meta.index.get_loc(row.start), meta.index.get_loc(row.trough)
        prior_peak = peak[s - 1] if s else 1.0
        assert wealth[s] < prior_peak and (s == 0 or wealth[s - 1] >= prior_peak)
        assert wealth[t] / prior_peak - 1 == pytest.approx(row.depth, abs=1e-12)
        if pd.notna(row.recovery):
            rec = meta.index.get_loc(row.recovery)
            assert wealth[rec] >= prior_peak and (wealth[s:rec] < prior_peak).all()
            assert row.duration == rec - s


def test_rolling_statistics(report):
    meta = report["meta_returns"]
    rs, rv = report["decision"]["rolling_sharpe"]["meta"], report["decision"]["rolling_vol"]["meta"]
    assert rs.iloc[:251].isna().all() and rs.iloc[251:].notna().all()
    last = meta.iloc[-252:].to_numpy()
    assert rs.iloc[-1] == pytest.approx(last.mean() / last.std(ddof=1) * np.sqrt(252), abs=1e-9)
    assert rv.iloc[-1] == pytest.approx(last.std(ddof=1) * np.sqrt(252), abs=1e-12)
    assert list(report["decision"]["rolling_sharpe"].columns) == ["meta", "equal_weight_meta", "benchmark"]


def test_current_weights_and_changes(report):
    weights = report["decision"]["weights"]
    held = report["summary"]["latest_meta_weights"]
    assert weights["held"].to_dict() == pytest.approx(held)
    assert weights["held"].is_monotonic_decreasing
    assert weights.loc["tech", "previous"] == 0.2
    assert weights.loc["tech", "change"] == pytest.approx(held["tech"] - 0.2)
    assert np.allclose(weights["risk_realised"].sum(), 1.0) and np.allclose(weights["risk_ex_ante"].sum(), 1.0)
    assert report["changes"]["metrics"].loc["beta", "previous"] == 0.5


def test_attribution_in_percentage_points_per_year(report, html):
    meta = report["meta_returns"]  # the headline book, its own trading cost one line
    by_sleeve = report["attribution"]["by_sleeve"]
    n = len(meta)
    assert by_sleeve["per_year"].sum() == pytest.approx(252 * meta.mean(), abs=1e-12)
    np.testing.assert_allclose(by_sleeve["per_year"], by_sleeve["arithmetic"] * 252 / n, atol=1e-15)
    by_asset = report["attribution"]["by_asset"]
    assert by_asset["per_year"].sum() == pytest.approx(252 * meta.mean(), abs=1e-12)
    checks = report["reconciliations"].set_index("check")
    assert checks.loc["attribution_per_year_total", "passed"]
    section = html[html.index('<section id="attribution"'):html.index('<section id="turnover"')]
    shown = [float(v) for v in re.findall(r"<td>(-?[0-9.]+) pp</td>", section)]
    sleeves = by_sleeve["per_year"].drop(index="(book trading costs)").sort_values(ascending=False)
    assert shown[:4] == [round(v * 100, 2) for v in sleeves] + [round(by_sleeve.loc["(book trading costs)",
                                                                                    "per_year"] * 100, 2)]
    assert f"{by_sleeve['contribution'].sum() * 100:.2f}%" not in section  # no compounded totals


def test_realised_risk_contributions_replace_the_constant_ex_ante_plot(report, inputs, html):
    by_year = report["risk_contributions"]["realised_by_year"]
    np.testing.assert_allclose(by_year.sum(axis=1), 1.0, atol=1e-12)
    held = inputs["flatten"].meta_weights_daily.loc[report["meta_returns"].index]
    gross = inputs["sleeve_returns"] + pd.DataFrame(inputs["sleeve_costs"]).reindex(inputs["sleeve_returns"].index)
    r = gross.loc[held.index, held.columns]  # the book's shares earn the sleeves' gross returns
    year = by_year.index[2]
    parts = (held * r).loc[held.index.year == year].to_numpy()
    meta = parts.sum(axis=1)
    expected = [np.cov(parts[:, j], meta, ddof=1)[0, 1] / np.var(meta, ddof=1) for j in range(parts.shape[1])]
    np.testing.assert_allclose(by_year.loc[year].to_numpy(), expected, atol=1e-12)
    assert by_year.std().max() > 0.01  # varies: not constant by construction

    def figure(div_id: str) -> tuple[list, dict]:
        start = html.index(f'"{div_id}",') + len(f'"{div_id}",')
        decoder = json.JSONDecoder()
        rest = html[start:].lstrip()
        data, end = decoder.raw_decode(rest)
        layout, _ = decoder.raw_decode(rest[end:].lstrip(", "))
        return data, layout

    data, _ = figure("fig-risk_contributions")
    assert [t["x"] for t in data][0] == [str(y) for y in by_year.index]
    assert "Ex-ante risk contribution by sleeve" not in html
    # growth of 1 opens on a log scale; the linear/log switch sits below the title, left
    _, layout = figure("fig-cumulative")
    assert layout["yaxis"]["type"] == "log"
    menu = layout["updatemenus"][0]
    assert menu["active"] == 1 and menu["y"] >= 1.0 and menu["yanchor"] == "bottom"
    assert layout["margin"]["t"] >= 70 and layout["legend"]["y"] < 0


def test_ui_markdown_uses_the_same_names_and_units(report):
    from quant_meta_assets.report import report_markdown_summary

    md = report_markdown_summary(report)["metrics"]
    header = [h.strip() for h in md.splitlines()[0].strip("|").split("|")]
    assert header[0] == "portfolio" and not [h for h in header[1:] if "_" in h]
    assert {"Beta", "Alpha (per year)", "Tracking error", "Information ratio",
            "Sleeve reallocation (× per year)", "Asset turnover (× per year)"} <= set(header)
    meta_row = [c.strip() for c in next(r for r in md.splitlines() if r.startswith("| meta |")).strip("|").split("|")]
    metrics = report["metrics"]
    assert meta_row[header.index("Sleeve reallocation (× per year)")] == f"{metrics.loc['meta', 'turnover']:.2f}×"
    assert meta_row[header.index("Alpha (per year)")] == f"{metrics.loc['meta', 'alpha'] * 100:.2f}%"


def test_conventions_state_the_new_statistics(report, html):
    conv = report["conventions"]
    assert "cov(r, b) / var(b)" in conv["beta"]
    assert "252 * mean((r - rf_d) - beta * (b - rf_d))" in conv["alpha"]
    assert "std(r - b, ddof=1) * sqrt(252)" in conv["tracking_error"]
    assert "252 * mean(r - b) / tracking error" in conv["information_ratio"]
    assert "PRICE" in conv["benchmark"] and "no dividends" in conv["benchmark"]
    assert "percentage points of annual return" in conv["attribution"]
    assert "REALISED" in conv["risk_contribution"]
    section = html[html.index('<section id="conventions"'):]
    for key in ("beta", "alpha", "tracking_error", "information_ratio", "drawdown_periods", "rolling"):
        assert f"<td>{key}</td>" in section, key


def test_the_docs_screenshot_is_small():
    from pathlib import Path

    png = Path(__file__).resolve().parents[3] / "docs" / "report-top.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 10_000 < png.stat().st_size < 300_000
