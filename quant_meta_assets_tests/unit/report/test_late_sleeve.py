"""The report on a sleeve that goes live late (SDK path, no common-start policy): no NaN -> 0."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.meta.flatten import flatten_weights
from quant_meta_assets.meta.optimize import optimize_meta_weights
from quant_meta_assets.report import build_report


@pytest.mark.timeout(120)
def test_report_on_a_late_sleeve_reconciles_and_buys_no_dead_sleeve(tmp_path):
    rng = np.random.default_rng(13)
    dates = pd.bdate_range("2020-01-01", periods=400, name="date")
    assets = pd.DataFrame(rng.normal(4e-4, 0.01, (400, 3)), index=dates, columns=["X", "Y", "Z"])
    sleeve_returns = assets.set_axis(["a", "b", "c"], axis=1)
    sleeve_returns.iloc[:250, 2] = np.nan  # 'c' goes live on row 250
    weights = {s: pd.DataFrame(1.0, index=dates, columns=[t]) for s, t in zip("abc", "XYZ", strict=True)}
    weights["c"].iloc[:250] = 0.0
    opt = optimize_meta_weights(sleeve_returns, "risk_parity", lookback=100, rebalance_every=21)
    report = build_report(
        sleeve_returns=sleeve_returns, meta_weights=opt.weights, diagnostics=opt.diagnostics,
        flatten=flatten_weights(opt.weights, weights, sleeve_returns,
                                {s: pd.Series(0.0, index=dates) for s in "abc"}), sleeve_weights=weights,
        sleeve_costs={s: pd.Series(0.0, index=dates) for s in "abc"}, sleeve_turnover={},
        asset_returns=assets, benchmark=None, lineage=None, previous=None, output_dir=tmp_path,
    )
    assert report["reconciled"]
    html = open(report["html"], encoding="utf-8").read()
    top = html[html.index("<main>"):html.index('class="cards"')]  # said before any number
    assert (f"Sleeves come and go.</b> The book starts on {report['meta_returns'].index[0].date()} with 2 of its 3 "
            f"sleeves live") in top and f"all 3 are live from {dates[250].date()}" in top
    meta = report["portfolio_returns"]["meta"]
    assert meta.notna().all() and (meta != 0.0).all()
    ew = report["portfolio_returns"]["equal_weight_meta"]
    by_hand = 0.5 * (sleeve_returns["a"] + sleeve_returns["b"]).loc[dates[100]]
    assert ew.loc[dates[100]] == pytest.approx(by_hand, abs=1e-15)  # 1/N of the LIVE sleeves
    assert np.isfinite(report["risk_contributions"]["ex_post"][["rc_avg_weights", "rc_realised"]]).all().all()
    ex_ante = report["risk_contributions"]["ex_ante"]
    assert np.isfinite(ex_ante).all().all() and (ex_ante.loc[opt.weights["c"] == 0.0, "c"] == 0.0).all()


@pytest.mark.timeout(180)
def test_report_reconciles_when_sleeve_cash_earns_rf(tmp_path):
    """Sleeves with cash and rf = 3%: the identities credit the cash interest (issue 13 item 3), and
    the published asset weights earn the headline return (issue 18 item 4: before, flatten drifted
    the shares with NET sleeve returns, up to 1.96e-4 of weight away from the headline book)."""
    from quant_meta_assets.prices import asset_returns, load_prices
    from quant_meta_assets.sleeves.registry import load_registry
    from quant_meta_assets.sleeves.engine import run_sleeve

    prices = load_prices().loc["2015-01-01":]
    profiles = [p for p in load_registry() if p.name in ("trend_vol_target", "equal_weight", "low_volatility")]
    records = [run_sleeve(p, prices, risk_free_rate=0.03) for p in profiles]
    sleeve_returns = pd.DataFrame({r["sleeve"]: r["returns"] for r in records}).dropna()
    opt = optimize_meta_weights(sleeve_returns, "risk_parity", lookback=126, rebalance_every=21)
    weights = {r["sleeve"]: r["weights"] for r in records}
    costs = {r["sleeve"]: r["costs"] for r in records}
    report_flatten = flatten_weights(opt.weights, weights, sleeve_returns, costs)
    report = build_report(
        sleeve_returns=sleeve_returns, meta_weights=opt.weights, diagnostics=opt.diagnostics,
        flatten=report_flatten, sleeve_weights=weights, sleeve_costs=costs,
        sleeve_turnover={r["sleeve"]: r["turnover"] for r in records}, asset_returns=asset_returns(prices),
        benchmark=None, lineage=None, previous=None, output_dir=tmp_path, risk_free_rate=0.03,
    )
    assert report["reconciled"]
    assert report["attribution"]["by_asset"].loc["(cash interest)", "contribution"] > 0
    # issue 18 item 4: the published holdings are the headline book's, to 1e-12 every day
    checks = report["reconciliations"].set_index("check")
    for name in ("book_holdings_return", "published_weights_are_book"):
        assert checks.loc[name, "passed"] and checks.loc[name, "max_abs_diff"] <= 1e-12, name
    held = report["costs"]["daily"].index
    H = report_flatten.asset_weights.loc[held]
    R = asset_returns(prices).loc[held, H.columns]
    rf_d = (1.03) ** (1 / 252) - 1
    by_hand = (H * R).sum(axis=1) + (1 - H.sum(axis=1)) * rf_d - report["costs"]["daily"]["book_cost"]
    np.testing.assert_allclose(by_hand, report["meta_returns"], rtol=0, atol=1e-12)
    net_drifted = flatten_weights(opt.weights, weights, sleeve_returns, {s: c * 0.0 for s, c in costs.items()})
    assert (net_drifted.asset_weights - H).abs().to_numpy().max() > 1e-8  # the net drift was another book
