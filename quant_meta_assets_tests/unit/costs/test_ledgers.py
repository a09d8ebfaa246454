"""Hand-computed ledgers of the book's economics (tiny panels, asset returns 0, rf 0): every number
below is worked out by hand in the comments, not by the code under test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.costs.cost_model import CostModel, annual_bps_to_daily
from quant_meta_assets.meta.costs import cost_views
from quant_meta_assets.sleeves.engine import simulate

H = 5.0  # the default half-spread (the meta trade's rate), bps


@pytest.fixture
def days():
    return pd.bdate_range("2024-01-01", periods=6)


def book(targets: dict, rates: dict, meta: dict, days, model: CostModel | None = None):
    """Sleeves simulated by the engine at their own rates on zero asset returns, then both views."""
    returns = pd.DataFrame(0.0, index=days, columns=["X", "Y"])
    model = model or CostModel(default_half_spread_bps=H)

    def rows(mapping, columns):
        return pd.DataFrame(list(mapping.values()), index=pd.DatetimeIndex(list(mapping)), columns=columns,
                            dtype=float)

    sims = {s: simulate(rows(t, ["X", "Y"]), returns, rates[s], 0.0, model) for s, t in targets.items()}
    views = cost_views(meta_weights=rows(meta, list(targets)),
                       sleeve_returns=pd.DataFrame({s: sim.returns for s, sim in sims.items()}),
                       sleeve_costs=pd.DataFrame({s: sim.costs for s, sim in sims.items()}),
                       sleeve_weights={s: sim.weights for s, sim in sims.items()},
                       asset_returns=returns, cost_model=model)
    assert views.reconciled, views.checks.to_string()
    return views.daily


def test_opposite_sides_the_book_pays_only_the_net_at_the_blended_rate(days):
    # A (10 bps): X 1 -> 0.5, Y 0 -> 0.5; B (20 bps): X 0 -> 0.25, Y 1 -> 0.75; meta 50/50.
    d = book({"A": {days[0]: [1, 0], days[2]: [0.5, 0.5]}, "B": {days[0]: [0, 1], days[2]: [0.25, 0.75]}},
             {"A": 10.0, "B": 20.0}, {days[1]: [0.5, 0.5]}, days)
    t = days[3]  # first day the sleeves' new weights earn
    # component trades of X: A 0.5 x (-0.5) = -0.25 at 10 bps, B 0.5 x 0.25 = +0.125 at 20 bps
    # net X = -0.125; blended = (0.25*10 + 0.125*20) / 0.375 = 13.333 bps; Y is the mirror image
    blended = (0.25 * 10 + 0.125 * 20) / 0.375 / 1e4
    assert d.loc[t, "book_volume"] == pytest.approx(0.25, abs=1e-15)
    assert d.loc[t, "unnetted_book_volume"] == pytest.approx(0.75, abs=1e-15)
    assert d.loc[t, "savings_volume"] == pytest.approx(0.5, abs=1e-15)
    assert d.loc[t, "book_cost"] == pytest.approx(2 * 0.125 * blended, abs=1e-15)  # 3.333 bps
    # stand-alone: A turns over 1.0 at 10 bps, B 0.5 at 20 bps, each on half the capital: 5 + 5 bps
    assert d.loc[t, "standalone_cost"] == pytest.approx(10e-4, abs=1e-15)
    assert d.loc[t, "savings_cost"] == pytest.approx(2 * blended * (0.375 - 0.125), abs=1e-15)  # 6.667 bps
    assert d.loc[t, "netted_return"] == pytest.approx(-2 * 0.125 * blended, abs=1e-15)
    # day 2 builds the book from cash: the meta trade buys 0.5 X + 0.5 Y at the half-spread
    assert d.loc[days[2], "book_cost"] == pytest.approx(1.0 * H / 1e4, abs=1e-15)


@pytest.mark.parametrize("rate_a, rate_b", [(5.0, 5.0), (5.0, 30.0), (0.0, 10.0)])
def test_identical_twins_save_nothing_at_any_rate(days, rate_a, rate_b):
    # twins hold X, then both move all of it to Y: same-sign trades, nothing crosses
    twin = {days[0]: [1, 0], days[2]: [0, 1]}
    d = book({"A": twin, "B": twin}, {"A": rate_a, "B": rate_b}, {days[1]: [0.5, 0.5]}, days)
    t = days[3]
    # book: X -1 and Y +1 at the blended (0.5 a + 0.5 b) / 1; stand-alone: 0.5 x 2 x a + 0.5 x 2 x b
    assert d.loc[t, "book_cost"] == pytest.approx(2 * (rate_a + rate_b) / 2 / 1e4, abs=1e-15)
    assert d.loc[t, "standalone_cost"] == pytest.approx((rate_a + rate_b) / 1e4, abs=1e-15)
    assert d["savings_cost"].abs().max() < 1e-15
    assert d["savings_volume"].abs().max() < 1e-15


def test_a_short_pays_borrow_in_its_account_and_the_book_only_on_its_net_short(days):
    # A: X 1.0, Y -0.5 (short); B: Y 0.5. Borrow 100 bps/yr on Y, 0 on X. Meta 50/50.
    model = CostModel(default_half_spread_bps=H, borrow_bps={"Y": 100.0})
    f = (1.01) ** (1 / 252) - 1  # daily borrow fee on Y, geometric
    assert float(annual_bps_to_daily(100.0)) == pytest.approx(f, rel=1e-15)
    d = book({"A": {days[0]: [1.0, -0.5]}, "B": {days[0]: [0.0, 0.5]}}, {"A": 10.0, "B": 10.0},
             {days[1]: [0.5, 0.5]}, days, model)
    # the book holds Y: 0.5 x (-0.5) + 0.5 x 0.5 = 0: no borrow; A pays 0.5 f on its own short
    assert d["book_holding_cost"].abs().max() == 0.0
    # the book's sub-accounts drift with GROSS returns (0 here): A's share stays 0.5, so the same
    # holdings un-netted pay 0.5 x 0.5 f every day and the book saves all of it
    np.testing.assert_allclose(d["savings_cost_holding"], 0.25 * f, rtol=1e-12)
    # no trades after the build: the book returns 0
    np.testing.assert_allclose(d["netted_return"].iloc[1:], 0.0, atol=1e-18)
    # stand-alone: A's share drifts with its net return -0.5 f: m_A' = m_A (1 - 0.5 f) / (1 - m_A 0.5 f)
    m_a, expected = 0.5, []
    for _ in range(len(d)):
        expected.append(m_a * 0.5 * f)
        m_a = m_a * (1 - 0.5 * f) / (1 - m_a * 0.5 * f)
    np.testing.assert_allclose(d["standalone_sleeve_cost"], expected, rtol=1e-12)
    np.testing.assert_allclose(d["standalone_return"].iloc[1:], -np.array(expected[1:]), rtol=1e-12)


def test_a_lone_short_pays_the_same_borrow_in_both_views(days):
    model = CostModel(default_half_spread_bps=H, default_borrow_bps=250.0)
    f = (1.025) ** (1 / 252) - 1
    d = book({"A": {days[0]: [0.5, -0.5]}}, {"A": 10.0}, {days[1]: [1.0]}, days, model)
    np.testing.assert_allclose(d["book_holding_cost"], 0.5 * f, rtol=1e-12)
    np.testing.assert_allclose(d["standalone_sleeve_cost"], 0.5 * f, rtol=1e-12)
    assert d["savings_cost"].abs().max() < 1e-18


def test_engine_charges_per_ticker_rates_borrow_and_funding(days):
    returns = pd.DataFrame(0.0, index=days, columns=["X", "Y"])
    targets = pd.DataFrame([[1.5, -0.2], [1.0, 0.0]], index=days[[0, 2]], columns=["X", "Y"])
    model = CostModel(default_borrow_bps=100.0, funding_spread_bps=200.0)
    sim = simulate(targets, returns, pd.Series({"X": 2.0, "Y": 8.0}), 0.0, model)
    f, s = (1.01) ** (1 / 252) - 1, (1.02) ** (1 / 252) - 1
    hold = 0.2 * f + (1.3 - 1.0) * s  # short 0.2 of Y, borrowed cash 1.3 - 1
    # day 1: build 1.5 X at 2 bps + 0.2 Y at 8 bps; day 3: sell 0.5 X, buy back 0.2 Y; no holding cost after
    expected = [0.0, 1.5 * 2e-4 + 0.2 * 8e-4 + hold, hold, 0.5 * 2e-4 + 0.2 * 8e-4, 0.0, 0.0]
    np.testing.assert_allclose(sim.costs.to_numpy(), expected, rtol=1e-12, atol=1e-18)
    with pytest.raises(Exception, match="'Y'"):
        simulate(targets, returns, pd.Series({"X": 2.0}), 0.0)


def test_a_sleeve_without_cost_bps_pays_each_assets_half_spread_in_both_views(days):
    # A trades at the cost file's half-spreads (X 2 bps, Y 8 bps), B at its registry 20 bps; meta 50/50.
    model = CostModel(default_half_spread_bps=H, half_spread_bps={"X": 2.0, "Y": 8.0})
    d = book({"A": {days[0]: [1, 0], days[2]: [0.5, 0.5]}, "B": {days[0]: [0, 1], days[2]: [0.25, 0.75]}},
             {"A": pd.Series({"X": 2.0, "Y": 8.0}), "B": 20.0}, {days[1]: [0.5, 0.5]}, days, model)
    t = days[3]
    # X: A -0.25 at 2, B +0.125 at 20 -> blended (0.5 + 2.5) / 0.375 = 8 bps on |net| 0.125 = 1 bp
    # Y: A +0.25 at 8, B -0.125 at 20 -> blended (2 + 2.5) / 0.375 = 12 bps on 0.125 = 1.5 bp
    assert d.loc[t, "book_cost"] == pytest.approx(2.5e-4, abs=1e-15)
    # stand-alone: A 0.5 x (0.5 x 2 + 0.5 x 8) = 2.5 bps, B 0.5 x (0.5 x 20) = 5 bps
    assert d.loc[t, "standalone_cost"] == pytest.approx(7.5e-4, abs=1e-15)
    assert d.loc[t, "savings_cost"] == pytest.approx(8e-4 * 0.25 + 12e-4 * 0.25, abs=1e-15)
    # the meta's build from cash: 0.5 X at 2 bps + 0.5 Y at 8 bps
    assert d.loc[days[2], "book_cost"] == pytest.approx(5e-4, abs=1e-15)


def test_registry_entry_without_cost_bps_trades_at_the_half_spreads():
    from quant_meta_assets.prices import load_prices
    from quant_meta_assets.sleeves.engine import run_sleeve
    from quant_meta_assets.sleeves.registry import SleeveProfile

    prices = load_prices()
    a, b = list(prices.columns[:2])
    model = CostModel(half_spread_bps={a: 1.0, b: 50.0})
    profile = SleeveProfile(name="ew2", strategy="equal_weight", universe=(a, b))
    assert profile.cost_bps is None
    record = run_sleeve(profile, prices, 0.0, model)
    first = record["costs"][record["costs"] > 0].iloc[0]
    assert first == pytest.approx(0.5 * 1e-4 + 0.5 * 50e-4, rel=1e-12)  # the initial build, 1/2 in each


def test_leverage_in_one_sleeve_against_cash_in_another_pays_no_funding_in_the_book(days):
    # A: 1.5 in X (borrows 0.5 of cash); B: 0.5 in Y (0.5 cash). Funding spread 200 bps/yr. Meta 50/50.
    model = CostModel(default_half_spread_bps=H, funding_spread_bps=200.0)
    s = (1.02) ** (1 / 252) - 1
    d = book({"A": {days[0]: [1.5, 0.0]}, "B": {days[0]: [0.0, 0.5]}}, {"A": 10.0, "B": 10.0},
             {days[1]: [0.5, 0.5]}, days, model)
    # the book holds 0.75 X + 0.25 Y = 1.0: no borrowed cash; un-netted, A pays 0.5 x 0.5 s
    assert d["book_holding_cost"].abs().max() == 0.0
    np.testing.assert_allclose(d["savings_cost_holding"], 0.25 * s, rtol=1e-12)
    # the build: the meta buys 0.75 X + 0.25 Y from cash at the 5 bps half-spread
    assert d["book_cost"].iloc[0] == pytest.approx(1.0 * H / 1e4, abs=1e-15)
