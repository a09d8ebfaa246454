"""sleeves.engine: exact simulation checks against independent references, output validation, run_sleeve."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.errors import RegistryError, SleeveBankruptError, StrategyOutputError
from quant_meta_assets.prices import asset_returns, validate_prices
from quant_meta_assets.sleeves.registry import SleeveProfile, load_registry
from quant_meta_assets.sleeves.engine import (
    check_gross,
    check_solvent,
    error_record,
    rebalance_dates,
    run_sleeve,
    simulate,
    validate_target_weights,
)

TICKERS = ["A", "B", "C"]


@pytest.fixture()
def prices() -> pd.DataFrame:
    rng = np.random.default_rng(42)
    idx = pd.bdate_range("2021-01-01", periods=120, name="date")
    rets = rng.normal(0.0005, 0.02, size=(120, 3))
    return pd.DataFrame(100 * np.cumprod(1 + rets, axis=0), index=idx, columns=TICKERS)


@pytest.fixture(scope="module")
def real_prices() -> pd.DataFrame:
    from skfolio.datasets import load_sp500_dataset

    return validate_prices(load_sp500_dataset())


def test_constant_weights_daily_rebalance_equal_w_dot_r(prices) -> None:
    rets = asset_returns(prices)
    w = np.array([0.5, 0.3, 0.1])  # 10% cash
    targets = pd.DataFrame(np.tile(w, (len(prices), 1)), index=prices.index, columns=TICKERS)
    sim = simulate(targets, rets, cost_bps=0.0)
    # first decision at prices.index[0] earns the first return day; every day earns w.R exactly
    np.testing.assert_allclose(sim.returns.to_numpy(), rets.to_numpy() @ w, rtol=0, atol=1e-15)
    np.testing.assert_allclose(sim.weights.to_numpy(), np.tile(w, (len(rets), 1)), atol=1e-15)
    assert sim.turnover.index.equals(prices.index[:-1])  # the last-day target never trades


def test_buy_and_hold_matches_cumulative_wealth_reference(prices) -> None:
    rets = asset_returns(prices)
    d = prices.index[10]
    w = np.array([0.2, 0.5, 0.25])
    sim = simulate(pd.DataFrame([w], index=[d], columns=TICKERS), rets, cost_bps=0.0)
    # independent reference: per-asset wealth paths from prices, cash constant
    growth = prices.loc[d:].to_numpy() / prices.loc[d].to_numpy()  # row 0 = day d close
    value = growth @ w + (1 - w.sum())
    ref_returns = value[1:] / value[:-1] - 1
    live = sim.returns.loc[sim.returns.index > d]
    assert sim.returns.loc[:d].isna().all() and sim.returns.index[sim.returns.notna()][0] == prices.index[11]
    np.testing.assert_allclose(live.to_numpy(), ref_returns, rtol=1e-10, atol=1e-14)
    ref_weights = (growth[:-1] * w) / value[:-1, None]
    np.testing.assert_allclose(sim.weights.loc[live.index].to_numpy(), ref_weights, rtol=1e-10, atol=1e-14)
    assert (sim.weights.loc[:d].to_numpy() == 0).all()
    assert sim.turnover.to_dict() == {d: pytest.approx(w.sum())}


def test_costs_charged_on_next_day_from_drifted_turnover(prices) -> None:
    rets = asset_returns(prices)
    d1, d2 = prices.index[5], prices.index[30]
    w1, w2 = np.array([0.6, 0.4, 0.0]), np.array([0.0, 0.5, 0.5])
    targets = pd.DataFrame([w1, w2], index=[d1, d2], columns=TICKERS)
    free = simulate(targets, rets, cost_bps=0.0)
    sim = simulate(targets, rets, cost_bps=25.0)
    # drifted weights at the close of d2: reference from prices
    g = prices.loc[d2].to_numpy() / prices.loc[d1].to_numpy()
    drifted = w1 * g / (w1 * g).sum()
    expected_to = np.abs(w2 - drifted).sum()
    assert sim.turnover.loc[d1] == pytest.approx(1.0)
    assert sim.turnover.loc[d2] == pytest.approx(expected_to, rel=1e-12)
    day_after = {d1: prices.index[6], d2: prices.index[31]}
    expected_costs = pd.Series(0.0, index=rets.index)
    for d, to in ((d1, 1.0), (d2, expected_to)):
        expected_costs[day_after[d]] = to * 25.0 / 1e4
    np.testing.assert_allclose(sim.costs.to_numpy(), expected_costs.to_numpy(), rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose((free.returns - sim.returns).dropna().to_numpy(),
                               expected_costs.loc[free.returns.dropna().index].to_numpy(), atol=1e-15)
    pd.testing.assert_frame_equal(sim.weights, free.weights)  # costs are a proportional drag


def test_weight_dated_d_never_earns_r_of_d(prices) -> None:
    rets = asset_returns(prices).copy()
    d = prices.index[20]
    rets.loc[d, "A"] = 5.0  # a huge return on the decision day itself
    w = pd.DataFrame([[1.0, 0.0, 0.0]], index=[d], columns=TICKERS)
    sim = simulate(w, rets, cost_bps=0.0)
    assert np.isnan(sim.returns.loc[d])
    assert sim.returns.loc[prices.index[21]] == pytest.approx(rets.loc[prices.index[21], "A"])
    assert (sim.returns.dropna() < 1.0).all()


def test_simulate_refuses_unknown_tickers_and_nan(prices) -> None:
    rets = asset_returns(prices)
    with pytest.raises(StrategyOutputError, match="ZZZ"):
        simulate(pd.DataFrame({"ZZZ": [1.0]}, index=prices.index[:1]), rets, 0.0)
    with pytest.raises(StrategyOutputError, match="finite"):
        simulate(pd.DataFrame({"A": [np.nan]}, index=prices.index[:1]), rets, 0.0)


def test_simulate_is_fast_on_real_data(real_prices) -> None:
    import time

    rets = asset_returns(real_prices)
    daily = pd.DataFrame(1.0 / 20, index=real_prices.index, columns=real_prices.columns)
    t0 = time.perf_counter()
    sim = simulate(daily, rets, 5.0)
    assert time.perf_counter() - t0 < 0.5
    assert sim.returns.notna().all()


def test_rebalance_dates() -> None:
    idx = pd.bdate_range("2021-01-01", "2021-04-15")
    assert list(rebalance_dates(idx, "monthly").strftime("%m-%d")) == ["01-29", "02-26", "03-31", "04-15"]
    assert rebalance_dates(idx, "daily").equals(idx)
    with pytest.raises(RegistryError, match="hourly"):
        rebalance_dates(idx, "hourly")


@pytest.mark.parametrize(
    ("make", "needles"),
    [
        (lambda p: p.to_numpy(), ["'s1'", "ndarray"]),
        (lambda p: p.iloc[:0], ["'s1'", "empty"]),
        (lambda p: p.assign(A=np.where(np.arange(len(p)) == 3, np.nan, 0.3)), ["'s1'", "'A'", "2021-01-06"]),
        (lambda p: p.assign(B=np.inf), ["'s1'", "'B'", "non-finite"]),
        (lambda p: p.assign(ZZZ=0.1), ["'s1'", "outside the universe", "ZZZ"]),
        (lambda p: p.set_axis(p.index + pd.Timedelta(days=400)), ["'s1'", "not in the price index", "look-ahead"]),
        (lambda p: p.set_axis(p.index + pd.Timedelta(hours=12)), ["'s1'", "not in the price index"]),
        (lambda p: p.iloc[::-1], ["'s1'", "not sorted"]),
        (lambda p: pd.concat([p.iloc[:2], p.iloc[1:3]]), ["'s1'", "duplicate date"]),
        (lambda p: p.reset_index(drop=True), ["'s1'", "DatetimeIndex"]),
    ],
)
def test_validate_target_weights_refuses(prices, make, needles) -> None:
    weights = prices * 0 + 0.3
    with pytest.raises(StrategyOutputError) as info:
        validate_target_weights(make(weights), prices, TICKERS, "s1")
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))


def test_validate_target_weights_accepts_subset_of_universe(prices) -> None:
    out = validate_target_weights(prices[["A"]] * 0 + 1.0, prices, None, "s1")
    assert list(out.columns) == ["A"] and (out.dtypes == "float64").all()


def test_run_sleeve_custom_strategy_samples_at_rebalance(prices) -> None:
    profile = SleeveProfile(name="ew", strategy="equal_weight", universe=("A", "C"), rebalance="monthly", cost_bps=10)
    rec = run_sleeve(profile, prices)
    assert list(rec["weights"].columns) == ["A", "C"]
    month_ends = rebalance_dates(prices.index, "monthly")
    assert rec["turnover"].index.equals(month_ends[:-1] if month_ends[-1] == prices.index[-1] else month_ends)
    assert rec["start"] == prices.index[prices.index.get_loc(month_ends[0]) + 1].date().isoformat()


def test_run_sleeve_missing_universe_ticker_raises(prices) -> None:
    with pytest.raises(RegistryError, match=r"'bad'.*ZZZ"):
        run_sleeve(SleeveProfile(name="bad", strategy="equal_weight", universe=("A", "ZZZ")), prices)


def test_error_record_shape() -> None:
    rec = error_record("s1", StrategyOutputError("boom"), 1.5)
    assert rec["status"] == "error" and rec["error"] == "StrategyOutputError: boom"
    assert rec["error_type"] == "StrategyOutputError" and rec["runtime_s"] == 1.5
    assert all(rec[k] is None for k in ("returns", "weights", "costs", "turnover", "start", "end"))
    ok_keys = set(run_sleeve(SleeveProfile(name="x", strategy="equal_weight"), _tiny()).keys())
    assert set(rec) == ok_keys


def _tiny() -> pd.DataFrame:
    idx = pd.bdate_range("2021-01-01", periods=70, name="date")
    return pd.DataFrame({"A": np.linspace(1, 2, 70)}, index=idx)


@pytest.mark.parametrize("profile", load_registry(), ids=lambda p: p.name)
def test_default_sleeves_on_real_data(real_prices, profile: SleeveProfile) -> None:
    rec = run_sleeve(profile, real_prices)
    assert rec["sleeve"] == profile.name and rec["status"] == "success" and rec["error"] is None
    r = rec["returns"]
    assert r.name == profile.name and r.index.equals(real_prices.index[1:])
    live = r.loc[rec["start"]:]
    assert r.loc[: pd.Timestamp(rec["start"]) - pd.Timedelta(days=1)].isna().all()
    assert np.isfinite(live.to_numpy()).all() and rec["end"] == "2022-12-28"
    sums = rec["weights"].sum(axis=1)
    cap = float(profile.params.get("max_leverage", 1.0))
    assert (sums <= cap + 1e-9).all() and (rec["weights"].to_numpy() >= 0).all()
    assert (rec["costs"] >= 0).all() and (rec["turnover"] >= 0).all()
    assert rec["costs"].sum() == pytest.approx(rec["turnover"].sum() * profile.cost_bps / 1e4)
    assert -0.5 < live.mean() * 252 < 1.0  # plausible annualised return
    assert rec["runtime_s"] < 5.0


def test_domain_core_imports_neither_dagster_nor_ray() -> None:
    import subprocess
    import sys

    code = (
        "import sys, quant_meta_assets.sleeves.engine, quant_meta_assets.sleeves.strategies;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'ray'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# -- the leverage guard: max_gross on the traded targets, and a sleeve whose NAV reaches zero stops there


def _crash_prices() -> pd.DataFrame:
    """One asset: flat, then -40% on 2000-01-05, then +50% on 2000-01-06."""
    idx = pd.DatetimeIndex(["2000-01-03", "2000-01-04", "2000-01-05", "2000-01-06", "2000-01-07"], name="date")
    return pd.DataFrame({"A": [100.0, 100.0, 60.0, 90.0, 90.0]}, index=idx)


def three_x(prices: pd.DataFrame) -> pd.DataFrame:
    """3x the one asset from the first close on (a plug-in target, resolved by module path)."""
    return pd.DataFrame({"A": 3.0}, index=prices.index[:1])


def test_a_3x_sleeve_whose_nav_passes_zero_fails_naming_the_day_and_the_gross() -> None:
    prices = _crash_prices()
    # hand-computed ledger without the guard: NAV 1 -> 1 (flat day) -> 1 + 3(-0.4) = -0.2 on 2000-01-05:
    # the book has lost more than its capital; with 3x of +50% next day it would "come back" to +0.7
    sim = simulate(three_x(prices), asset_returns(prices), cost_bps=0.0)
    assert sim.returns.loc["2000-01-05"] == pytest.approx(-1.2, abs=1e-15)
    profile = SleeveProfile(name="x", strategy=f"{__name__}:three_x", rebalance="daily", max_gross=3.0)
    with pytest.raises(SleeveBankruptError, match=r"sleeve 'x': NAV <= 0 on 2000-01-05 \(return -1\.2 on a gross "
                                                  r"exposure of 3\)"):
        run_sleeve(profile, prices)


def test_a_target_above_max_gross_fails_naming_the_date_and_the_gross() -> None:
    profile = SleeveProfile(name="x", strategy=f"{__name__}:three_x", rebalance="daily")  # max_gross 2.0
    with pytest.raises(StrategyOutputError, match=r"sleeve 'x': target gross exposure 3 on 2000-01-03 is above its "
                                                  r"max_gross 2 \(5 such rebalance\(s\)\)"):
        run_sleeve(profile, _crash_prices())


def test_gross_counts_shorts_and_a_long_short_book_within_the_limit_runs(prices) -> None:
    targets = pd.DataFrame({"A": [1.5, 1.0], "B": [-0.6, -1.0]}, index=prices.index[[0, 20]])
    with pytest.raises(StrategyOutputError, match=r"gross exposure 2\.1 on .* \(1 such"):
        check_gross(targets, 2.0, "ls")
    check_gross(targets, 2.1, "ls")  # equal to the limit is allowed
    sim = simulate(targets, asset_returns(prices), cost_bps=5.0)
    check_solvent(sim, "ls")  # a 2x long-short book on gentle prices stays solvent


def test_max_gross_is_a_registry_field_with_a_default_and_a_checked_value(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("defaults: {max_gross: 1.5}\nsleeves:\n  - {name: a, strategy: equal_weight}\n"
                    "  - {name: b, strategy: equal_weight, max_gross: 3}\n")
    assert [p.max_gross for p in load_registry(path)] == [1.5, 3.0]
    assert SleeveProfile(name="c", strategy="equal_weight").max_gross == 2.0
    with pytest.raises(RegistryError, match=r"'max_gross' must be a finite number > 0, got 0"):
        SleeveProfile(name="c", strategy="equal_weight", max_gross=0)
