"""Benchmark of the meta-optimizer at book scale: 500 sleeves (a script, not a test).

Run from the repository root:

    .venv/bin/python bench/bench_optimize_scale.py                    # 500 sleeves, ~3-6 minutes
    .venv/bin/python bench/bench_optimize_scale.py --data factor --sleeves 1000

Data (``--data``):

* ``strategies`` (default): N sleeves of the built-in strategies (momentum_12_1,
  short_term_reversal, low_volatility, trend_vol_target, equal_weight, in turn) with seeded
  random parameters, universes (8-20 of the 20 bundled tickers), weekly/monthly rebalancing and
  costs, each run with ``run_sleeve`` on the bundled S&P 500 prices and aligned by
  ``aggregate_returns`` (each sleeve from its first live day: 8,309 rows, 384 rebalances at 500
  sleeves; the first window holds only the sleeves live for all of it). Highly collinear, like
  a real book of strategies on one universe.
* ``factor``: a seeded 5-factor model (+ idiosyncratic noise) on the bundled dates (8,312 rows,
  384 rebalances).

For ``min_variance`` and ``risk_parity`` with ``lookback=252``, ``rebalance_every=21`` it times,
in the same run:

* the engine with its defaults (``covariance="auto"``: Ledoit-Wolf above lookback / 4 sleeves;
  warm starts from the previous rebalance);
* a plain reference walk on the same windows: scikit-learn's ``LedoitWolf`` per window and a cold
  exact solve (Cholesky + ``scipy.optimize.nnls`` for long-only minimum variance; damped Newton
  with ``numpy.linalg.solve`` for risk parity), no reuse between rebalances, also on one BLAS
  thread. The max abs weight difference against it is the accuracy check;
* the engine with ``covariance="sample"`` forced (singular at 500 sleeves > 252 rows, repaired
  per rebalance), for information.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import scipy.linalg as sla
from scipy.optimize import nnls
from threadpoolctl import threadpool_limits

from bench_optimize import risk_parity_newton  # bench/ is on sys.path when run as a script

from quant_meta_assets.meta.optimize import optimize_meta_weights

LOOKBACK, EVERY = 252, 21
KINDS = ("momentum_12_1", "short_term_reversal", "low_volatility", "trend_vol_target", "equal_weight")


def strategy_book(n: int, seed: int = 8) -> pd.DataFrame:
    from quant_meta_assets.meta.returns import aggregate_returns
    from quant_meta_assets.prices import load_prices
    from quant_meta_assets.sleeves.registry import SleeveProfile
    from quant_meta_assets.sleeves.engine import run_sleeve

    prices = load_prices()
    rng = np.random.default_rng(seed)
    tickers = list(prices.columns)
    records = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        universe = sorted(rng.choice(tickers, size=int(rng.integers(8, len(tickers) + 1)), replace=False).tolist())
        params: dict = {}
        if kind == "momentum_12_1":
            params = {"lookback": int(rng.integers(126, 253)), "skip": int(rng.integers(0, 22)),
                      "top_n": int(rng.integers(2, 7))}
        elif kind == "short_term_reversal":
            params = {"lookback": int(rng.integers(3, 22)), "top_n": int(rng.integers(2, 7))}
        elif kind == "low_volatility":
            params = {"lookback": int(rng.integers(21, 127)), "top_n": int(rng.integers(2, 7))}
        elif kind == "trend_vol_target":
            params = {"lookback": int(rng.integers(63, 253)), "vol_lookback": int(rng.integers(21, 64)),
                      "target_vol": float(rng.uniform(0.05, 0.2))}
        profile = SleeveProfile(
            name=f"s{i:04d}_{kind}", strategy=kind, universe=tuple(universe), params=params,
            rebalance=("weekly", "monthly")[int(rng.integers(0, 2))], cost_bps=float(rng.choice([2, 5, 10])),
        )
        records.append(run_sleeve(profile, prices))
    return aggregate_returns(records)


def factor_book(n: int, seed: int = 7) -> pd.DataFrame:
    from quant_meta_assets.prices import load_prices

    index = load_prices().index[1:]
    rng = np.random.default_rng(seed)
    B = rng.normal(0, 1, (n, 5))
    F = rng.normal(0, 0.006, (len(index), 5))
    E = rng.normal(0, 0.01, (len(index), n)) * rng.uniform(0.5, 2.0, n)
    return pd.DataFrame(F @ B.T + E, index=index, columns=[f"s{i:04d}" for i in range(n)])


def windows(R: np.ndarray) -> list[np.ndarray]:
    return [R[r - LOOKBACK + 1 : r + 1] for r in range(LOOKBACK - 1, len(R), EVERY)]


def ref_sigma(X: np.ndarray) -> np.ndarray:
    from sklearn.covariance import LedoitWolf

    C = LedoitWolf(store_precision=False).fit(X).covariance_
    return C / (np.trace(C) / C.shape[0])


def ref_min_variance(X: np.ndarray) -> np.ndarray:
    S = ref_sigma(X)
    L = np.linalg.cholesky(S)
    x, _ = nnls(L.T, sla.solve_triangular(L, np.ones(S.shape[0]), lower=True), maxiter=50 * S.shape[0])
    return x / x.sum()


def ref_risk_parity(X: np.ndarray) -> np.ndarray:
    return risk_parity_newton(ref_sigma(X), max_iter=100)


REFS = {"min_variance": ref_min_variance, "risk_parity": ref_risk_parity}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", choices=("strategies", "factor"), default="strategies")
    ap.add_argument("--sleeves", type=int, default=500)
    ap.add_argument("--skip-sample", action="store_true", help="skip the forced covariance='sample' runs")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    R = strategy_book(args.sleeves) if args.data == "strategies" else factor_book(args.sleeves)
    print(f"data: {args.data}, {R.shape[1]} sleeves x {R.shape[0]} rows "
          f"({R.index[0].date()}..{R.index[-1].date()}), generated in {time.perf_counter() - t0:.1f} s")
    optimize_meta_weights(R.iloc[: LOOKBACK + 1, :5], "min_variance")  # imports and solver query off the clock
    W = windows(R.to_numpy())
    rows = []
    for method in ("min_variance", "risk_parity"):
        t0 = time.perf_counter()
        res = optimize_meta_weights(R, method=method, lookback=LOOKBACK, rebalance_every=EVERY)
        t_eng = time.perf_counter() - t0
        t0 = time.perf_counter()
        with threadpool_limits(limits=1, user_api="blas"):
            ref_w = np.array([REFS[method](X) for X in W])
        t_ref = time.perf_counter() - t0
        d = res.diagnostics
        diff = float(np.abs(res.weights.to_numpy() - ref_w).max())
        paths = d["solver"].value_counts().to_dict()
        rows.append((method, str(d["covariance_rule"].iloc[0]), len(W), t_eng, t_ref, diff, paths,
                     int(d["psd_repaired"].sum()), float(d["shrinkage"].mean()), float(d["condition_number"].max())))
        if not args.skip_sample:
            t0 = time.perf_counter()
            res_s = optimize_meta_weights(R, method=method, lookback=LOOKBACK, rebalance_every=EVERY, covariance="sample")
            t_s = time.perf_counter() - t0
            ds = res_s.diagnostics
            rows.append((method, "sample (forced)", len(W), t_s, float("nan"), float("nan"),
                         ds["solver"].value_counts().to_dict(), int(ds["psd_repaired"].sum()), 0.0,
                         float(ds["condition_number"].max())))
    print()
    print(f"Walk-forward, {R.shape[1]} sleeves, {len(W)} rebalances, lookback {LOOKBACK}, every {EVERY}; one run each")
    print()
    print("| method | covariance | engine (s) | per rebalance (ms) | reference (s) | reference / engine "
          "| max abs diff vs reference | engine path | psd_repaired | mean shrinkage | max cond |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for m, cov, n, te, tr, diff, paths, rep, shr, cond in rows:
        ratio = f"{tr / te:.1f}x" if np.isfinite(tr) else "-"
        tr_txt = f"{tr:.2f}" if np.isfinite(tr) else "-"
        diff_txt = f"{diff:.1e}" if np.isfinite(diff) else "-"
        print(f"| {m} | {cov} | {te:.2f} | {1e3 * te / n:.1f} | {tr_txt} | {ratio} | {diff_txt} | {paths} "
              f"| {rep}/{n} | {shr:.3f} | {cond:.3g} |")


if __name__ == "__main__":
    main()
