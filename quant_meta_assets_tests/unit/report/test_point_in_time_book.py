"""The whole meta chain (returns, optimize, flatten, report with both cost views) on a
point-in-time panel: tickers list late and delist, every built-in sleeve runs on it."""

from __future__ import annotations

import numpy as np
import pytest

from quant_meta_assets import stages
from quant_meta_assets.prices import validate_prices
from quant_meta_assets.sleeves.engine import run_sleeve
from quant_meta_assets.sleeves.registry import SleeveProfile
from quant_meta_assets.synthetic_book import point_in_time_prices
from quant_meta_assets_tests.unit.sleeves.test_point_in_time import PARAMS


@pytest.mark.timeout(240)
@pytest.mark.parametrize("turnover_space", ["sleeve", "asset"])
def test_meta_chain_and_report_reconcile_on_a_point_in_time_panel(tmp_path, turnover_space):
    prices = validate_prices(point_in_time_prices(n_assets=12, n_days=600, seed=3))
    records = [run_sleeve(SleeveProfile(name=s, strategy=s, params=p, rebalance="weekly", cost_bps=5), prices,
                          risk_free_rate=0.02) for s, p in PARAMS.items()]
    assert any(r["delistings"] for r in records)
    out = stages.run_returns(sleeve_results=records)
    opt = stages.run_optimize(meta_returns=out["meta_returns"], sleeve_results=records, prices=prices,
                              method="risk_parity", lookback=126, rebalance_every=21, risk_free_rate=0.02,
                              max_turnover=1.5, turnover_space=turnover_space)
    flat = stages.run_flatten(meta_weights=opt["meta_weights"], meta_returns=out["meta_returns"],
                              sleeve_results=records)
    report = stages.run_report(prices=prices, sleeve_results=records, meta_returns=out["meta_returns"],
                               output_dir=tmp_path,
                               risk_free_rate=0.02, **opt, **flat)["report"]
    assert report["reconciled"]
    assert "a point-in-time universe" in report["conventions"]["survivorship_bias"]
    meta = report["portfolio_returns"]["meta"]
    assert np.isfinite(meta.to_numpy()).all()
    # the book holds nothing on a ticker without a price that day
    asset_weights = flat["flattened_weights"]
    listed = prices.notna().reindex(index=asset_weights.index, columns=asset_weights.columns)
    assert (asset_weights.where(~listed, 0.0) == 0.0).all().all()
