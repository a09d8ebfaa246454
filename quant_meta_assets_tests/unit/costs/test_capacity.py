"""costs.capacity on a synthetic panel whose impact, curve and halving AUM are computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.costs.capacity import capacity
from quant_meta_assets.costs.cost_model import CostModel


def test_square_root_impact_and_the_halving_aum():
    n_hist, n_live = 300, 500
    days = pd.bdate_range("2000-01-03", periods=n_hist + n_live)
    # asset X alternates +1% / -1%: over any 252 earlier days (an even count) the mean is 0 and
    # std(ddof=1) = 0.01 sqrt(252/251); Y never trades
    alt = np.where(np.arange(len(days)) % 2 == 0, 0.01, -0.01)
    asset_returns = pd.DataFrame({"X": alt, "Y": 0.0}, index=days)
    live = days[n_hist:]
    trades = pd.DataFrame({"X": np.where(np.arange(n_live) % 2 == 0, 0.1, -0.1), "Y": 0.0}, index=live)
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 0.01, n_live)
    r = pd.Series(0.0008 + noise - noise.mean(), index=live)  # mean exactly 8 bps a day
    model = CostModel(adv=pd.Series({"X": 1e8, "Y": 1e8}), impact_coefficient=1.0)
    cap = capacity(r, trades, asset_returns, model, aums=[1e6, 4e6, 1e8], risk_free_rate=0.0)

    sigma = 0.01 * np.sqrt(252 / 251)
    k = sigma * 0.1 ** 1.5 / 1e8 ** 0.5  # b sigma |z|^1.5 / ADV^0.5 per day, per sqrt(AUM)
    impact = cap.curve["impact_bps_per_year"]
    assert impact.loc[1e6] == pytest.approx(np.sqrt(1e6) * k * 252 * 1e4, rel=1e-9)
    assert impact.loc[4e6] / impact.loc[1e6] == pytest.approx(2.0, rel=1e-12)  # AUM^0.5
    # a constant daily cost k sqrt(AUM) moves the mean only: Sharpe halves at k sqrt(AUM) = mean / 2
    mean, sd = r.mean(), r.std(ddof=1)
    assert cap.sharpe_without_impact == pytest.approx(mean / sd * np.sqrt(252), rel=1e-12)
    assert cap.curve.loc[1e8, "sharpe"] == pytest.approx((mean - 1e4 * k) / sd * np.sqrt(252), rel=1e-9)
    assert cap.halving_aum == pytest.approx((mean / 2 / k) ** 2, rel=1e-5)


def test_no_positive_sharpe_no_halving_aum():
    days = pd.bdate_range("2000-01-03", periods=40)
    rets = pd.DataFrame({"X": np.where(np.arange(40) % 2 == 0, 0.01, -0.01)}, index=days)
    trades = pd.DataFrame({"X": 0.1}, index=days[10:])
    r = pd.Series(np.linspace(-0.01, 0.0, 30), index=days[10:])
    cap = capacity(r, trades, rets, CostModel(adv=pd.Series({"X": 1e8})), risk_free_rate=0.0)
    assert cap.halving_aum is None
