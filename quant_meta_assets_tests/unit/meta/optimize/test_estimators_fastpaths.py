"""Covariance estimators vs scikit-learn / numpy references; exact fast paths vs the cvxpy path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.meta.optimize import optimize_meta_weights
from quant_meta_assets.meta.optimize.constraints import build_constraints
from quant_meta_assets.meta.optimize.estimators import (
    estimate_covariance,
    estimate_expected_returns,
    ledoit_wolf_covariance,
    oas_covariance,
)
from quant_meta_assets.meta.optimize.methods import CvxProblem, nnls_direction, risk_parity_newton
from quant_meta_assets_tests.unit.meta.optimize.conftest import factor_returns, random_spd


@pytest.mark.parametrize("shape", [(252, 20), (40, 60), (100, 1), (30, 5), (252, 500)])
def test_shrinkage_is_sklearn(shape):
    # OAS *is* scikit-learn's (bit for bit); Ledoit-Wolf evaluates sklearn's formula from the
    # cross product and must give sklearn's shrinkage and matrix to rounding
    from sklearn.covariance import ledoit_wolf, oas

    from quant_meta_assets.meta.optimize.estimators import centered_cross_product, ledoit_wolf_shrinkage

    X = factor_returns(shape[0], shape[1], seed=shape[1]).to_numpy()
    ours, ref = oas_covariance(X), oas(X)[0]
    assert ours.shape == (shape[1], shape[1])
    np.testing.assert_allclose(ours, ref, rtol=1e-15, atol=0)
    ref_cov, ref_d = ledoit_wolf(X)
    d, _ = ledoit_wolf_shrinkage(*centered_cross_product(X))
    assert abs(d - ref_d) <= 1e-13 * max(ref_d, 1e-300) or d == ref_d
    ours = ledoit_wolf_covariance(X)
    assert ours.shape == ref_cov.shape
    np.testing.assert_allclose(ours, ref_cov, rtol=0, atol=1e-13 * float(np.abs(ref_cov).max()))


def test_engine_ledoit_wolf_is_sklearns_estimate():
    from sklearn.covariance import ledoit_wolf

    R = factor_returns(200, 5, seed=12)
    res = optimize_meta_weights(R, "inverse_vol", lookback=100, rebalance_every=50, covariance="ledoit_wolf")
    rows = list(range(99, 200, 50))
    for j, r in enumerate(rows):
        C, d = ledoit_wolf(R.to_numpy()[r - 99 : r + 1])
        iv = 1.0 / np.sqrt(np.diag(C))
        np.testing.assert_allclose(res.weights.iloc[j].to_numpy(), iv / iv.sum(), rtol=1e-13)
        assert res.diagnostics["shrinkage"].iloc[j] == pytest.approx(d, rel=1e-12)


@pytest.mark.parametrize("cov_name,cls_name", [("oas", "OAS")])
def test_engine_calls_sklearn_estimator_once_per_rebalance(monkeypatch, cov_name, cls_name):
    import sklearn.covariance as skc

    cls = getattr(skc, cls_name)
    real_fit = cls.fit
    seen: list[np.ndarray] = []

    def spy(self, X, y=None):
        seen.append(np.array(X, copy=True))
        return real_fit(self, X, y)

    monkeypatch.setattr(cls, "fit", spy)
    R = factor_returns(200, 5, seed=12)
    res = optimize_meta_weights(R, "inverse_vol", lookback=100, rebalance_every=50, covariance=cov_name)
    rows = list(range(99, 200, 50))
    assert len(seen) == len(rows) == len(res.weights)
    for X, r in zip(seen, rows, strict=True):
        np.testing.assert_array_equal(X, R.to_numpy()[r - 99 : r + 1])  # exactly the window
    # inverse_vol reads the estimator's diagonal: the weights follow sklearn's estimate
    C = getattr(skc, cov_name)(R.to_numpy()[rows[-1] - 99 : rows[-1] + 1])[0]
    iv = 1.0 / np.sqrt(np.diag(C))
    np.testing.assert_allclose(res.weights.iloc[-1].to_numpy(), iv / iv.sum(), rtol=1e-14)


def test_sample_covariance_ddof1():
    X = factor_returns(50, 4).to_numpy()
    np.testing.assert_allclose(estimate_covariance(X, "sample"), np.cov(X, rowvar=False, ddof=1), rtol=1e-12)


@pytest.mark.parametrize("halflife", [5.0, 30.0, 1e7])
def test_ewma_matches_numpy_loop_and_pandas(halflife):
    X = factor_returns(80, 4, seed=7).to_numpy()
    T = len(X)
    lam = 0.5 ** (1 / halflife)
    w = np.array([lam ** (T - 1 - t) for t in range(T)])
    w /= w.sum()
    m = sum(w[t] * X[t] for t in range(T))
    C = sum(w[t] * np.outer(X[t] - m, X[t] - m) for t in range(T)) / (1 - np.sum(w**2))
    np.testing.assert_allclose(estimate_covariance(X, "ewma", halflife), C, rtol=1e-10)
    np.testing.assert_allclose(estimate_expected_returns(X, "ewma", halflife), m, rtol=1e-10)
    df = pd.DataFrame(X)
    pd_cov = df.ewm(halflife=halflife).cov(bias=False).loc[T - 1].to_numpy()
    np.testing.assert_allclose(estimate_covariance(X, "ewma", halflife), pd_cov, rtol=1e-8)
    np.testing.assert_allclose(estimate_expected_returns(X, "ewma", halflife), df.ewm(halflife=halflife).mean().iloc[-1], rtol=1e-10)
    if halflife > 1e6:  # tends to the sample covariance
        np.testing.assert_allclose(estimate_covariance(X, "ewma", halflife), np.cov(X.T), rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("cov_name", ["ledoit_wolf", "oas", "ewma"])
def test_engine_uses_estimator(cov_name):
    R = factor_returns(120, 5, seed=8)
    res = optimize_meta_weights(R, "min_variance", lookback=120, covariance=cov_name, halflife=20.0)
    X = R.to_numpy()
    C = estimate_covariance(X, cov_name, 20.0)
    x = np.linalg.solve(C, np.ones(5))
    if np.all(x > 0):
        np.testing.assert_allclose(res.weights.iloc[0].to_numpy(), x / x.sum(), atol=1e-10)


# Clarabel is an interior-point method: at a 1e-9 duality gap the weights of these flat
# objectives are only ~sqrt(gap)/lambda_min accurate (~1e-7 .. 2e-5 here). CvxProblem therefore
# polishes its solution on the active set (exact KKT solve, accepted only when feasible and not
# worse), which brings the cvxpy path to the exact fast paths to ~1e-15.
CVX_TOL = 1e-12


def _cons(k, **kw):
    cs = build_constraints(tuple(f"s{i}" for i in range(k)), kw.get("lb", 0.0), kw.get("ub", 1.0), None, None, None, 0.0)
    return cs.subset(np.ones(k, dtype=bool))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [5, 20, 60])
def test_nnls_min_variance_matches_cvxpy(seed, k):
    C = random_spd(k, seed)
    S = C / (np.trace(C) / k)
    L = np.linalg.cholesky(S)
    x = nnls_direction(S, np.ones(k))
    assert x is not None
    w_fast = x / x.sum()
    out = CvxProblem("min_variance", _cons(k), False, False).solve(L, None, None, None, 0.0, "CLARABEL")
    assert out.status == "optimal"
    assert np.abs(w_fast - out.weights).max() < CVX_TOL
    assert w_fast @ S @ w_fast <= out.weights @ S @ out.weights + 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_nnls_max_sharpe_and_maxdiv_match_cvxpy(seed):
    k = 15
    C = random_spd(k, seed)
    S = C / (np.trace(C) / k)
    L = np.linalg.cholesky(S)
    rng = np.random.default_rng(seed)
    for method, a in (("max_sharpe", rng.normal(0.2, 1.0, k)), ("max_diversification", np.sqrt(np.diag(S)))):
        a = a / np.abs(a).max()
        x = nnls_direction(S, a)
        out = CvxProblem(method, _cons(k), False, False).solve(L, a, None, None, 0.0, "CLARABEL")
        assert out.status == "optimal"
        assert np.abs(x / x.sum() - out.weights).max() < CVX_TOL


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [4, 20, 50])
def test_newton_risk_parity_matches_cvxpy(seed, k):
    C = random_spd(k, seed)
    S = C / (np.trace(C) / k)
    b = np.random.default_rng(seed).uniform(0.5, 2.0, k)
    b /= b.sum()
    w = risk_parity_newton(S, b)
    assert w is not None
    rc = w * (S @ w) / (w @ S @ w)
    np.testing.assert_allclose(rc, b, atol=1e-12)
    out = CvxProblem("risk_parity", _cons(k), False, False, budget=b).solve(
        np.linalg.cholesky(S), None, None, None, 0.0, "CLARABEL"
    )
    assert out.status == "optimal"
    assert np.abs(w - out.weights).max() < CVX_TOL
    y = out.weights  # the Newton solution has the lower log-barrier objective on the same ray
    def f(v):
        v = v * np.sqrt(b.sum() / (v @ S @ v))
        return 0.5 * v @ S @ v - b @ np.log(v)
    assert f(w) <= f(y) + 1e-12


def test_engine_fast_path_used_and_cvxpy_when_bound_binds(sp500_returns):
    R = sp500_returns.iloc[:400]
    fast = optimize_meta_weights(R, "min_variance", rebalance_every=50)
    assert (fast.diagnostics["solver"] == "nnls-active-set").all()
    rp = optimize_meta_weights(R, "risk_parity", rebalance_every=50)
    assert (rp.diagnostics["solver"] == "newton").all()
    capped = optimize_meta_weights(R, "min_variance", rebalance_every=50, max_weight=0.15)
    assert capped.diagnostics["solver"].isin(["CLARABEL", "CLARABEL+polish"]).all()
    assert (capped.diagnostics["solver"] == "CLARABEL+polish").mean() > 0.9
    assert capped.weights.to_numpy().max() <= 0.15 + 1e-8


def test_polish_with_binding_bounds_and_groups():
    from quant_meta_assets.meta.optimize.methods import CLARABEL_OPTS

    k = 12
    C = random_spd(k, 3)
    S = C / (np.trace(C) / k)
    L = np.linalg.cholesky(S)
    names = tuple(f"s{i}" for i in range(k))
    groups = {n: ("A" if i < 4 else "B") for i, n in enumerate(names)}
    cs = build_constraints(names, 0.02, 0.15, groups, {"A": 0.3}, None, 0.0)
    cons = cs.subset(np.ones(k, dtype=bool))
    b = np.full(k, 1.0 / k)
    for method, kw in (("min_variance", {}), ("risk_parity", {"budget": b})):
        prob = CvxProblem(method, cons, False, False, **kw)
        out = prob.solve(L, None, None, None, 0.0, "CLARABEL")
        assert out.solver == "CLARABEL+polish"
        w = out.weights
        assert not cons.violations(w, None, None, tol=1e-12)
        assert abs(w.sum() - 1) < 1e-14
        # binding constraints are met exactly, and Clarabel alone (no polish) is close by
        assert method == "risk_parity" or abs(w.max() - 0.15) <= 1e-15 or abs(w[:4].sum() - 0.3) <= 1e-15 or abs(w.min() - 0.02) <= 1e-15
        prob.polishable = False
        raw = prob.solve(L, None, None, None, 0.0, "CLARABEL").weights
        assert np.abs(w - raw).max() < 1e-4
        if method == "min_variance":
            assert w @ S @ w <= raw @ S @ raw + 1e-15
    assert CLARABEL_OPTS["tol_gap_abs"] == 1e-9


@pytest.mark.parametrize("covariance", ["sample", "ledoit_wolf"])
def test_gram_spectrum_and_repair_match_the_direct_decomposition(covariance):
    # more sleeves than rows: the engine reads the spectrum (and clips it) through the small
    # rows x rows Gram matrix; it must give the k x k eigen-decomposition's matrix and cond
    from quant_meta_assets.meta.optimize.constraints import build_constraints as bc
    from quant_meta_assets.meta.optimize.engine import EIG_FLOOR, _Engine

    X = factor_returns(40, 90, seed=5).to_numpy()
    names = tuple(f"s{i}" for i in range(90))
    eng = _Engine(sleeves=names, cs=bc(names, 0.0, 1.0, None, None, None, 0.0), covariance=covariance,
                  halflife=None, expected_returns="historical", risk_aversion=1.0, risk_budget=None,
                  risk_free_rate=0.0, solver="CLARABEL", lookback=40)
    from sklearn.covariance import ledoit_wolf

    win = eng.window(X)
    cov = np.cov(X, rowvar=False) if covariance == "sample" else ledoit_wolf(X)[0]
    sigma = cov / (np.trace(cov) / 90)
    lam, V = np.linalg.eigh(sigma)
    if covariance == "sample":
        assert win.repaired and np.isinf(win.cond)
        ref = (V * np.maximum(lam, EIG_FLOOR)) @ V.T
        # rank 39 (rows - 1) of 90: 51 eigenvalues clipped, the count the direct route finds
        assert int((lam < EIG_FLOOR).sum()) == 51
        assert "51 near-zero eigenvalue(s) clipped" in win.notes[-1]
    else:
        assert not win.repaired
        assert win.cond == pytest.approx(lam[-1] / lam[0], rel=1e-10)
        ref = sigma
    np.testing.assert_allclose(win.sigma, ref, rtol=0, atol=1e-12 * np.abs(ref).max())

