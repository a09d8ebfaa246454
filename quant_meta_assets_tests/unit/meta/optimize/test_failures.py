"""Infeasible configurations, degenerate windows, fallback chain and its exhaustion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.errors import InfeasibleConstraintsError, OptimizationError, StageInputError
from quant_meta_assets.meta.optimize import OptimizerConfigError, optimize_meta_weights
from quant_meta_assets.meta.optimize import engine as engine_mod
from quant_meta_assets_tests.unit.meta.optimize.conftest import factor_returns


@pytest.fixture
def R() -> pd.DataFrame:
    return factor_returns(120, 4, seed=21)


@pytest.mark.parametrize(
    "kw,pattern",
    [
        ({"min_weight": 0.3}, r"sum of min_weight over 4 sleeves is 1\.2 > 1"),
        ({"max_weight": 0.2}, r"sum of max_weight over 4 sleeves is 0\.8 < 1"),
        ({"min_weight": {"s1": 0.5}, "max_weight": {"s1": 0.4}}, r"min_weight > max_weight.*s1 \(min 0\.5 > max 0\.4\)"),
        (
            {"min_weight": {"s0": 0.3, "s1": 0.2}, "groups": {"s0": "A", "s1": "A"}, "group_caps": {"A": 0.4}},
            r"group 'A' cap 0\.4 < sum of its members' min_weight 0\.5",
        ),
        (
            {"max_weight": 0.5, "groups": {"s0": "A", "s1": "A", "s2": "B", "s3": "B"}, "group_caps": {"A": 0.3, "B": 0.6}},
            r"group caps make the budget unreachable.*0\.9 < 1",
        ),
    ],
)
def test_infeasible_constraints_raise_before_solving(R, kw, pattern):
    with pytest.raises(InfeasibleConstraintsError, match=pattern):
        optimize_meta_weights(R, "min_variance", lookback=60, **kw)


@pytest.mark.parametrize(
    "kw,pattern",
    [
        ({"min_weight": {"nope": 0.1}}, r"min_weight names unknown sleeves \['nope'\]"),
        ({"max_weight": {"zz": 0.5}}, r"max_weight names unknown sleeves \['zz'\]"),
        ({"groups": {"bad": "A"}, "group_caps": {"A": 0.5}}, r"groups names unknown sleeves \['bad'\]"),
        ({"groups": {"s0": "A"}, "group_caps": {"B": 0.5}}, r"unknown groups \['B'\]"),
        ({"risk_budget": {"s0": 1.0}}, r"no budget for sleeves"),
        ({"min_weight": -0.1}, r"long-only"),
        ({"method": "nope"}, r"unknown method 'nope'"),
        ({"fallback": ("nope",)}, r"unknown fallback entries \['nope'\]"),
        ({"covariance": "ewma"}, r"halflife"),
        ({"method": "risk_parity", "turnover_penalty": 0.1}, r"turnover_penalty"),
        ({"max_turnover": -1.0}, r"max_turnover"),
    ],
)
def test_config_errors_name_the_problem(R, kw, pattern):
    kw = {"method": "risk_parity", **kw}
    with pytest.raises(OptimizerConfigError, match=pattern):
        optimize_meta_weights(R, lookback=60, **kw)


def _negative_drift(n_rows=120, k=4, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(-2e-3, 0.01, (n_rows, k))
    return pd.DataFrame(X, index=pd.bdate_range("2021-01-01", periods=n_rows, name="date"), columns=[f"s{i}" for i in range(k)])


def test_max_sharpe_no_positive_excess_falls_back_and_records():
    R = _negative_drift()
    res = optimize_meta_weights(R, "max_sharpe", lookback=60, rebalance_every=30)
    d = res.diagnostics
    assert d["fallback_used"].all()
    assert (d["status"] == "infeasible").all()
    assert d["fallback_reason"].str.contains("no sleeve has expected return above the risk-free rate").all()
    # first rebalance: previous weights unavailable -> equal weight; later: previous weights
    assert d["weights_from"].iloc[0] == "equal_weight"
    assert "previous_weights: unavailable" in d["attempts"].iloc[0]
    assert (d["weights_from"].iloc[1:] == "previous_weights").all()
    np.testing.assert_allclose(res.weights.iloc[0].to_numpy(), 0.25)  # later rows: 1/N drifted (held)
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-12)


def test_chain_exhausted_names_date_and_every_attempt():
    R = _negative_drift()
    with pytest.raises(OptimizationError) as ei:
        optimize_meta_weights(R, "max_sharpe", lookback=60, fallback=("previous_weights", "max_sharpe"))
    msg = str(ei.value)
    assert str(R.index[59]) in msg
    assert "max_sharpe [precheck]: infeasible" in msg and "previous_weights: unavailable" in msg
    assert msg.count("max_sharpe [precheck]") == 2


def test_solver_infeasible_vs_numerical_are_distinguished(R):
    # max_sharpe with a floor on sleeves with negative mean can make (mu-rf)'w > 0 impossible
    Rn = R.copy()
    Rn[["s0", "s1", "s2"]] -= 5e-3
    Rn["s3"] += 5e-3
    res = optimize_meta_weights(Rn, "max_sharpe", lookback=60, min_weight={"s0": 0.3, "s1": 0.3, "s2": 0.3})
    d = res.diagnostics.iloc[0]
    assert d["status"] == "infeasible" and d["fallback_used"]
    assert "max_sharpe [CLARABEL]: infeasible" in d["attempts"]
    # OSQP cannot solve the exponential-cone risk-parity problem -> solver error, not "infeasible"
    res2 = optimize_meta_weights(R, "risk_parity", lookback=60, max_weight=0.3, solver="OSQP")
    d2 = res2.diagnostics.iloc[0]
    assert d2["status"] == "solver_error" and d2["fallback_used"]
    assert d2["weights_from"] == "equal_weight"


def test_invalid_solution_goes_to_fallback(monkeypatch, R):
    def bad(self, *a, **k):
        return np.array([0.7, 0.7, -0.2, -0.2]), "optimal", "fake"

    orig = engine_mod._Engine.__dict__["run_method"]
    monkeypatch.setattr(
        engine_mod._Engine,
        "run_method",
        lambda self, name, *a, **k: bad(self) if name == "min_variance" else orig(self, name, *a, **k),
    )
    res = optimize_meta_weights(R, "min_variance", lookback=60, rebalance_every=100)
    d = res.diagnostics.iloc[0]
    assert d["status"] == "invalid" and d["fallback_used"]
    assert "validation failed" in d["attempts"] and "< 0" in d["attempts"]


def test_previous_weights_must_respect_current_constraints():
    # sleeve s3 goes inactive (zero variance: it stops moving) at the 2nd rebalance; the held
    # weights hold it -> invalid (a held sleeve with a NaN return is an input error instead)
    R = _negative_drift()
    R.iloc[20:80, 3] = 0.0
    res = optimize_meta_weights(R, "max_sharpe", lookback=60, rebalance_every=20)
    d = res.diagnostics
    row = d.iloc[1]
    assert "previous_weights: invalid (previous weights hold inactive sleeves)" in row["attempts"]
    assert row["weights_from"] == "equal_weight" and res.weights.iloc[1]["s3"] == 0.0


def test_more_sleeves_than_rows():
    # the user forces the sample estimator: singular, repaired, said so
    R = factor_returns(40, 30, seed=4)
    for method in ("min_variance", "risk_parity", "max_diversification", "hrp", "inverse_vol"):
        res = optimize_meta_weights(R, method, lookback=20, rebalance_every=10, covariance="sample")
        d = res.diagnostics
        assert d["psd_repaired"].all() and np.isinf(d["condition_number"]).all()
        W = res.weights.to_numpy()
        np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-9)
        assert W.min() >= 0


def test_zero_variance_sleeve_is_inactive(R):
    R = R.copy()
    R["cash"] = 0.0
    res = optimize_meta_weights(R, "risk_parity", lookback=60, rebalance_every=30)
    assert (res.weights["cash"] == 0).all()
    assert res.diagnostics["notes"].str.contains("inactive \\(zero variance\\): cash").all()
    assert (res.diagnostics["n_active_sleeves"] == 4).all()


def test_nan_window_sleeve_inactive_then_live(R):
    R = R.copy()
    R.iloc[:70, 2] = np.nan  # s2 goes live on row 70
    res = optimize_meta_weights(R, "min_variance", lookback=60, rebalance_every=20, max_weight=0.6)
    W = res.weights
    live_from = 70 + 60 - 1
    for pos, date in zip(range(59, 120, 20), W.index, strict=True):
        if pos < live_from:
            assert W.loc[date, "s2"] == 0.0
        else:
            assert W.loc[date, "s2"] > 0
    assert res.diagnostics["notes"].iloc[0].startswith("inactive (NaN in window): s2")
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-12)


def test_nan_window_makes_min_weights_infeasible(R):
    R = R.copy()
    R.iloc[:70, 2] = np.nan
    with pytest.raises(InfeasibleConstraintsError, match=r"no rebalance can be allocated.*sum of max_weight over 3 sleeves is 0\.9 < 1.*inactive \(NaN in window\): s2"):
        optimize_meta_weights(R, "min_variance", lookback=60, max_weight=0.3)


def test_non_psd_covariance_is_repaired(monkeypatch, R):
    real = engine_mod.estimate_covariance

    def broken(X, *a, **k):
        C = real(X, *a, **k)
        lam, V = np.linalg.eigh(C)
        lam[0] = -0.5 * lam[1]
        return (V * lam) @ V.T

    monkeypatch.setattr(engine_mod, "estimate_covariance", broken)
    res = optimize_meta_weights(R, "min_variance", lookback=60, rebalance_every=30, covariance="ewma", halflife=30)
    d = res.diagnostics
    assert d["psd_repaired"].all() and np.isinf(d["condition_number"]).all()
    assert d["notes"].str.contains("negative eigenvalue").all()
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-12)


def test_singular_covariance_duplicate_sleeve(R):
    R = R.copy()
    R["dup"] = R["s0"]
    for method in ("min_variance", "risk_parity", "max_sharpe", "mean_variance"):
        res = optimize_meta_weights(R, method, lookback=60, rebalance_every=30, max_weight=0.5)
        assert res.diagnostics["psd_repaired"].all()
        assert (res.diagnostics["condition_number"] > 1e12).all()
        W = res.weights.to_numpy()
        np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-9)
        assert W.min() >= -1e-12 and W.max() <= 0.5 + 1e-8


def test_turnover_constraint_and_penalty(sp500_returns):
    R = sp500_returns.iloc[:700]
    free = optimize_meta_weights(R, "min_variance", rebalance_every=21).weights.to_numpy()
    capped = optimize_meta_weights(R, "min_variance", rebalance_every=21, max_turnover=0.1).weights
    assert np.abs(np.diff(free, axis=0)).sum(axis=1).max() > 0.1
    assert _turnover_vs_drifted(capped, R).max() <= 0.1 + 1e-8
    pen = optimize_meta_weights(R, "min_variance", rebalance_every=21, turnover_penalty=0.05).weights.to_numpy()
    assert np.abs(np.diff(pen, axis=0)).sum() < np.abs(np.diff(free, axis=0)).sum()
    for method in ("risk_parity", "hrp", "max_diversification", "equal_weight"):
        W = optimize_meta_weights(R, method, rebalance_every=21, max_turnover=0.05, max_weight=0.2).weights
        assert _turnover_vs_drifted(W, R).max() <= 0.05 + 1e-8


def _turnover_vs_drifted(weights, returns):
    """Independent recomputation: each target vs the previous target drifted day by day."""
    R = returns.loc[:, weights.columns].to_numpy()
    pos = returns.index.get_indexer(weights.index)
    W = weights.to_numpy()
    out = []
    for j in range(1, len(W)):
        held = W[j - 1].copy()
        for t in range(pos[j - 1] + 1, pos[j] + 1):
            held = held * (1 + R[t]) / float(held @ (1 + R[t]))
        out.append(np.abs(W[j] - held).sum())
    return np.array(out)


@pytest.mark.timeout(120)
def test_max_turnover_caps_the_trade_against_drifted_holdings(sp500_returns):
    # issue 13 item 1: target-to-target capped at 0.100 while the real trade reached 0.158
    res = optimize_meta_weights(sp500_returns, "risk_parity", max_turnover=0.10)
    traded = _turnover_vs_drifted(res.weights, sp500_returns)
    assert traded.max() <= 0.10 + 1e-8
    np.testing.assert_allclose(res.diagnostics["turnover"].iloc[1:].to_numpy(), traded, atol=1e-12)
    assert res.diagnostics["turnover"].iloc[0] == pytest.approx(1.0)  # bought from cash


def test_turnover_penalty_charges_the_trade_against_drifted_holdings(sp500_returns):
    R = sp500_returns.iloc[:700]
    free = optimize_meta_weights(R, "min_variance", rebalance_every=21)
    pen = optimize_meta_weights(R, "min_variance", rebalance_every=21, turnover_penalty=0.05)
    # the recorded turnover is the trade against drifted holdings; the penalty reduces it
    np.testing.assert_allclose(pen.diagnostics["turnover"].iloc[1:], _turnover_vs_drifted(pen.weights, R), atol=1e-12)
    assert pen.diagnostics["turnover"].iloc[1:].sum() < free.diagnostics["turnover"].iloc[1:].sum()


def test_previous_weights_fallback_holds_the_drifted_weights():
    # max_sharpe is infeasible at every rebalance -> from the 2nd on the fallback holds: zero trade
    R = _negative_drift()
    res = optimize_meta_weights(R, "max_sharpe", lookback=60, rebalance_every=30)
    d = res.diagnostics
    assert (d["weights_from"].iloc[1:] == "previous_weights").all()
    np.testing.assert_allclose(_turnover_vs_drifted(res.weights, R), 0.0, atol=1e-15)
    assert (d["turnover"].iloc[1:] == 0.0).all()
    assert not np.allclose(res.weights.iloc[-1].to_numpy(), 0.25)  # it drifted, not stale 1/N


def test_held_sleeve_with_a_nan_return_is_a_named_input_error():
    R = _negative_drift()
    R.iloc[70, 3] = np.nan
    with pytest.raises(StageInputError, match=rf"sleeve 's3' is held .* on {R.index[70].date()} is NaN"):
        optimize_meta_weights(R, "equal_weight", lookback=60, rebalance_every=20)


def test_max_turnover_relaxed_to_the_least_trade_that_restores_the_bounds():
    # s0 rallies 2%/day: the held 50/50 drifts to ~0.60 > max_weight 0.55, and a 0.02 cap cannot
    # bring it back; the cap is relaxed to exactly the restoring trade 2 x (held_s0 - 0.55)
    rng = np.random.default_rng(0)
    idx = pd.bdate_range("2022-01-03", periods=40, name="date")
    R = pd.DataFrame({"s0": 0.02 + rng.normal(0, 1e-4, 40), "s1": rng.normal(0, 1e-4, 40)}, index=idx)
    res = optimize_meta_weights(R, "equal_weight", lookback=20, rebalance_every=20, max_weight=0.55,
                                max_turnover=0.02)
    held_s0 = 0.5 * np.prod(1 + R["s0"].iloc[20:40]) / (
        0.5 * np.prod(1 + R["s0"].iloc[20:40]) + 0.5 * np.prod(1 + R["s1"].iloc[20:40]))
    need = 2 * (held_s0 - 0.55)
    assert need > 0.02
    d = res.diagnostics.iloc[1]
    assert "max_turnover relaxed to" in d["notes"]
    assert d["turnover"] == pytest.approx(need, abs=1e-6)
    assert res.weights.iloc[1]["s0"] <= 0.55 + 1e-8


def test_singular_covariance_never_reports_a_bare_optimal():
    # issue 13 item 7: 40 independent equal-vol sleeves, lookback 30 -> rank-deficient sample covariance
    rng = np.random.default_rng(7)
    R = pd.DataFrame(rng.normal(0, 0.01, (90, 40)), index=pd.bdate_range("2020-01-01", periods=90, name="date"),
                     columns=[f"s{i}" for i in range(40)])
    for method in ("min_variance", "risk_parity"):
        # the user forces the sample estimator (the default, "auto", shrinks at 40 sleeves > 30 / 4)
        d = optimize_meta_weights(R, method, lookback=30, rebalance_every=30, covariance="sample").diagnostics
        assert not (d["status"] == "optimal").any()
        assert (d["status"] == "optimal_singular_cov").all()
        assert d["warning"].str.contains(r"40 active sleeves but only 30 rows \(rank <= 29\)").all()
        assert d["warning"].str.contains("ledoit_wolf").all()
    # a well-conditioned window keeps the plain status and no warning
    ok = optimize_meta_weights(R.iloc[:, :5], "min_variance", lookback=30, rebalance_every=30).diagnostics
    assert (ok["status"] == "optimal").all() and ok["warning"].isna().all()


def test_clean_records_a_renormalisation(monkeypatch, R):
    # issue 13 item 8: clean() renormalised weights within 1e-6 of summing to 1 without a trace
    orig = engine_mod._Engine.__dict__["run_method"]

    def off_by_5e7(self, name, *a, **k):
        w, status, label = orig(self, name, *a, **k)
        return w * (1 + 5e-7), status, label

    monkeypatch.setattr(engine_mod._Engine, "run_method", off_by_5e7)
    res = optimize_meta_weights(R, "min_variance", lookback=60, rebalance_every=100)
    note = res.diagnostics["notes"].iloc[0]
    assert "renormalised: the weights summed to 1.0000005" in note
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-15)


def test_default_estimator_is_well_posed_with_more_sleeves_than_rows():
    # covariance="auto": Ledoit-Wolf once sleeves > lookback / 4, so nothing is singular or
    # repaired, and the diagnostics say which rule applied and how much it shrank
    from sklearn.covariance import ledoit_wolf

    R = factor_returns(40, 30, seed=4)
    for method in ("min_variance", "risk_parity"):
        res = optimize_meta_weights(R, method, lookback=20, rebalance_every=10)
        d = res.diagnostics
        assert not d["psd_repaired"].any() and np.isfinite(d["condition_number"]).all()
        assert (d["covariance_rule"] == "auto: ledoit_wolf (30 sleeves > lookback 20 / 4)").all()
        assert (d["covariance"] == "ledoit_wolf").all() and d["warning"].isna().all()
        for j, r in enumerate(range(19, 40, 10)):
            assert d["shrinkage"].iloc[j] == pytest.approx(ledoit_wolf(R.to_numpy()[r - 19 : r + 1])[1], rel=1e-12)
    small = optimize_meta_weights(R.iloc[:, :5], "min_variance", lookback=20, rebalance_every=10)
    assert (small.diagnostics["covariance_rule"] == "auto: sample (5 sleeves <= lookback 20 / 4)").all()
    assert (small.diagnostics["shrinkage"] == 0.0).all()
