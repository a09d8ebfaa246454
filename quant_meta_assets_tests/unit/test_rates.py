"""One risk-free-rate convention (rates.py): sleeve cash earns it, metrics and optimizer subtract it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets import metrics, rates
from quant_meta_assets.meta.optimize import optimize_meta_weights
from quant_meta_assets.prices import asset_returns
from quant_meta_assets.sleeves.engine import simulate

RF = 0.02
RF_D = 1.02 ** (1 / 252) - 1  # by hand: 252 days of cash compound to exactly 2%


def _prices(n=300, seed=5):
    rng = np.random.default_rng(seed)
    idx = pd.bdate_range("2021-01-01", periods=n, name="date")
    return pd.DataFrame(100 * np.cumprod(1 + rng.normal(4e-4, 0.01, (n, 2)), axis=0), index=idx, columns=["A", "B"])


def test_daily_rate_is_geometric_and_project_rate_configurable(monkeypatch):
    assert rates.daily_rate(RF) == pytest.approx(RF_D, rel=1e-15)
    assert metrics.daily_rate is rates.daily_rate
    monkeypatch.setenv("QUANT_META_RISK_FREE_RATE", "0.03")
    assert rates.daily_rate(None) == pytest.approx(1.03 ** (1 / 252) - 1, rel=1e-15)
    monkeypatch.setenv("QUANT_META_RISK_FREE_RATE", "two percent")
    with pytest.raises(ValueError, match="QUANT_META_RISK_FREE_RATE='two percent' is not a number"):
        rates.project_risk_free_rate()


def test_sleeve_cash_earns_the_daily_risk_free_rate():
    prices = _prices()
    rets = asset_returns(prices)
    d = prices.index[0]
    # all cash for a year: compounds to exactly rf
    cash = simulate(pd.DataFrame([[0.0, 0.0]], index=[d], columns=["A", "B"]), rets, 0.0, RF)
    np.testing.assert_allclose(cash.returns.to_numpy(), RF_D, rtol=1e-13)
    assert np.prod(1 + cash.returns.iloc[:252]) == pytest.approx(1.02, rel=1e-13)
    # 40% A + 60% cash, buy and hold: day-by-day wealth loop with cash accruing rf_d
    sim = simulate(pd.DataFrame([[0.4, 0.0]], index=[d], columns=["A", "B"]), rets, 0.0, RF)
    a, c, ref = 0.4, 0.6, []
    for r in rets["A"].to_numpy():
        v0 = a + c
        a, c = a * (1 + r), c * (1 + RF_D)
        ref.append((a + c) / v0 - 1)
    np.testing.assert_allclose(sim.returns.to_numpy(), ref, rtol=0, atol=1e-14)
    # the sleeve beats the same book with idle cash by ~ cash share x rf
    idle = simulate(pd.DataFrame([[0.4, 0.0]], index=[d], columns=["A", "B"]), rets, 0.0, 0.0)
    assert (sim.returns - idle.returns).mean() == pytest.approx(0.6 * RF_D, rel=0.1)


def test_metrics_and_optimizer_use_the_same_daily_rf():
    r = asset_returns(_prices()).set_axis(["s0", "s1"], axis=1) + [1e-3, 5e-4]
    ex = r["s0"] - RF_D
    assert metrics.sharpe(r["s0"], RF) == pytest.approx(ex.mean() / ex.std(ddof=1) * np.sqrt(252), rel=1e-13)
    res = optimize_meta_weights(r, "max_sharpe", lookback=100, rebalance_every=100, risk_free_rate=RF)
    w = res.weights.iloc[0].to_numpy()
    X = r.iloc[:100].to_numpy()
    expected = (X.mean(axis=0) - RF_D) @ w / np.sqrt(w @ np.cov(X.T, ddof=1) @ w) * np.sqrt(252)
    assert res.diagnostics["weights_from"].iloc[0] == "max_sharpe"
    assert res.diagnostics["objective"].iloc[0] == pytest.approx(expected, rel=1e-12)  # was rf/252


def test_unset_rf_means_the_project_rate_everywhere(monkeypatch):
    monkeypatch.setenv("QUANT_META_RISK_FREE_RATE", str(RF))
    prices = _prices()
    rets = asset_returns(prices)
    from quant_meta_assets.sleeves.registry import SleeveProfile
    from quant_meta_assets.sleeves.engine import run_sleeve

    record = run_sleeve(SleeveProfile(name="half", strategy="equal_weight", params={}), prices)
    explicit = run_sleeve(SleeveProfile(name="half", strategy="equal_weight", params={}), prices, RF)
    pd.testing.assert_series_equal(record["returns"], explicit["returns"])
    assert metrics.sharpe(rets["A"]) == metrics.sharpe(rets["A"], RF)
    assert metrics.sortino(rets["A"]) == metrics.sortino(rets["A"], RF)
    r = rets.set_axis(["s0", "s1"], axis=1) + [1e-3, 5e-4]
    a = optimize_meta_weights(r, "max_sharpe", lookback=100, rebalance_every=100)
    b = optimize_meta_weights(r, "max_sharpe", lookback=100, rebalance_every=100, risk_free_rate=RF)
    pd.testing.assert_frame_equal(a.weights, b.weights)
