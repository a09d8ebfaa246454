"""An incremental update gives the numbers of a full recompute (returns, weights, costs, turnover,
delistings), for every built-in, on the bundled data and on a point-in-time panel."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.costs.cost_model import CostModel
from quant_meta_assets.prices import load_prices, period_ends, validate_prices
from quant_meta_assets.sleeves.registry import SleeveProfile, load_registry
from quant_meta_assets.sleeves.strategies import BUILTIN_STRATEGIES
from quant_meta_assets.synthetic_book import listed_life, point_in_time_prices
from quant_meta_assets_tests.unit.incremental.helpers import TOLERANCE, check_update
from quant_meta_assets_tests.unit.sleeves.test_point_in_time import PARAMS as PIT_PARAMS

pytestmark = [pytest.mark.timeout(300)]

HOLDING = CostModel(default_borrow_bps=40.0, funding_spread_bps=75.0)


@pytest.fixture(scope="module")
def bundled() -> pd.DataFrame:
    return load_prices()


def _month_end_cut(prices: pd.DataFrame, back: int) -> int:
    """Rows up to and including a real month end about ``back`` rows before the end."""
    ends = prices.index.get_indexer(period_ends(prices.index[:-back], "monthly")[:-1])
    return int(ends[-1]) + 1


@pytest.mark.parametrize("profile", load_registry(), ids=lambda p: p.name)
def test_every_default_sleeve_updates_like_a_full_run_on_the_bundled_data(bundled, profile):
    # mid-month cut: the previous last day was a partial period that continues; 1, 5, then 63 days
    # (month ends, hence rebalances, inside), each chained on the previous update
    check_update(profile, bundled, len(bundled) - 80, (1, 5, 63), rf=0.02)
    # cut on a real month end: with one more day its target (untraded as the last day) now trades
    check_update(profile, bundled, _month_end_cut(bundled, 30), (1, 5), rf=0.02)


@pytest.mark.parametrize("rebalance", ["daily", "weekly", "quarterly"])
@pytest.mark.parametrize("strategy", ["min_variance", "momentum_12_1"])
def test_every_rebalance_frequency(bundled, strategy, rebalance):
    profile = SleeveProfile(name="s", strategy=strategy, rebalance=rebalance, cost_bps=7)
    check_update(profile, bundled, len(bundled) - 70, (1, 5, 63))


def test_holding_costs_leverage_and_per_asset_costs(bundled):
    # a levered book pays funding on its borrowed cash; no cost_bps: each asset's own half-spread
    model = dataclasses.replace(HOLDING, half_spread_bps={t: 2.0 + i for i, t in enumerate(bundled.columns)})
    profile = SleeveProfile(name="lev", strategy="trend_vol_target", rebalance="weekly", max_gross=2.0,
                            params={"target_vol": 0.4, "max_leverage": 1.8})
    check_update(profile, bundled, len(bundled) - 70, (1, 5, 63), rf=0.03, model=model)


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return validate_prices(point_in_time_prices(n_assets=12, n_days=600, seed=3))


@pytest.mark.parametrize("strategy", sorted(BUILTIN_STRATEGIES))
def test_every_builtin_updates_like_a_full_run_on_a_point_in_time_panel(panel, strategy):
    profile = SleeveProfile(name=strategy, strategy=strategy, params=PIT_PARAMS[strategy], rebalance="weekly",
                            cost_bps=5)
    life = listed_life(panel)
    delisted = life["last"][life["last"] < panel.index[-1]].sort_values()
    # cut exactly on a delisting (the ticker's last price is the previous run's last day), then
    # append across the other listings and delistings
    at = int(panel.index.get_loc(delisted.iloc[len(delisted) // 2])) + 1
    check_update(profile, panel, at, (1, 5, 63), rf=0.02, model=HOLDING)
    check_update(profile, panel, 300, (63, 63, 63, 63), rf=0.02)


def test_the_delisting_at_the_previous_last_day_is_listed_once(panel):
    profile = SleeveProfile(name="ew", strategy="equal_weight", rebalance="monthly", cost_bps=5)
    life = listed_life(panel)
    ticker, day = next((t, d) for t, d in life["last"].items() if d < panel.index[-5])
    at = int(panel.index.get_loc(day)) + 1
    from quant_meta_assets.sleeves.engine import run_sleeve
    from quant_meta_assets_tests.unit.incremental.helpers import updated

    before = run_sleeve(profile, panel.iloc[:at], 0.0, CostModel())
    assert ticker not in [d["ticker"] for d in before["delistings"]]  # its last price was the last day
    after = updated(profile, before, panel.iloc[: at + 1], 0.0, CostModel())
    closes = [d for d in after["delistings"] if d["ticker"] == ticker]
    assert closes and closes[0]["last_price_date"] == day.date().isoformat()
    assert after["weights"].iloc[-1][ticker] == 0.0


def test_an_update_is_much_cheaper_than_a_full_run():
    from quant_meta_assets.synthetic_book import factor_prices

    import time

    from quant_meta_assets.incremental.resume import plan_sleeve, run_sleeve_update
    from quant_meta_assets.sleeves.engine import run_sleeve

    prices = factor_prices(200, 2520, seed=1)
    profile = SleeveProfile(name="mom", strategy="momentum_12_1", rebalance="monthly", cost_bps=5,
                            params={"top_n": 20})
    record = run_sleeve(profile, prices.iloc[:-1], 0.0, CostModel())
    t0 = time.perf_counter()
    full = run_sleeve(profile, prices, 0.0, CostModel())
    full_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = plan_sleeve(profile, prices, record)
    part = run_sleeve_update(profile, prices.iloc[plan.window_start:], record["resume_state"], 0.0, CostModel())
    update_s = time.perf_counter() - t0
    assert len(part["returns"]) == 1 and np.isfinite(full["returns"].iloc[-1])
    assert abs(part["returns"].iloc[-1] - full["returns"].iloc[-1]) <= TOLERANCE
    assert update_s < full_s  # the window is ~260 rows, not 2,520
