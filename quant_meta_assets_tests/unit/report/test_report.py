"""build_report on toy sleeves from the real skfolio data (inputs built by independent numpy loops)."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets import metrics as M
from quant_meta_assets.errors import ReconciliationError
from quant_meta_assets.report import build_report, headline_metrics, report_markdown_summary
from quant_meta_assets.report import forensics as F
from quant_meta_assets_tests.unit.report.toy import make_report_inputs


@pytest.fixture(scope="module")
def inputs() -> dict:
    return make_report_inputs()


@pytest.fixture(scope="module")
def report(inputs, tmp_path_factory) -> dict:
    return build_report(**inputs, output_dir=tmp_path_factory.mktemp("report"))


def test_meta_returns_and_metrics(report, inputs):
    fl = inputs["flatten"]
    gross = inputs["sleeve_returns"] + pd.DataFrame(inputs["sleeve_costs"]).reindex(inputs["sleeve_returns"].index)
    book_cost = report["costs"]["daily"]["book_cost"]
    expected = (fl.meta_weights_daily * gross.loc[fl.meta_weights_daily.index]).sum(axis=1) - book_cost
    pd.testing.assert_series_equal(report["meta_returns"], expected.rename("meta"), check_freq=False, atol=1e-15)
    # the headline is the netted book; the stand-alone view sits beside it
    pd.testing.assert_series_equal(report["meta_returns"], report["costs"]["daily"]["netted_return"].rename("meta"))
    assert metrics_has_both_views(report["metrics"])
    assert report["meta_returns"].index[0] > inputs["meta_weights"].index[0]
    metrics = report["metrics"]
    assert {"meta", "meta_standalone", "equal_weight_meta", "benchmark", *inputs["sleeve_returns"].columns} == set(metrics.index)
    assert (metrics["start"] == report["meta_returns"].index[0]).all()
    assert (metrics["n_days"] == len(report["meta_returns"])).all()
    assert metrics.loc["meta", "sharpe"] == pytest.approx(M.sharpe(report["meta_returns"]), abs=1e-12)
    # annualised turnover, one rule for all books: trades that first earn inside the window, no
    # initial allocation, nothing dated on the last day (issue 13 item 5; was the mean per rebalance)
    days = inputs["sleeve_returns"].index
    live = report["meta_returns"].index
    years = len(live) / 252
    for s in inputs["sleeve_returns"].columns:
        t = inputs["sleeve_turnover"][s]
        kept = t.iloc[1:][(t.index[1:] >= days[days.get_loc(live[0]) - 1]) & (t.index[1:] < live[-1])]
        assert len(kept) > 10 and metrics.loc[s, "turnover"] == pytest.approx(kept.sum() / years, rel=1e-12)
    mw = inputs["meta_weights"]
    held = report["portfolio_returns"].index  # meta trades: vs the held weights drifted through d
    meta_trades = []
    for d in mw.index[1:]:
        if d < live[-1]:
            prev = mw.loc[:d].iloc[-2].to_numpy()
            seg = gross.loc[(gross.index > mw.index[mw.index < d][-1]) & (gross.index <= d)]  # the book: gross drift
            drifted = prev * np.prod(1 + seg.to_numpy(), axis=0)
            meta_trades.append(np.abs(mw.loc[d].to_numpy() - drifted / drifted.sum()).sum())
    assert held.equals(live)
    assert metrics.loc["meta", "turnover"] == pytest.approx(sum(meta_trades) / years, rel=1e-10)
    # sp500 from index prices, on the meta's days
    idx = inputs["benchmark"].levels.pct_change().reindex(report["meta_returns"].index)
    assert metrics.loc["benchmark", "cagr"] == pytest.approx(M.cagr(idx), abs=1e-12)


def test_equal_weight_benchmark_is_drifting_one_over_n(report, inputs):
    r = inputs["sleeve_returns"]
    mw = inputs["meta_weights"]
    ew = pd.DataFrame(1 / 3, index=mw.index, columns=mw.columns)
    import types
    from quant_meta_assets_tests.unit.report.toy import flatten_numpy
    held = flatten_numpy(ew, {s: pd.DataFrame({"x": 1.0}, index=r.index) for s in mw.columns}, r)
    expected = (held.meta_weights_daily * r.loc[held.meta_weights_daily.index]).sum(axis=1)
    assert isinstance(held, types.SimpleNamespace)
    got = report["portfolio_returns"]["equal_weight_meta"]
    assert np.abs(got.to_numpy() - expected.to_numpy()).max() < 1e-14


def test_reconciliations_pass_and_cover_the_identities(report):
    rec = report["reconciliations"]
    assert list(rec.columns) == ["check", "description", "max_abs_diff", "where", "tolerance", "passed"]
    assert {"book_holdings_return", "published_weights_are_book", "meta_weights_budget", "exposure_net",
            "asset_weights_flatten", "meta_weights_drift"} <= set(rec["check"])
    assert (rec.set_index("check").loc[["book_holdings_return", "published_weights_are_book"], "tolerance"]
            == 1e-12).all()
    assert rec["passed"].all() and (rec["max_abs_diff"] < 1e-12).all()
    assert report["reconciled"]


def metrics_has_both_views(metrics) -> bool:
    views = metrics.loc[["meta", "meta_standalone"], ["asset_turnover", "cost_drag"]]
    return bool(views.notna().all().all() and (views > 0).all().all())


def test_attribution_adds_up(report, inputs):
    meta = report["meta_returns"]  # attribution explains the headline book, its own cost one line
    total = float(np.prod(1 + meta) - 1)
    att = report["attribution"]
    assert att["by_sleeve"]["contribution"].sum() == pytest.approx(total, abs=1e-12)
    assert att["by_asset"]["contribution"].sum() == pytest.approx(total, abs=1e-12)
    assert att["by_sleeve"]["arithmetic"].sum() == pytest.approx(meta.sum(), abs=1e-12)
    book_cost = report["costs"]["daily"]["book_cost"]
    for table in (att["by_sleeve"], att["by_asset"]):
        assert table.loc["(book trading costs)", "arithmetic"] == pytest.approx(-book_cost.sum(), abs=1e-15)


def test_risk_contributions(report, inputs):
    rc = report["risk_contributions"]
    assert np.allclose(rc["ex_ante"].sum(axis=1), 1.0, atol=1e-12)
    assert np.allclose(rc["ex_post"][["rc_avg_weights", "rc_realised"]].sum(), 1.0, atol=1e-12)
    # first rebalance: explicit numpy reference with the trailing window (= implied lookback 63)
    mw, r = inputs["meta_weights"], inputs["sleeve_returns"]
    assert rc["window"] == r.index.get_loc(mw.index[0]) + 1
    d = mw.index[2]
    pos = r.index.get_loc(d)
    cov = np.cov(r.iloc[pos - rc["window"] + 1: pos + 1].to_numpy().T)
    w = mw.loc[d].to_numpy()
    np.testing.assert_allclose(rc["ex_ante"].loc[d].to_numpy(), w * (cov @ w) / (w @ cov @ w), atol=1e-13)


def test_files_summary_and_markdown(report):
    out = os.path.dirname(report["html"])
    assert sorted(f for f in os.listdir(out)) == ["report.html", "summary.json"]
    stored = json.loads(open(os.path.join(out, "summary.json"), encoding="utf-8").read())
    assert stored == report["summary"]
    assert stored["reconciled"] is True and set(stored["headline"]) >= {"cagr", "sharpe"}
    html = open(report["html"], encoding="utf-8").read()
    for text in ("Conventions", "Reconciliations", "Lineage per sleeve", "Optimizer diagnostics",
                 "inverse_vol", "252", "excess", "POSITIVE", "two-sided"):
        assert text in html
    md = report_markdown_summary(report)
    assert set(md) == {"metrics", "reconciliations", "latest_weights"}
    assert md["metrics"].startswith("| portfolio |") and "meta" in md["metrics"]
    head = headline_metrics(report)
    assert set(head) == {"meta_cagr", "meta_sharpe", "meta_ann_vol", "meta_max_drawdown", "meta_calmar",
                         "meta_beta", "meta_alpha", "meta_tracking_error", "meta_information_ratio",
                         "max_reconciliation_diff", "crossing_savings_bps", "book_turnover",
                         "standalone_turnover", "meta_standalone_sharpe"}
    totals = report["costs"]["totals"]
    assert head["crossing_savings_bps"] == pytest.approx(
        (totals["standalone_cost"] - totals["book_cost"]) / (len(report["meta_returns"]) / 252) * 1e4)
    assert 0 < head["book_turnover"] <= head["standalone_turnover"]
    for text in ("Trading costs: netted book vs stand-alone", "Internal crossing savings per year",
                 "fig-crossing_savings", "meta_standalone", "one-way", "first day the new weights earn",
                 "book_cost_bps_used"):
        assert text in html, text
    assert stored["costs"]["cost_bps"] == 5.0
    assert all(isinstance(v, float) for v in head.values())


def test_what_changed(inputs, report, tmp_path):
    previous = json.loads(json.dumps(report["summary"]))
    previous["latest_meta_weights"] = {"tech": 0.5, "defensive": 0.5, "long_short": 0.0}
    previous["metrics"]["meta"]["sharpe"] = 0.5
    again = build_report(**{**inputs, "previous": previous}, output_dir=tmp_path)
    changes = again["changes"]
    assert changes["metrics"].loc["sharpe", "change"] == pytest.approx(report["metrics"].loc["meta", "sharpe"] - 0.5)
    assert changes["meta_weights"].index[0] == "long_short"  # largest absolute change first
    assert "Meta metric deltas" in open(again["html"], encoding="utf-8").read()


def test_corrupted_sleeve_return_fails_loudly_and_writes_nothing(inputs, tmp_path):
    bad = inputs["sleeve_returns"].copy()
    day = inputs["flatten"].meta_weights_daily.index[100]
    bad.loc[day, "defensive"] += 1e-6
    out = tmp_path / "bad"
    with pytest.raises(ReconciliationError, match=r"sleeve_gross_returns: max \|diff\| = 1.00e-06 > tolerance "
                       r"1.0e-10 at " + str(day.date())):
        build_report(**{**inputs, "sleeve_returns": bad}, output_dir=out)
    assert not out.exists() or not any(out.iterdir())
    # raise_on_failure=False: the report is written and says FAILED
    report = build_report(**{**inputs, "sleeve_returns": bad}, output_dir=out, raise_on_failure=False)
    assert not report["reconciled"]
    failed = report["reconciliations"].set_index("check")
    assert not failed.loc["sleeve_gross_returns", "passed"] and not failed.loc["book_holdings_return", "passed"]
    assert failed.loc["sleeve_gross_returns", "max_abs_diff"] > 1e-8
    assert "RECONCILIATION FAILED" in open(report["html"], encoding="utf-8").read()
    assert headline_metrics(report)["max_reconciliation_diff"] > 1e-8


def test_budget_and_exposure_corruption_detected(inputs, report):
    mw = inputs["meta_weights"].copy()
    mw.iloc[2, 0] += 0.01
    rec = F.reconcile(
        meta_weights=mw, meta_weights_daily=inputs["flatten"].meta_weights_daily,
        recomputed_meta_weights_daily=inputs["flatten"].meta_weights_daily,
        book_returns=report["meta_returns"], book_costs=report["costs"]["daily"]["book_cost"],
        book_weights=inputs["flatten"].asset_weights, asset_weights=inputs["flatten"].asset_weights,
        asset_returns=inputs["asset_returns"], exposure=inputs["flatten"].exposure * 1.001,
        sleeve_weights=inputs["sleeve_weights"], tolerance=1e-10,
    ).set_index("check")
    assert not rec.loc["meta_weights_budget", "passed"]
    assert rec.loc["meta_weights_budget", "where"] == str(mw.index[2].date())
    assert not rec.loc["exposure_net", "passed"] and not rec.loc["exposure_gross", "passed"]
    assert rec.loc["book_holdings_return", "passed"] and rec.loc["published_weights_are_book", "passed"]


def test_with_project_flatten(inputs, tmp_path):
    """Integration-style: the lead's meta.flatten gives the same report as the numpy loop."""
    flatten_mod = pytest.importorskip("quant_meta_assets.meta.flatten")
    fl = flatten_mod.flatten_weights(inputs["meta_weights"], inputs["sleeve_weights"], inputs["sleeve_returns"],
                                     inputs["sleeve_costs"])
    report = build_report(**{**inputs, "flatten": fl}, output_dir=tmp_path)
    assert report["reconciled"], report["reconciliations"]
    toy = inputs["flatten"]
    assert np.abs(fl.meta_weights_daily - toy.meta_weights_daily).max().max() < 1e-12
    assert np.abs(fl.asset_weights - toy.asset_weights.reindex(columns=fl.asset_weights.columns)).max().max() < 1e-12


