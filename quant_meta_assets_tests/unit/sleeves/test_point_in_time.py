"""Point-in-time universes: tickers list late and delist; strategies and the engine see only what
was tradable on each date, and a delisted position is closed at its last price into cash."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.errors import PriceDataError, StrategyOutputError
from quant_meta_assets.prices import asset_returns, tradable, validate_prices
from quant_meta_assets.sleeves.engine import run_sleeve, simulate, validate_target_weights
from quant_meta_assets.sleeves.lookahead import check_prefix_invariance
from quant_meta_assets.sleeves.registry import SleeveProfile
from quant_meta_assets.sleeves.strategies import BUILTIN_STRATEGIES
from quant_meta_assets.synthetic_book import factor_prices, listed_life, point_in_time_prices

pytestmark = [pytest.mark.timeout(120)]

# every built-in, with windows that fit the 600-day panel
PARAMS = {
    "momentum_12_1": {"lookback": 126, "skip": 21, "top_n": 3},
    "short_term_reversal": {"lookback": 5, "top_n": 3},
    "low_volatility": {"lookback": 63, "top_n": 4},
    "trend_vol_target": {"lookback": 126, "vol_lookback": 63, "target_vol": 0.10, "max_leverage": 1.0},
    "min_variance": {"lookback": 126},
    "equal_weight": {},
}
# rows of prices a ticker needs inside its life before a strategy may hold it (window + 1 price)
NEEDS = {"momentum_12_1": 127, "short_term_reversal": 6, "low_volatility": 64, "trend_vol_target": 127,
         "min_variance": 127, "equal_weight": 1}


@pytest.fixture(scope="module")
def panel() -> pd.DataFrame:
    return validate_prices(point_in_time_prices(n_assets=12, n_days=600, seed=3))


def test_the_panel_lists_and_delists_deterministically(panel):
    life = listed_life(panel)
    assert (life["first"] > panel.index[0]).sum() >= 3 and (life["last"] < panel.index[-1]).sum() >= 3
    pd.testing.assert_frame_equal(panel, validate_prices(point_in_time_prices(n_assets=12, n_days=600, seed=3)))
    present = panel.notna().to_numpy()
    for j, ticker in enumerate(panel.columns):  # NaN only outside the listed life
        lo, hi = panel.index.get_loc(life.loc[ticker, "first"]), panel.index.get_loc(life.loc[ticker, "last"])
        assert present[lo : hi + 1, j].all() and not present[:lo, j].any() and not present[hi + 1 :, j].any()


@pytest.mark.parametrize("strategy", sorted(BUILTIN_STRATEGIES))
def test_every_builtin_holds_only_tradable_tickers_and_no_prelisting_data(panel, strategy):
    fn = BUILTIN_STRATEGIES[strategy]
    targets = validate_target_weights(fn(panel, **PARAMS[strategy]), panel, None, strategy)  # no untradable weight
    assert np.isfinite(targets.to_numpy()).all()
    listed = tradable(panel).reindex(targets.index)
    assert (targets.where(~listed, 0.0) == 0.0).all().all()
    # a ticker is held only once its window is inside its listed life
    life = listed_life(panel)
    for ticker in panel.columns:
        held = targets.index[targets[ticker].to_numpy() != 0.0]
        if len(held):
            rows_listed = panel.index.get_loc(held[0]) - panel.index.get_loc(life.loc[ticker, "first"]) + 1
            assert rows_listed >= NEEDS[strategy], (ticker, held[0])
    # every ticker that lists late is held at some point by the long-only cross-sectional books
    gross = targets.abs().sum(axis=1)
    assert (gross <= 1.0 + 1e-12).all()
    if strategy != "trend_vol_target":  # fully invested whenever something is tradable
        assert np.allclose(gross[gross > 0], 1.0)
    # prefix invariance: the rows up to a date do not change when later prices are appended (the
    # project's look-ahead check, then a cut in the middle of the listings and delistings)
    check = check_prefix_invariance(fn, panel, PARAMS[strategy], targets, strategy=strategy, sleeve=strategy,
                                    validate=lambda raw, p: validate_target_weights(raw, p, None, strategy))
    assert check.compared > 0 and not check.suspect, check.message
    cut = panel.index[450]
    early = fn(panel.loc[:cut], **PARAMS[strategy])
    early = early.loc[early.index.isin(targets.index)]  # min_variance: the cut closes a partial month
    pd.testing.assert_frame_equal(early, targets.loc[:cut].reindex(columns=early.columns), check_freq=False,
                                  atol=1e-12, rtol=0, check_names=False)


@pytest.mark.parametrize("strategy", sorted(BUILTIN_STRATEGIES))
def test_every_builtin_runs_as_a_sleeve_on_the_panel(panel, strategy):
    profile = SleeveProfile(name=strategy, strategy=strategy, params=PARAMS[strategy], rebalance="weekly",
                            cost_bps=5)
    record = run_sleeve(profile, panel, risk_free_rate=0.02)
    live = record["returns"].loc[record["start"]:]
    assert np.isfinite(live.to_numpy()).all()  # an unheld ticker's NaN never poisons the sleeve
    weights = record["weights"]
    rets = asset_returns(panel)
    assert (weights.where(rets.isna(), 0.0) == 0.0).all().all()  # nothing held on a NaN return
    # independent check of the value path: held weights x asset returns + cash x rf - cost
    rf_d = 1.02 ** (1 / 252) - 1
    gross = (weights * rets.fillna(0.0)).sum(axis=1) + (1.0 - weights.sum(axis=1)) * rf_d
    np.testing.assert_allclose((gross - record["costs"]).loc[live.index], live, atol=1e-12, rtol=0)
    for closed in record["delistings"]:
        ticker, day = closed["ticker"], pd.Timestamp(closed["last_price_date"])
        assert day == listed_life(panel).loc[ticker, "last"] and 0 < closed["weight"] <= 1
        assert weights.loc[weights.index > day, ticker].eq(0.0).all()


def test_equal_weight_is_held_into_a_delisting_and_closes_it(panel):
    record = run_sleeve(SleeveProfile(name="ew", strategy="equal_weight", rebalance="monthly"), panel)
    delisted = listed_life(panel).query("last < @panel.index[-1]").index
    closed = {d["ticker"] for d in record["delistings"]}
    assert closed and closed <= set(delisted)


def test_a_target_on_an_untradable_ticker_is_named(panel):
    life = listed_life(panel)
    late = life.index[life["first"] > panel.index[0]][0]
    day = panel.index[0]
    bad = pd.DataFrame({late: [0.5], panel.columns[0]: [0.5]}, index=[day])
    with pytest.raises(StrategyOutputError, match=rf"sleeve 'x': target weight 0.5 on ticker '{late}' on "
                                                  rf"{day.date()}, when it is not tradable \(no price: before it lists"):
        validate_target_weights(bad, panel, None, "x")
    gone = life.index[life["last"] < panel.index[-1]][0]
    after = panel.index[panel.index > life.loc[gone, "last"]][0]
    with pytest.raises(StrategyOutputError, match=rf"'{gone}' on {after.date()}.*after it delisted"):
        validate_target_weights(pd.DataFrame({gone: [1.0]}, index=[after]), panel, None, "x")


def test_delisting_ledger_by_hand():
    """A and B, half each from d0; B's last price is on d2 (99): the position is closed at 99 into
    cash, which earns rf_d = 0.1% a day; the rebalance of d3 buys A with everything."""
    days = pd.bdate_range("2024-01-01", periods=5, name="date")
    prices = validate_prices(pd.DataFrame({"A": [100.0, 110.0, 121.0, 121.0, 133.1],
                                           "B": [100.0, 90.0, 99.0, np.nan, np.nan]}, index=days))
    rf_d = 0.001
    targets = pd.DataFrame({"A": [0.5, 1.0], "B": [0.5, 0.0]}, index=[days[0], days[3]])
    sim = simulate(targets, asset_returns(prices), cost_bps=10.0, risk_free_rate=(1 + rf_d) ** 252 - 1)
    r, w = sim.returns, sim.weights
    # d1: A +10%, B -10%: gross 0, minus building the book (turnover 1 at 10 bps)
    assert r[days[1]] == pytest.approx(0.0 - 0.001, abs=1e-15)
    # d2: A 0.55 -> 0.605, B 0.45 -> 0.495 (its last price): +10%
    assert w.loc[days[2]].tolist() == pytest.approx([0.55, 0.45], abs=1e-15)
    assert r[days[2]] == pytest.approx(0.1, abs=1e-15)
    # d3: B is cash (0.495) earning rf_d; A flat
    assert w.loc[days[3]].tolist() == pytest.approx([0.55, 0.0], abs=1e-15)
    assert r[days[3]] == pytest.approx((0.605 + 0.495 * (1 + rf_d)) / 1.1 - 1, abs=1e-15)
    # d3's rebalance: everything into A; turnover against the drifted book (B is cash, not held)
    value = 0.605 + 0.495 * (1 + rf_d)
    turnover = abs(1.0 - 0.605 / value) + 0.0
    assert sim.turnover[days[3]] == pytest.approx(turnover, abs=1e-15)
    assert w.loc[days[4]].tolist() == pytest.approx([1.0, 0.0], abs=1e-15)
    assert r[days[4]] == pytest.approx(0.1 - turnover * 0.001, abs=1e-15)
    assert sim.delistings == ({"ticker": "B", "last_price_date": "2024-01-03", "weight": pytest.approx(0.45)},)


def test_a_target_on_the_last_price_day_is_cash_and_costs_nothing():
    """B's last price is d2, and the d2 rebalance still names it (it is tradable that day): the target
    has nothing left to earn there, so it is cash, never bought. Before, the engine charged buying
    0.5 of B at 10 bps and then cashed the position out at the same close."""
    days = pd.bdate_range("2024-01-01", periods=5, name="date")
    prices = validate_prices(pd.DataFrame({"A": [100.0, 110.0, 121.0, 121.0, 133.1],
                                           "B": [100.0, 90.0, 99.0, np.nan, np.nan]}, index=days))
    targets = pd.DataFrame({"A": [0.5, 0.5], "B": [0.5, 0.5]}, index=[days[0], days[2]])
    sim = simulate(targets, asset_returns(prices), cost_bps=10.0)
    # d2's close: A drifted to 0.605 / 1.1 = 0.55 -> target 0.5 sells 0.05; B (0.45) is cashed out,
    # and its 0.5 target is cash: the whole trade is 0.05 of A
    assert sim.turnover[days[2]] == pytest.approx(0.05, abs=1e-15)
    assert sim.costs[days[3]] == pytest.approx(0.05 * 0.001, abs=1e-18)
    assert sim.weights.loc[days[3]].tolist() == pytest.approx([0.5, 0.0], abs=1e-15)  # half cash
    assert sim.returns[days[3]] == pytest.approx(0.0 - 0.05 * 0.001, abs=1e-15)  # A flat, cash at rf 0


def test_an_unheld_ticker_listing_late_does_not_poison_the_sleeve():
    days = pd.bdate_range("2024-01-01", periods=4, name="date")
    prices = validate_prices(pd.DataFrame({"A": [100.0, 101.0, 102.0, 103.0], "C": [np.nan, np.nan, 50.0, 51.0]},
                                          index=days))
    sim = simulate(pd.DataFrame({"A": [1.0]}, index=[days[0]]), asset_returns(prices), cost_bps=0.0)
    assert sim.returns.tolist() == pytest.approx([0.01, 102 / 101 - 1, 103 / 102 - 1], abs=1e-15)
    assert sim.delistings == ()
    with pytest.raises(StrategyOutputError, match=r"holds 'C' before its first return"):
        simulate(pd.DataFrame({"C": [1.0]}, index=[days[0]]), asset_returns(prices), cost_bps=0.0)


def test_a_gap_in_the_returns_is_named_by_simulate():
    days = pd.bdate_range("2024-01-01", periods=5, name="date")
    rets = pd.DataFrame({"A": [0.01, np.nan, 0.02, 0.01]}, index=days[1:])
    with pytest.raises(PriceDataError, match=r"ticker 'A' has no return on 2024-01-03 inside its listed life"):
        simulate(pd.DataFrame({"A": [1.0]}, index=[days[0]]), rets, cost_bps=0.0)


def test_simulate_stays_vectorised_with_listings_and_delistings():
    """500 tickers x 2,520 days, monthly targets, a third of the tickers listing or delisting:
    within 3x the time of the same book with every ticker listed throughout."""
    full = factor_prices(500, 2520, seed=1)
    pit = point_in_time_prices(500, 2520, seed=1)
    months = full.index[full.index.to_period("M").to_numpy() != np.roll(full.index.to_period("M").to_numpy(), -1)]
    listed = pit.notna().loc[months]
    targets = listed.astype(float).div(listed.sum(axis=1), axis=0)

    def timed(prices):
        rets = asset_returns(prices)
        best = np.inf
        for _ in range(3):
            t0 = time.perf_counter()
            simulate(targets, rets, cost_bps=5.0)
            best = min(best, time.perf_counter() - t0)
        return best

    base, point_in_time = timed(full), timed(pit)
    assert point_in_time < max(3 * base, 0.5), (base, point_in_time)


def test_a_carried_forward_target_never_rebuys_a_delisted_ticker():
    """Rows on the first day of each month, rebalanced weekly: B delists mid-month, so the weekly
    rebalances after it carry a row that still names B; the engine holds B's share in cash."""
    from quant_meta_assets_tests.strategies_for_tests import spec

    days = pd.bdate_range("2024-01-01", periods=60, name="date")
    rng = np.random.default_rng(2)
    prices = pd.DataFrame(100 * np.cumprod(1 + rng.normal(0, 0.01, (60, 2)), axis=0), index=days, columns=["A", "B"])
    prices.loc[days > pd.Timestamp("2024-02-14"), "B"] = np.nan
    prices = validate_prices(prices)
    record = run_sleeve(SleeveProfile(name="carry", strategy=spec("first_of_month_equal"), rebalance="weekly",
                                      cost_bps=0), prices)
    w = record["weights"]
    assert (w.loc[w.index > pd.Timestamp("2024-02-14"), "B"] == 0.0).all()
    assert [d["ticker"] for d in record["delistings"]] == ["B"]
    assert record["delistings"][0]["last_price_date"] == "2024-02-14"
    # the February row (dated 2024-02-01) is re-traded every Friday: A back to its 1/2, B stays cash
    assert w.loc["2024-02-20", "A"] == pytest.approx(0.5, abs=0.02) and w.loc["2024-02-20", "A"] < 0.6
    assert np.isfinite(record["returns"].loc[record["start"]:]).all()
