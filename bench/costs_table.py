"""What the book really pays: both cost views of the meta on the default registry and bundled data.

    .venv/bin/python bench/costs_table.py [--cost-bps 5] [--methods risk_parity,equal_weight,...]

The default registry's sleeves run sequentially in-process (same functions as the Ray path), the
meta-optimizer runs with its launchpad defaults (lookback 252, rebalance every 21 rows) and
``meta.costs`` prices both views with one cost model (``costs/cost_model.py``; the project's cost
file and settings, ``--cost-bps`` the default half-spread): sleeves trade at their registry
cost_bps in their own accounts and in the book, the meta's trades at the half-spread, the netted book
at the blended rate of the trades it nets. Prints a Markdown table (the one in docs/costs.md).
Not a test: the tests check the numbers' identities.
"""

from __future__ import annotations

import argparse

from quant_meta_assets import metrics as M
from quant_meta_assets import rates
from quant_meta_assets.costs.cost_model import load_cost_model
from quant_meta_assets.meta.costs import DEFAULT_BOOK_COST_BPS, cost_views
from quant_meta_assets.meta.optimize import optimize_meta_weights
from quant_meta_assets.meta.returns import aggregate_returns
from quant_meta_assets.prices import asset_returns, load_prices
from quant_meta_assets.sleeves.engine import run_sleeve
from quant_meta_assets.sleeves.registry import load_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cost-bps", type=float, default=DEFAULT_BOOK_COST_BPS,
                        help="default half-spread (bps) of an asset the cost file does not list")
    parser.add_argument("--methods", default="risk_parity,equal_weight,inverse_vol,min_variance,hrp")
    args = parser.parse_args()

    model = load_cost_model(default_half_spread_bps=args.cost_bps)
    prices = load_prices()
    records = [run_sleeve(p, prices, cost_model=model) for p in load_registry()]
    meta_returns = aggregate_returns(records)
    inputs = dict(
        sleeve_returns=meta_returns,
        sleeve_costs={r["sleeve"]: r["costs"] for r in records},
        asset_returns=asset_returns(prices), cost_model=model,
        cash_return=rates.daily_rate(None),
    )
    print(f"default half-spread {args.cost_bps:g} bps one-way ({len(model.half_spread_bps)} per-ticker); "
          f"sleeves trade at their registry cost_bps; borrow {model.default_borrow_bps:g} bps/yr, funding "
          f"spread {model.funding_spread_bps:g} bps/yr; rf {rates.resolve(None):.2%}/yr\n")
    print("| method | Sharpe netted | Sharpe stand-alone | turnover/yr netted | turnover/yr stand-alone "
          "| cost bps/yr netted | cost bps/yr un-netted | cost bps/yr stand-alone "
          "| crossing savings bps/yr | volume crossed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method in args.methods.split(","):
        weights = optimize_meta_weights(meta_returns, method=method).weights
        views = cost_views(meta_weights=weights,
                           sleeve_weights=((r["sleeve"], r["weights"]) for r in records), **inputs)
        views.raise_if_failed()
        t = views.totals()
        d = views.daily
        print(f"| {method} | {M.sharpe(d['netted_return']):.3f} | {M.sharpe(d['standalone_return']):.3f} "
              f"| {t['book_turnover']:.2f} | {t['standalone_turnover']:.2f} "
              f"| {t['book_cost_bps_per_year']:.1f} | {t['unnetted_cost_bps_per_year']:.1f} "
              f"| {t['standalone_cost_bps_per_year']:.1f} "
              f"| {t['savings_bps_per_year']:.1f} | {t['crossed_fraction']:.1%} |")
    print(f"\nlive {d.index[0].date()} to {d.index[-1].date()} ({len(d):,} days)")


if __name__ == "__main__":
    main()
