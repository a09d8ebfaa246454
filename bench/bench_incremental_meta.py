"""Benchmark of a daily update of the meta stages against a full recompute (a script, not a test).

Run from the repository root:

    .venv/bin/python bench/bench_incremental_meta.py                       # 200 sleeves x 100 tickers x 1,260 days
    .venv/bin/python bench/bench_incremental_meta.py --sleeves 500 --tickers 200 --days 2520

Data: synthetic sleeve records (seed 0): factor-model daily returns with a small daily cost, and
each sleeve's start-of-day weights over a random subset of ``--held`` tickers (20). The previous outputs are
computed in full on all days but the last ``--append``; the update extends them with
``meta.incremental`` (risk parity, lookback 252, rebalance every 21). It prints the wall time of
meta.returns, meta.optimize and meta.flatten, full vs update, and the largest difference between
the update and the full recompute. Frames are in memory: the stored bundles' read time is not
counted (an update still reads each sleeve's weights once).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from quant_meta_assets.meta.incremental import extend_flatten, extend_optimize, extend_returns, optimize_fingerprint
from quant_meta_assets.meta.returns import aggregate_returns


def synthetic_records(n_sleeves: int, n_tickers: int, n_days: int, held: int = 20, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2015-01-02", periods=n_days, name="date")
    tickers = [f"T{i:04d}" for i in range(n_tickers)]
    factor = rng.normal(0, 0.01, size=(n_days, 3))
    records = []
    for s in range(n_sleeves):
        returns = factor @ rng.normal(0, 0.5, 3) + rng.normal(0, 0.005, n_days)
        costs = np.abs(rng.normal(0, 2e-5, n_days))
        chosen = sorted(rng.choice(n_tickers, size=min(held, n_tickers), replace=False))
        weights = np.abs(rng.normal(1.0, 0.2, size=(n_days, len(chosen))))
        weights /= weights.sum(axis=1, keepdims=True)
        records.append({
            "sleeve": f"s{s:04d}", "status": "success",
            "returns": pd.Series(returns - costs, index=index), "costs": pd.Series(costs, index=index),
            "weights": pd.DataFrame(weights, index=index, columns=[tickers[i] for i in chosen]),
        })
    return records


def _cut(records: list[dict], rows: int) -> list[dict]:
    return [{**r, "returns": r["returns"].iloc[:rows], "costs": r["costs"].iloc[:rows],
             "weights": r["weights"].iloc[:rows]} for r in records]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleeves", type=int, default=200)
    parser.add_argument("--tickers", type=int, default=100)
    parser.add_argument("--days", type=int, default=1260)
    parser.add_argument("--append", type=int, default=1)
    parser.add_argument("--held", type=int, default=20, help="tickers each sleeve holds")
    args = parser.parse_args()
    records = synthetic_records(args.sleeves, args.tickers, args.days, args.held)
    previous_records = _cut(records, args.days - args.append)
    params = {"method": "risk_parity", "lookback": 252, "rebalance_every": 21, "risk_free_rate": 0.0}
    fp = optimize_fingerprint(params, "bench")

    def stages(recs, prev):
        weights = {r["sleeve"]: r["weights"] for r in recs}
        costs = {r["sleeve"]: r["costs"] for r in recs}
        t = {}
        (frame, _), t["meta.returns"] = _timed(lambda: extend_returns(prev and prev["returns"], aggregate_returns(recs)))
        (opt, okey, _), t["meta.optimize"] = _timed(lambda: extend_optimize(prev and prev["optimize"], frame, fp, **params))
        (flat, fkey, upd), t["meta.flatten"] = _timed(
            lambda: extend_flatten(prev and prev["flatten"], opt.weights, weights, frame, costs, 0.0))
        out = {"returns": frame,
               "optimize": {"weights": opt.weights, "diagnostics": opt.diagnostics, "state": opt.state,
                            "append_key": okey},
               "flatten": {"asset_weights": flat.asset_weights, "meta_weights_daily": flat.meta_weights_daily,
                           "exposure": flat.exposure, "append_key": fkey}}
        return out, t, upd

    previous, _, _ = stages(previous_records, None)
    full, t_full, _ = stages(records, None)
    update, t_update, upd = stages(records, previous)
    assert upd.mode == "extend", upd
    diff = max(
        float((update["returns"] - full["returns"]).abs().max().max()),
        float((update["optimize"]["weights"] - full["optimize"]["weights"]).abs().max().max()),
        float((update["flatten"]["asset_weights"] - full["flatten"]["asset_weights"]).abs().max().max()),
        float((update["flatten"]["meta_weights_daily"] - full["flatten"]["meta_weights_daily"]).abs().max().max()),
    )
    print(f"{args.sleeves} sleeves x {args.tickers} tickers ({args.held} held each) x {args.days} days, +{args.append} day(s)")
    for stage in t_full:
        print(f"  {stage:14s} full {t_full[stage]:7.3f} s   update {t_update[stage]:7.3f} s")
    print(f"  total          full {sum(t_full.values()):7.3f} s   update {sum(t_update.values()):7.3f} s")
    print(f"  largest difference update vs full: {diff:.3g}")


if __name__ == "__main__":
    main()
