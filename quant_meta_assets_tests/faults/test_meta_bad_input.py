"""Meta-level bad input through the SDK (`QuantSDK.run_stage`): what the optimizer actually does
with one sleeve, disjoint sleeves, a zero-variance sleeve, duplicate sleeves (singular covariance)
and infeasible bounds. The sleeve records come from the real sleeve engine (in-process, no Ray)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets import MetaContext, QuantSDK
from quant_meta_assets.errors import InfeasibleConstraintsError, StageInputError
from quant_meta_assets.meta.optimize import OptimizationError
from quant_meta_assets.sleeves.registry import SleeveProfile
from quant_meta_assets.sleeves.engine import run_sleeve
from quant_meta_assets_tests.strategies_for_tests import make_prices, spec

pytestmark = [pytest.mark.timeout(60)]

OPT = {"lookback": 126, "rebalance_every": 21}


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return make_prices(n_days=300)


def sleeve(prices, name, strategy="good", universe=None, rebalance="monthly"):
    profile = SleeveProfile(name=name, strategy=spec(strategy), universe=universe, rebalance=rebalance, cost_bps=5)
    return run_sleeve(profile, prices)


def meta(records, **params) -> MetaContext:
    ctx = MetaContext(sleeve_results=records)
    QuantSDK.run_stage("meta.returns", ctx)
    QuantSDK.run_stage("meta.optimize", ctx, **{**OPT, **params})
    return ctx


def test_single_sleeve_gets_weight_one(prices):
    ctx = meta([sleeve(prices, "only")])
    assert list(ctx.meta_returns.columns) == ["only"]
    assert (ctx.meta_weights["only"] == 1.0).all()
    assert not ctx.optimizer_diagnostics["fallback_used"].any()


def test_a_sleeve_that_stops_hands_over_to_one_that_starts(prices):
    """Sleeves come and go: 'early' stops after row 199, 'late' starts on row 100. Each is held
    only at rebalances whose whole window is inside its live span; 'early' is held (as cash, see
    meta.drift) between its last live day and the next rebalance, then exactly 0."""
    early = sleeve(prices, "early")
    late = sleeve(prices, "late")
    stop, start = prices.index[200], prices.index[100]
    early["returns"] = early["returns"].where(early["returns"].index < stop)
    late["returns"] = late["returns"].where(late["returns"].index >= start)
    ctx = MetaContext(sleeve_results=[early, late])
    QuantSDK.run_stage("meta.returns", ctx)
    frame = ctx.meta_returns
    assert frame.index[0] == early["returns"].first_valid_index() and frame.index[-1] == prices.index[-1]
    assert frame["early"].loc[stop:].isna().all() and frame["late"].loc[:start].iloc[:-1].isna().all()
    QuantSDK.run_stage("meta.optimize", ctx, lookback=60, rebalance_every=21)
    w = ctx.meta_weights
    for day, row in w.iterrows():
        window = frame.iloc[frame.index.get_loc(day) - 59 : frame.index.get_loc(day) + 1]
        for name in ("early", "late"):
            assert (row[name] == 0.0) == window[name].isna().any(), (day, name)
    assert (w["early"] > 0).any() and (w["late"] > 0).any() and (w.iloc[-1] == [0.0, 1.0]).all()
    QuantSDK.run_stage("meta.flatten", ctx)
    held = ctx.meta_weights_daily
    after = held.loc[stop:].index
    rebalance_after = w.index[w.index >= stop][0]
    assert (held.loc[after[after <= rebalance_after], "early"] > 0).all()  # cash, held until the rebalance
    assert (held.loc[after[after > rebalance_after], "early"] == 0.0).all()
    assert (ctx.flattened_weights.loc[stop:].sum(axis=1) < 1.0).loc[:rebalance_after].all()  # early's cash


def test_a_window_with_no_fully_live_sleeve_is_named(prices):
    early = sleeve(prices, "early")
    late = sleeve(prices, "late")
    cut = prices.index[150]
    early["returns"] = early["returns"].where(early["returns"].index < cut)
    late["returns"] = late["returns"].where(late["returns"].index >= cut)
    ctx = MetaContext(sleeve_results=[early, late])
    QuantSDK.run_stage("meta.returns", ctx)  # disjoint live spans are no longer an error
    with pytest.raises(OptimizationError, match=r"no active sleeve .*inactive \(NaN in window\): early, late"):
        QuantSDK.run_stage("meta.optimize", ctx, lookback=60, rebalance_every=21)


def test_zero_variance_sleeve_is_pinned_to_zero_and_recorded(prices):
    records = [sleeve(prices, "a", universe=("AAA", "BBB")), sleeve(prices, "b", universe=("CCC", "DDD")),
               sleeve(prices, "cash", "zero_variance")]
    assert (records[2]["returns"].dropna() == 0).all()
    ctx = meta(records)
    assert (ctx.meta_weights["cash"] == 0).all()
    assert np.allclose(ctx.meta_weights.sum(axis=1), 1.0)
    diagnostics = ctx.optimizer_diagnostics
    assert (diagnostics["n_active_sleeves"] == 2).all()
    assert diagnostics["notes"].str.contains("inactive (zero variance): cash", regex=False).all()
    # documented policy: an inactive sleeve's bounds are dropped (weight exactly 0, noted) ...
    floored = meta(records, min_weight=0.2)
    assert (floored.meta_weights["cash"] == 0).all() and (floored.meta_weights[["a", "b"]] >= 0.2 - 1e-9).all().all()
    # ... and when the active sleeves then never meet the bounds, the error names the bound and the sleeve
    with pytest.raises(InfeasibleConstraintsError, match=r"no rebalance can be allocated: .*sum of max_weight over "
                       r"2 sleeves is 0\.8 < 1 \(budget\) \(inactive \(zero variance\): cash\)"):
        meta(records, max_weight=0.4)  # feasible for 3 sleeves (1.2 >= 1), not for the 2 active ones


@pytest.mark.parametrize("method", ["min_variance", "risk_parity"])
def test_duplicate_sleeves_singular_covariance_is_repaired_and_split_evenly(prices, method):
    twin = sleeve(prices, "twin", universe=("AAA", "BBB"))
    records = [twin, {**twin, "sleeve": "twin_copy"}, sleeve(prices, "other", universe=("CCC", "DDD"))]
    ctx = meta(records, method=method)
    weights, diagnostics = ctx.meta_weights, ctx.optimizer_diagnostics
    assert np.allclose(weights.sum(axis=1), 1.0) and (weights >= -1e-12).all().all()
    assert np.allclose(weights["twin"], weights["twin_copy"], atol=1e-4)
    assert diagnostics["psd_repaired"].all()
    assert diagnostics["notes"].str.contains("covariance repaired").all()
    assert (diagnostics["weights_from"] == method).all() and not diagnostics["fallback_used"].any()


def test_max_sharpe_on_singular_losing_sleeves_falls_back_and_says_why(prices):
    down = make_prices(n_days=300, seed=11)
    down = down * np.linspace(1.0, 0.5, len(down))[:, None]  # every sleeve loses money
    twin = sleeve(down, "twin", universe=("AAA", "BBB"))
    records = [twin, {**twin, "sleeve": "twin_copy"}, sleeve(down, "other", universe=("CCC", "DDD"))]
    ctx = meta(records, method="max_sharpe")
    diagnostics = ctx.optimizer_diagnostics
    assert diagnostics["fallback_used"].all()
    assert diagnostics["fallback_reason"].str.contains("no sleeve has expected return above the risk-free").all()
    assert diagnostics["weights_from"].iloc[0] == "equal_weight"  # no previous weights at the first date
    assert np.allclose(ctx.meta_weights.sum(axis=1), 1.0)


def test_infeasible_bounds_are_named_before_any_solver_runs(prices, monkeypatch):
    import cvxpy as cp

    def no_solve(*args, **kwargs):
        raise AssertionError("a solver ran although the bounds are infeasible")

    monkeypatch.setattr(cp.Problem, "solve", no_solve)
    records = [sleeve(prices, n, universe=(t,)) for n, t in (("s1", "AAA"), ("s2", "BBB"), ("s3", "CCC"))]
    with pytest.raises(InfeasibleConstraintsError, match=r"sum of min_weight over 3 sleeves is 1\.8 > 1 \(budget\)"):
        meta(records, min_weight=0.6)
