"""Benchmark of the meta-optimizer walk-forward (a script, not a test).

Run from the repository root:

    .venv/bin/python bench/bench_optimize.py            # 5 repeats (medians), ~3-5 minutes
    .venv/bin/python bench/bench_optimize.py --repeats 3 --skip-large

Data: skfolio's S&P 500 prices -> ``pct_change().dropna()`` daily returns, the 20 stocks as 20
sleeves, lookback=252, rebalance_every=21 (rebalance rows 251, 272, ...). For min_variance,
risk_parity and hrp it times the full walk-forward of ``optimize_meta_weights`` against

* skfolio fitted on exactly the same windows (``MeanRisk()`` = long-only min variance,
  ``RiskBudgeting()`` = variance risk parity, ``HierarchicalRiskParity()``), default settings;
* a plain numpy/scipy exact reference written here (``scipy.optimize.nnls`` on the Cholesky
  transform for min variance; an undamped-then-damped Newton on the log-barrier for risk parity;
  for hrp the reference is skfolio itself).

It reports medians over the repeats, speed ratios, and the max abs weight difference over all
rebalances vs the exact reference (target <= 1e-10, as the oracle tests assert for the exact
fast paths) and for hrp vs skfolio (target <= 1e-10).
It then times min_variance per rebalance on synthetic factor returns (T=2520, 5 factors +
idiosyncratic noise, seed 7) with 100 and 500 sleeves (target < 0.5 s at 500 sleeves), both the
default (fast exact path) and with ``max_weight`` binding (Clarabel path).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import pandas as pd
import scipy.linalg as sla
from scipy.optimize import nnls

from quant_meta_assets.meta.optimize import optimize_meta_weights

LOOKBACK, EVERY = 252, 21


def windows(R: np.ndarray) -> list[np.ndarray]:
    return [R[r - LOOKBACK + 1 : r + 1] for r in range(LOOKBACK - 1, len(R), EVERY)]


def ref_min_variance(X: np.ndarray) -> np.ndarray:
    C = np.cov(X, rowvar=False)
    L = np.linalg.cholesky(C / np.trace(C) * C.shape[0])
    c = sla.solve_triangular(L, np.ones(C.shape[0]), lower=True)
    x, _ = nnls(L.T, c)
    return x / x.sum()


def ref_risk_parity(X: np.ndarray) -> np.ndarray:
    C = np.cov(X, rowvar=False)
    return risk_parity_newton(C / np.trace(C) * C.shape[0], max_iter=50)


def risk_parity_newton(S: np.ndarray, max_iter: int) -> np.ndarray:
    """Equal risk budgets by damped Newton on y (w = y / sum y), the plain reference solver."""
    k = S.shape[0]
    b = np.full(k, 1.0 / k)
    y = 1.0 / np.sqrt(np.diag(S))
    y *= np.sqrt(1.0 / (y @ S @ y))
    for _ in range(max_iter):
        g = S @ y - b / y
        if np.max(np.abs(g * y)) < 1e-13:
            break
        d = -np.linalg.solve(S + np.diag(b / y**2), g)
        t = 1.0
        while np.any(y + t * d <= 0):
            t *= 0.5
        y = y + t * d
    return y / y.sum()


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-large", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from skfolio.datasets import load_sp500_dataset
    from skfolio.optimization import HierarchicalRiskParity, MeanRisk, RiskBudgeting

    R = load_sp500_dataset().pct_change().dropna()
    W = windows(R.to_numpy())
    n_reb = len(W)
    expected = len(range(LOOKBACK - 1, len(R), EVERY))
    print(f"S&P 500 returns: {R.shape[0]} rows x {R.shape[1]} sleeves; rebalances: {n_reb} "
          f"(rows {LOOKBACK - 1}..{LOOKBACK - 1 + EVERY * (n_reb - 1)}; contract formula gives {expected})")
    cols = list(R.columns)
    sk = {
        "min_variance": lambda X: MeanRisk().fit(X).weights_,
        "risk_parity": lambda X: RiskBudgeting().fit(X).weights_,
        "hrp": lambda X: HierarchicalRiskParity().fit(pd.DataFrame(X, columns=cols)).weights_,
    }
    ref = {"min_variance": ref_min_variance, "risk_parity": ref_risk_parity}
    rows = []
    for method in ("min_variance", "risk_parity", "hrp"):
        t_eng, res = timed(lambda m=method: optimize_meta_weights(R, method=m, lookback=LOOKBACK, rebalance_every=EVERY), args.repeats)
        ours = res.weights.to_numpy()
        t_sk, sk_w = timed(lambda m=method: np.array([sk[m](X) for X in W]), args.repeats)
        diff_sk = float(np.abs(ours - sk_w).max())
        if method in ref:
            t_ref, ref_w = timed(lambda m=method: np.array([ref[m](X) for X in W]), args.repeats)
            diff_ref = float(np.abs(ours - ref_w).max())
        else:
            t_ref, diff_ref = float("nan"), diff_sk
        solvers = res.diagnostics["solver"].value_counts().to_dict()
        rows.append((method, t_eng, t_sk, t_ref, diff_ref, diff_sk, solvers))
    print()
    print(f"Walk-forward, {n_reb} rebalances, 20 sleeves, median of {args.repeats} repeats")
    print()
    print("| method | engine (s) | skfolio (s) | numpy/scipy ref (s) | skfolio / engine | engine / ref | max abs diff vs exact ref | max abs diff vs skfolio | engine path |")
    print("|---|---|---|---|---|---|---|---|---|")
    for m, te, ts, tr, dr, ds, solv in rows:
        ref_name = "(skfolio)" if m == "hrp" else ""
        print(f"| {m} | {te:.3f} | {ts:.3f} | {tr:.3f} | {ts / te:.1f}x | {te / tr:.2f} | {dr:.1e} {ref_name} | {ds:.1e} | {solv} |")
    if args.skip_large:
        return
    print()
    print("Synthetic factor returns (T=2520, 5 factors, seed 7), min_variance, lookback 252 / every 21")
    print()
    print("| sleeves | path | rebalances | total (s) | per rebalance (s) | psd_repaired |")
    print("|---|---|---|---|---|---|")
    rng = np.random.default_rng(7)
    for k in (100, 500):
        B = rng.normal(0, 1, (k, 5))
        F = rng.normal(0, 0.006, (2520, 5))
        E = rng.normal(0, 0.01, (2520, k)) * rng.uniform(0.5, 2.0, k)
        Rk = pd.DataFrame(F @ B.T + E, index=pd.bdate_range("2010-01-01", periods=2520),
                          columns=[f"s{i}" for i in range(k)])
        for label, kw, reps in (("fast (default bounds)", {}, args.repeats), ("Clarabel (max_weight binding)", {"max_weight": 2.0 / k}, 1)):
            t, res = timed(lambda kw=kw: optimize_meta_weights(Rk, "min_variance", lookback=LOOKBACK, rebalance_every=EVERY, **kw), reps)
            n = len(res.weights)
            print(f"| {k} | {label} | {n} | {t:.2f} | {t / n:.4f} | {int(res.diagnostics['psd_repaired'].sum())}/{n} |")


if __name__ == "__main__":
    main()