def test_singular_covariance_is_a_visible_warning(inputs, report, tmp_path):
    # issue 13 item 7: the report shows a warning banner, not a quiet "optimal"
    assert 'id="covariance-warning"' not in open(report["html"]).read()
    diagnostics = inputs["diagnostics"].copy()
    diagnostics["status"] = "optimal_singular_cov"
    diagnostics["warning"] = "singular or near-singular covariance (sample): 40 active sleeves but only 30 rows"
    flagged = build_report(**{**inputs, "diagnostics": diagnostics}, output_dir=tmp_path)
    html = open(flagged["html"]).read()
    assert 'id="covariance-warning"' in html
    assert f"{len(diagnostics)} of {len(diagnostics)} rebalances" in html and "40 active sleeves" in html


def test_conventions_state_net_return_and_survivorship(report):
    conv = report["conventions"]
    assert "(1 - c)(1 + g) - 1" in conv["net_return"] and "r = g - c" in conv["net_return"]
    assert "survivorship bias" in conv["survivorship_bias"]
    assert "OPTIMIZER's covariance estimator" in conv["risk_contribution"]


def test_ex_ante_risk_contributions_use_the_optimizers_estimator():
    from skfolio.datasets import load_sp500_dataset

    from quant_meta_assets.meta.optimize import optimize_meta_weights
    from quant_meta_assets.report.build import _estimator

    R = load_sp500_dataset().iloc[-800:, :6].pct_change().dropna()
    res = optimize_meta_weights(R, "risk_parity", lookback=126, rebalance_every=63, covariance="ledoit_wolf")
    rc = F.ex_ante_risk_contributions(res.weights, R, 126, *_estimator(res.diagnostics))
    np.testing.assert_allclose(rc.to_numpy(), 1 / 6, atol=1e-8)  # equal under the estimator it used
    sample = F.ex_ante_risk_contributions(res.weights, R, 126)  # the old, fixed sample estimator
    assert np.abs(sample.to_numpy() - 1 / 6).max() > 1e-3
