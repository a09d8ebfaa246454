"""turnover_space="asset": max_turnover and turnover_penalty on the meta trade in asset space."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.meta.costs import DriftedSleeveHoldings, cost_views
from quant_meta_assets.meta.drift import drift_weights
from quant_meta_assets.meta.optimize import OptimizerConfigError, optimize_meta_weights


@pytest.fixture(scope="module")
def three_sleeves():
    """a and b both hold asset X only, c holds Y only; sleeve returns are the assets' returns."""
    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2021-01-01", periods=160)
    assets = pd.DataFrame(rng.normal(3e-4, [0.01, 0.02], (160, 2)), index=dates, columns=["X", "Y"])
    noise = rng.normal(0, 0.002, 160)
    returns = pd.DataFrame({"a": assets["X"], "b": assets["X"] + noise, "c": assets["Y"]})
    weights = {"a": pd.DataFrame({"X": 1.0}, index=dates), "b": pd.DataFrame({"X": 1.0}, index=dates),
               "c": pd.DataFrame({"Y": 1.0}, index=dates)}
    return returns, assets, weights


def test_asset_space_cap_zero_lets_capital_move_between_sleeves_holding_the_same_assets(three_sleeves):
    returns, assets, weights = three_sleeves
    holdings = DriftedSleeveHoldings(weights, assets)
    # equal weight, projected onto what the cap allows
    common = dict(method="equal_weight", lookback=60, rebalance_every=20, max_turnover=0.0)
    sleeve = optimize_meta_weights(returns, **common)
    asset = optimize_meta_weights(returns, **common, turnover_space="asset", sleeve_holdings=holdings)
    first = asset.weights.iloc[0]
    for k in range(1, len(asset.weights)):
        d0, d1 = asset.weights.index[k - 1], asset.weights.index[k]
        rows = returns.loc[d0:d1].iloc[1:]
        held_a = drift_weights(asset.weights.iloc[k - 1], rows)  # the meta's holdings at d1
        w = asset.weights.iloc[k]
        # the book's X (a + b) and Y (c) exposures cannot move; how X is split between a and b can
        assert w["c"] == pytest.approx(held_a["c"], abs=1e-7)
        assert w["a"] + w["b"] == pytest.approx(held_a["a"] + held_a["b"], abs=1e-7)
        assert w["a"] == pytest.approx(w["b"], abs=1e-6)  # so a and b are re-split equally, for free
        held_s = drift_weights(sleeve.weights.iloc[k - 1], rows)
        np.testing.assert_allclose(sleeve.weights.iloc[k], held_s, atol=1e-7)  # sleeve space: no move
    assert first.equals(sleeve.weights.iloc[0])  # the first rebalance is unconstrained in both
    assert (sleeve.weights["a"] - sleeve.weights["b"]).abs().iloc[1:].min() > 1e-4  # drifted apart
    assert asset.diagnostics["notes"].iloc[1].startswith("asset-space trade")


def test_bad_turnover_space_is_named(three_sleeves):
    returns, _, _ = three_sleeves
    with pytest.raises(OptimizerConfigError, match="turnover_space"):
        optimize_meta_weights(returns, lookback=60, turnover_space="assets", max_turnover=0.1)
    with pytest.raises(OptimizerConfigError, match="sleeve_holdings"):
        optimize_meta_weights(returns, lookback=60, turnover_space="asset", max_turnover=0.1)


@pytest.fixture(scope="module")
def bundled():
    from quant_meta_assets.meta.returns import aggregate_returns
    from quant_meta_assets.prices import asset_returns, load_prices
    from quant_meta_assets.sleeves.registry import load_registry
    from quant_meta_assets.sleeves.engine import run_sleeve

    prices = load_prices()
    records = [run_sleeve(p, prices) for p in load_registry()]
    weights = {r["sleeve"]: r["weights"] for r in records}
    # the rows where all six sleeves are live: the penalty's effect is measured on a book that starts
    # with all of them (from the first live sleeve alone, a prohibitive penalty keeps that one sleeve)
    meta_returns = aggregate_returns(records).dropna()
    views = dict(sleeve_returns=meta_returns, sleeve_costs={r["sleeve"]: r["costs"] for r in records},
                 sleeve_weights=weights, asset_returns=asset_returns(prices))
    return meta_returns, DriftedSleeveHoldings(weights, asset_returns(prices)), views, (prices, records)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_high_asset_space_penalty_reduces_the_realised_book_turnover(bundled):
    meta_returns, holdings, views, _ = bundled
    free = optimize_meta_weights(meta_returns, method="min_variance")
    penalised = optimize_meta_weights(meta_returns, method="min_variance", turnover_penalty=50.0,
                                      turnover_space="asset", sleeve_holdings=holdings)
    book = {name: cost_views(meta_weights=res.weights, **views).totals()
            for name, res in (("free", free), ("penalised", penalised))}
    assert book["penalised"]["book_turnover"] < 0.9 * book["free"]["book_turnover"]
    assert book["penalised"]["book_cost"] < book["free"]["book_cost"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_asset_space_cap_holds_on_the_meta_trade_the_cost_views_measure(bundled):
    meta_returns, holdings, views, _ = bundled
    cap = 0.05
    res = optimize_meta_weights(meta_returns, method="risk_parity", max_turnover=cap,
                                turnover_space="asset", sleeve_holdings=holdings)
    meta_trades = cost_views(meta_weights=res.weights, **views).daily["standalone_meta_volume"]
    later = meta_trades.iloc[1:]  # the first day builds the book from cash (uncapped)
    assert later.max() <= cap + 1e-7
    assert later.max() > cap - 1e-4  # the cap binds
    assert not res.diagnostics["notes"].fillna("").str.contains("relaxed").any()


@pytest.mark.timeout(120)
def test_sdk_stage_builds_the_holdings_from_the_context(bundled):
    from quant_meta_assets import MetaContext, QuantSDK
    from quant_meta_assets.errors import StageInputError

    meta_returns, holdings, _, (prices, records) = bundled
    ctx = MetaContext(meta_returns=meta_returns.iloc[-600:], prices=prices, sleeve_results=records)
    params = dict(method="risk_parity", rebalance_every=63, max_turnover=0.03, turnover_space="asset")
    QuantSDK.run_stage("meta.optimize", ctx, **params)
    direct = optimize_meta_weights(meta_returns.iloc[-600:], **params, sleeve_holdings=holdings)
    pd.testing.assert_frame_equal(ctx.meta_weights, direct.weights, atol=1e-12, rtol=0)
    with pytest.raises(StageInputError, match="turnover_space='asset' needs sleeve_results and prices"):
        QuantSDK.run_stage("meta.optimize", MetaContext(meta_returns=meta_returns), **params)
