"""meta.report: ``build_report`` — metrics, forensics, plots and one self-contained HTML file.

Nothing is written until every number, table and figure has been computed and the
reconciliations have been judged: a failing reconciliation raises ``ReconciliationError``
before any file exists (unless ``raise_on_failure=False``, then the report says FAILED loudly).
``report.html`` and ``summary.json`` are each written atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import html as _html
import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from quant_meta_assets import metrics as M
from quant_meta_assets import rates
from quant_meta_assets.errors import ReconciliationError, StageInputError
from quant_meta_assets.rates import PERIODS_PER_YEAR
from quant_meta_assets.benchmark import BENCHMARK_ENV, Benchmark, as_benchmark
from quant_meta_assets.meta.costs import DEFAULT_BOOK_COST_BPS, cost_views, fold_checks, fold_cost_views
from quant_meta_assets.meta.incremental import Update
from quant_meta_assets.meta.drift import cash_after_stop
from quant_meta_assets.meta.flatten import book_sleeve_returns, meta_portfolio_returns
from quant_meta_assets.meta.optimize.diagnostics import covariance_summary, covariance_warning
from quant_meta_assets.report import forensics as F
from quant_meta_assets.report import html as H
from quant_meta_assets.report import incremental as RI
from quant_meta_assets.costs.capacity import capacity
from quant_meta_assets.costs.cost_model import CostModel, load_cost_model
from quant_meta_assets.report import plots as P
from quant_meta_assets.report import portfolio as PF
from quant_meta_assets.report.summary import METRIC_LABELS, PCT_METRICS, build_summary
from quant_meta_assets.report.summary import metric_view as _metric_view

REPORT_CONVENTIONS: dict[str, str] = {
    "meta_return": "Headline 'meta' = the NETTED BOOK: one account holding a_i(t) = sum_s m_s(t) w_s,i(t) "
    "(sub-account shares m drifting with the sleeves' GROSS returns: no sleeve pays its stand-alone cost), "
    "return sum_i a_i R_i + cash - cost_book, cost_book = its trading cost on the day's net trade "
    "z_i = a_i(t) - a_i^drifted(t) (a^drifted = yesterday's book after one day of asset returns; the initial "
    "build from cash is paid) plus the holding cost of its net positions. 'meta_standalone' = "
    "sum_s m_s(t) r_s(t) - cost_meta: sleeves pay their own costs (net returns, m drifting with them) and "
    "each meta rebalance pays sum_i h_i |sum_s (m_s^target - m_s^drifted) w_s,i^drifted| (sleeve holdings "
    "drifted to the decision date, before their own trade). Meta-weights dated d apply from the next row. "
    "Attribution explains the sleeve-level meta sum_s m_s r_s before meta-level costs.",
    "trading_costs": "One cost model for every view (quant_meta_assets/costs/cost_model.py, cvxportfolio's "
    "TransactionCost formula): a trade z_i (fraction of the account's value) costs rate x |z_i|, charged on "
    "the first day the new weights earn, as a proportional drag (it does not move the weights). A sleeve "
    "trades at its registry cost_bps on every asset (without one: each asset's half-spread), in its own "
    "account and in the book alike; the meta's "
    "own trades pay each asset's half-spread h_i (the cost file's half_spread_bps, else the run config's "
    "cost_bps). The book pays each net trade at the blended rate of the trades it nets: rho_i = "
    "sum_k |t_k| rate_k / sum_k |t_k| over the component trades k of asset i (each sleeve's own trade "
    "scaled by its share m_s, and the meta trade), book trading cost = sum_i rho_i |z_i|. So the same trade "
    "costs the same in both views. Volumes and costs are fractions of the book's value at the start of "
    "that day; asset_turnover is the annualised two-sided trade in asset space (sum / years, 252 days a "
    "year, without the first live day's initial build, like the turnover column): for the netted book and "
    "the stand-alone view from their daily asset trades, for a sleeve its own turnover column; cost_drag "
    "is the annual cost (trading + holding) in % of value, initial build included.",
    "holding_costs": "Daily, on the start-of-day weights: sum_i max(-w_i, 0) f_i + max(sum_i w_i - 1, 0) s, "
    "f_i the borrow fee of asset i on a short and s the funding spread over rf on borrowed cash (both "
    "bps/yr, converted to daily rates geometrically like rf: (1 + x)^(1/252) - 1). A sleeve pays it on its "
    "own positions; the book on its NET position per asset (as cvxportfolio's HoldingCost charges the "
    "positions actually held), so a short netted against another sleeve's long pays no borrow.",
    "crossing_savings": "Internal crossing savings = the un-netted cost minus the netted book's cost, on the "
    "SAME holdings (the book's gross-drifted sub-accounts): trading sum_i rho_i (sum_k |t_k| - |sum_k t_k|) "
    "(every trade at the same rate, so only netting counts) plus holding (the sleeves' own borrow and "
    "funding minus the book's on its net positions). Both are >= 0 every day (triangle inequality, checked); "
    "crossed volume = sum_k |t_k| - |sum_k t_k| >= 0. The stand-alone view's cost also differs from the "
    "book's by its sub-account shares drifting net of the sleeves' costs, which is not a crossing saving.",
    "capacity": "Only when average daily volumes (adv) are given: the book's trades are held fixed and pay, "
    "on top of the above, a square-root market impact b sigma_i |z_i| (|z_i| AUM / ADV_i)^0.5 (sigma_i = std "
    "of the asset's 252 daily returns before the day), so impact ~ sqrt(AUM). Halving AUM = the AUM at which "
    "the Sharpe is half the Sharpe without impact.",
    "drift": "Between meta rebalances m_s(t+1) = m_s(t)(1 + r_s(t)) / (1 + sum m r); reset to the "
    "target on the row after each rebalance. The headline book's shares drift with the sleeves' gross "
    "returns r_s = g_s (it pays no sleeve's own cost); the stand-alone view's and the equal-weight meta's "
    "with their net returns.",
    "sleeve_cash": "A sleeve's uninvested cash (1 - sum of its weights) earns the daily risk-free rate "
    "rf_d (the same rf and conversion as Sharpe, Sortino and max_sharpe).",
    "equal_weight_meta": "Benchmark: 1/N of the sleeves live on the rebalance date, rebalanced on the SAME dates as the meta and "
    "drifting in between exactly like the meta (not daily fixed-mix).",
    "optimizer_status": "Diagnostics status per rebalance: a status ending in _singular_cov (e.g. "
    "optimal_singular_cov) means the covariance was singular or near-singular (eigenvalues clipped, or "
    "condition number > 1e6): the weights are the optimum of a repaired, unreliable estimate, shown with a "
    "warning banner. The 'turnover' diagnostic is the sleeve-level trade against the drifted holdings "
    "(1 at the first rebalance, bought from cash); the previous_weights fallback holds them (no trade).",
    "net_return": "A sleeve's net daily return is r = g - c: the cost c (a fraction of the start-of-day "
    "value) is deducted from the gross return g of the day the new weights first earn, and does not itself "
    "earn or lose that day's return. The fully compounded form (1 - c)(1 + g) - 1 = g - c - c g differs by "
    "c g: on the bundled data at most 2.8e-4 on one day (short_term_reversal) and under 0.7 bp a year "
    "(under 0.2 bp for the monthly sleeves).",
    "metric_window": "Every portfolio's metrics are computed on the meta's live date range.",
    "meta_turnover": "Meta turnover = two-sided sleeve-level reallocation sum_s |target_s - drifted m_s| "
    "at each meta rebalance (the optimizer's max_turnover / turnover_penalty / 'turnover' diagnostic "
    "measure the same trade). The metrics table's turnover column is ANNUALISED with the same rule for "
    "the meta, equal_weight_meta and the sleeves (see 'turnover') and is shown as 'Sleeve reallocation "
    "(× per year)' for the meta books; a book's trade in assets is 'Asset turnover (× per year)' (see "
    "'trading_costs'). The turnover figure shows both per calendar year, each year's trades divided by "
    "its live days / 252 (× per year); weighted by the years' lengths they average to the table's figures.",
    "reconciliation_identity": "Sleeve returns are net of costs and include their cash interest, asset "
    "weights earn gross: sum_i a_i R_i + sum_s m_s cash_s rf_d - sum_s m_s cost_s == sum_s m_s r_s "
    "(cash_s = 1 - sum_i w_s,i), checked daily.",
    "attribution": "Shown in percentage points of annual return: 252 x mean_t(daily contribution) "
    "(daily contribution = m_s(t) g_s(t) for a sleeve, with m the book's share and g the sleeve's GROSS "
    "return; H_i(t) R_i(t) for an asset, H the published holdings), which add up to 252 x mean daily "
    "return of the headline (netted) meta, its arithmetic annual return (CAGR is lower by the compounding "
    "/ volatility drag). The report's data also keep the compounded contribution = sum_t W(t-1) x daily "
    "contribution (W = meta wealth before day t, W = 1 at the start), which adds up exactly to the "
    "compounded total return, and 'arithmetic' = the plain sum. The book's cost (trading + holding) is one "
    "negative "
    "line in both tables, the book's cash interest one positive line (when rf != 0).",
    "holdings": "One set of holdings: the asset weights meta/flatten publishes are the headline book's, "
    "its sub-account shares drifting with the sleeves' gross returns. Every day sum_i H_i(t) R_i(t) + "
    "(1 - sum_i H_i(t)) rf_d - book_cost(t) = meta(t) to 1e-12 (reconciliation book_holdings_return; the "
    "daily book_cost series is in the report's data, costs.daily).",
    "risk_contribution": "RC_i = w_i (Sigma w)_i / (w' Sigma w), sums to 1. Plotted: the REALISED split "
    "cov(m_s r_s, r_meta) / var(r_meta) per calendar year (ex-ante contributions are equal by construction "
    "under risk parity, so they are shown only at the latest rebalance, in the current-weights table). "
    "Ex-ante: target weights at "
    "each rebalance, Sigma = the OPTIMIZER's covariance estimator (its diagnostics' covariance / "
    "halflife: sample ddof=1, Ledoit-Wolf, OAS or EWMA) on the trailing lookback window of sleeve returns "
    "ending on the rebalance date inclusive, over the held sleeves (weight 0: RC 0). Ex-post: RC at the average held weights with the realised "
    "covariance, and the exact realised split cov(m_s r_s, r_meta)/var(r_meta).",
}

FIGURE_IDS = ("cumulative", "drawdowns", "monthly_returns", "rolling_sharpe", "rolling_vol", "meta_weights",
              "risk_contributions", "correlation", "latest_exposures", "exposures_over_time", "turnover",
              "crossing_savings")
DECISION_BOOKS = ("meta", "equal_weight_meta", "benchmark")  # the decision layer's comparison, in this order
ROLLING_WINDOW = 252  # rolling statistics: one year of trading days


def _as_frame_weights(mapping: Mapping[str, pd.DataFrame], sleeves) -> Mapping[str, pd.DataFrame]:
    """The sleeves' daily weights, checked for presence only: a lazy mapping stays lazy (at book
    scale every sleeve's weights do not fit in memory at once)."""
    missing = [s for s in sleeves if s not in mapping]
    if missing:
        raise StageInputError(f"meta.report needs the daily weights of sleeves {missing}")
    return mapping


class TrailingRows(Mapping):
    """The sleeves' daily weights from ``since`` on: an incremental report reads no earlier row
    (a stored record that can read a trailing range, ``read_since``, is asked for only that)."""

    def __init__(self, weights: Mapping[str, pd.DataFrame], since: pd.Timestamp) -> None:
        self._weights, self._since = weights, pd.Timestamp(since)

    def __getitem__(self, sleeve: str) -> pd.DataFrame:
        read_since = getattr(self._weights, "read_since", None)
        frame = read_since(sleeve, self._since) if read_since is not None else self._weights[sleeve]
        return frame.loc[self._since:]

    def __iter__(self):
        return iter(self._weights)

    def __len__(self) -> int:
        return len(self._weights)


def _book_costs(*, fold_from, fold_vouched, fingerprint, meta_weights, sleeve_returns, sleeve_costs, sleeve_weights,
                asset_returns, cost_model, cost_bps, cash_return, tolerance):
    """Both cost views: folded from the previous report's (``report.incremental``) when it may,
    else on every live day. Returns (views, the book's weights on the days they were computed, the
    first day the daily reconciliations run on (None: every live day), how it was made)."""
    reason = RI.fold_reason(fold_from, fingerprint=fingerprint, sleeve_returns=sleeve_returns,
                            meta_weights=meta_weights, asset_returns=asset_returns, vouched=fold_vouched,
                            capacity=cost_model.adv is not None)
    if reason is not None:
        costs = cost_views(meta_weights=meta_weights, sleeve_returns=sleeve_returns, sleeve_costs=sleeve_costs,
                           sleeve_weights=sleeve_weights, asset_returns=asset_returns, cost_model=cost_model,
                           cash_return=cash_return, tolerance=tolerance)
        return costs, costs.book_weights, None, Update("full", reason, len(costs.daily))
    # the trailing window from the last rebalance before the previous last day
    end = pd.Timestamp(fold_from["end"])
    start = RI.window_start(meta_weights, end)
    since = sleeve_returns.index[sleeve_returns.index > end][0]
    window = cost_views(
        meta_weights=meta_weights.loc[start:], sleeve_returns=sleeve_returns.loc[start:],
        sleeve_costs={s: c.loc[start:] for s, c in sleeve_costs.items()},
        sleeve_weights=TrailingRows(sleeve_weights, start), asset_returns=asset_returns, cost_model=cost_model,
        cash_return=cash_return, tolerance=tolerance, emit_from=since,
        sleeve_rates=fold_from["sleeve_sums"]["rate_bps"].to_dict(),
    )
    costs = fold_cost_views(RI.previous_views(fold_from, cost_bps), window)
    update = Update("extend", f"cost views and daily reconciliations on {len(window.daily)} new day(s) from the "
                    f"rebalance of {start.date()}, folded into the previous report's {len(fold_from['daily'])}",
                    len(window.daily))
    return costs, window.book_weights, since, update


def _fail_message(failed: pd.DataFrame) -> str:
    parts = [
        f"{row.check}: max |diff| = {H.fmt_sci(row.max_abs_diff)} > tolerance {row.tolerance:.1e} "
        f"at {row.where}"
        for row in failed.itertuples()
    ]
    return "reconciliation failed — " + "; ".join(parts)


def build_report(
    *,
    sleeve_returns: pd.DataFrame,
    meta_weights: pd.DataFrame,
    diagnostics: pd.DataFrame | None,
    flatten,
    sleeve_weights: Mapping[str, pd.DataFrame],
    sleeve_costs: Mapping[str, pd.Series],
    sleeve_turnover: Mapping[str, pd.Series],
    asset_returns: pd.DataFrame,
    benchmark: Benchmark | pd.Series | pd.DataFrame | None,
    lineage: Mapping[str, Mapping] | None,
    previous: Mapping | None,
    output_dir: os.PathLike | str,
    risk_free_rate: float | None = None,
    tolerance: float = 1e-10,
    raise_on_failure: bool = True,
    mar: float | None = None,
    risk_window: int | None = None,
    title: str = "Meta-portfolio report",
    cost_bps: float = DEFAULT_BOOK_COST_BPS,
    cash_return: float | pd.Series | None = None,
    top_k: int = P.DEFAULT_TOP_K,
    cost_model: CostModel | None = None,
    fold_from: Mapping | None = None,
    fold_vouched: str | None = "nothing vouches for the sleeves' weights and costs on the previous report's days",
    vouched_by: str | None = None,
    code_version: str | None = None,
) -> dict:
    """Build the report; see the module docstring and ``REPORT_CONVENTIONS``.

    ``risk_window`` (rows of the trailing covariance for ex-ante risk contributions) defaults to
    the optimizer's lookback (its diagnostics' `lookback`; else as implied by the contract: the first
    rebalance row is ``lookback-1``).
    ``cost_bps`` is the default half-spread (one-way bps) of an asset the cost model does not list;
    ``cost_model`` the per-asset costs (``None`` = the project's, ``costs.load_cost_model``: the
    ``QUANT_META_COSTS`` file and environment); ``cash_return`` the daily return of
    the cash the sleeves and the book hold (default: the daily rf, as the sleeve engine credits it).
    ``top_k``: the plots draw the meta, the benchmarks and this many sleeves (largest average held
    meta-weight); every sleeve is in the tables.

    Incremental (``report.incremental``): ``fold_from`` is the previous report's ``fold_state``.
    When ``fold_vouched`` is None (the caller vouches that the sleeves' weights and costs on its
    days are unchanged: ``vouched_by`` names what does, stored for the next report) and the other
    inputs append to the previous ones under the same configuration and ``code_version``, the cost
    views and the daily holdings reconciliations run on a trailing window and fold into the stored
    ones; the result equals a full recompute. ``report["update"]`` says which it was and why.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise StageInputError(f"meta.report: top_k must be an integer >= 1, got {top_k!r}")
    risk_free_rate = rates.resolve(risk_free_rate)  # None = the project's rf (rates.py)
    mar = risk_free_rate if mar is None else float(mar)  # Sortino's MAR is rf unless given
    if meta_weights.empty:
        raise StageInputError("meta.report: meta-weights are empty")
    sleeves = list(meta_weights.columns)
    missing = [s for s in sleeves if s not in sleeve_returns.columns]
    if missing:
        raise StageInputError(f"meta.report: meta-weights name sleeves without returns: {missing}")
    sleeve_returns = sleeve_returns[sleeves].astype(float)
    weights_by_sleeve = _as_frame_weights(sleeve_weights, sleeves)

    # --- the meta and its comparison portfolios on the live days ---------------------------
    cash_return = rates.daily_rate(risk_free_rate) if cash_return is None else cash_return
    # a sleeve that stopped is cash after its last live day (meta.drift): weights 0, no cost
    weights_by_sleeve = PF.CashAfterStop(weights_by_sleeve, sleeve_returns)
    sleeve_costs = PF.costs_after_stop(sleeve_costs, sleeve_returns)
    # the stand-alone view's shares drift with the sleeves' NET returns; the headline book's with
    # their GROSS returns (it pays no sleeve's own cost: meta.flatten, meta.costs)
    standalone_held, standalone_turnover = PF.drifted_weights(meta_weights, sleeve_returns, cash_return)
    live = standalone_held.index
    gross_returns = book_sleeve_returns(sleeve_returns, sleeve_costs)  # NaN after a sleeve stops, as the net
    recomputed_held, meta_turnover = PF.drifted_weights(meta_weights, gross_returns, cash_return)
    held = flatten.meta_weights_daily.reindex(index=live, columns=sleeves)  # the book's shares, as published
    gross_as_held = cash_after_stop(gross_returns, cash_return)  # what the held sub-accounts earned
    model = (load_cost_model(default_half_spread_bps=cost_bps) if cost_model is None
             else cost_model.with_default_half_spread(cost_bps))
    fingerprint = RI.report_fingerprint(cost_model=model, cost_bps=cost_bps, cash_return=cash_return,
                                        tolerance=tolerance, code_version=code_version)
    costs, book_weights, since, update = _book_costs(
        fold_from=fold_from, fold_vouched=fold_vouched, fingerprint=fingerprint, meta_weights=meta_weights,
        sleeve_returns=sleeve_returns, sleeve_costs={s: sleeve_costs[s] for s in sleeves if s in sleeve_costs},
        sleeve_weights=weights_by_sleeve, asset_returns=asset_returns, cost_model=model, cost_bps=cost_bps,
        cash_return=cash_return, tolerance=tolerance)
    book_capacity = None
    if costs.cost_model.adv is not None:  # the book's Sharpe and cost drag against its AUM
        book_capacity = capacity(costs.daily["netted_return"], costs.book_trades, asset_returns, costs.cost_model,
                                 costs=costs.daily["book_cost"], risk_free_rate=risk_free_rate)
    netted = costs.daily["netted_return"].rename("meta")
    standalone = costs.daily["standalone_return"].rename("meta_standalone")
    ew_held, ew_turnover = PF.drifted_weights(PF.equal_weight_targets(meta_weights, sleeve_returns), sleeve_returns,
                                              cash_return)
    portfolios = {"meta": netted, "meta_standalone": standalone,
                  "equal_weight_meta": meta_portfolio_returns(ew_held, sleeve_returns, cash_return)
                  .rename("equal_weight_meta")}
    bench = as_benchmark(benchmark)
    if bench is not None:
        portfolios["benchmark"] = PF.benchmark_returns(bench.levels, live)
    for s in sleeves:
        portfolios[s] = sleeve_returns.loc[live, s]
    returns_frame = pd.DataFrame(portfolios)
    turnover = {"meta": meta_turnover, "meta_standalone": standalone_turnover, "equal_weight_meta": ew_turnover,
                **{s: sleeve_turnover[s] for s in sleeves if sleeve_turnover.get(s) is not None}}
    counted = {name: PF.counted_turnover(t, sleeve_returns.index, live) for name, t in turnover.items()}
    metrics = M.performance_table(returns_frame, counted, risk_free_rate=risk_free_rate, mar=mar,
                                  benchmark=portfolios.get("benchmark"))
    cost_totals = costs.totals()
    trading = pd.DataFrame({
        # a sleeve's asset turnover is its own turnover column (metrics, the counted-rebalance rule); the
        # books' come from their daily asset trades (meta.costs), which only they have
        "asset_turnover": {"meta": cost_totals["book_turnover"], "meta_standalone": cost_totals["standalone_turnover"],
                           **{s: (metrics.loc[s, "turnover"] if np.isfinite(metrics.loc[s, "turnover"])
                                  else costs.sleeve_totals.loc[s, "asset_turnover"]) for s in sleeves}},
        "cost_drag": {"meta": cost_totals["book_cost_bps_per_year"] / 1e4,
                      "meta_standalone": cost_totals["standalone_cost_bps_per_year"] / 1e4,
                      **costs.sleeve_totals["cost_drag"].to_dict()},
    })
    metrics = metrics.join(trading)

    # --- forensics: one set of holdings --------------------------------------------------------
    asset_weights = flatten.asset_weights.reindex(live)
    book_cost = costs.daily["book_cost"]
    holdings_checks = F.reconcile(
        meta_weights=meta_weights, meta_weights_daily=flatten.meta_weights_daily,
        recomputed_meta_weights_daily=recomputed_held, book_returns=netted, book_costs=book_cost,
        book_weights=book_weights, asset_weights=flatten.asset_weights, asset_returns=asset_returns,
        exposure=flatten.exposure, tolerance=tolerance, cash_return=cash_return, since=since,
        sleeve_weights=weights_by_sleeve if since is None else TrailingRows(weights_by_sleeve, since),
    )
    if since is not None:
        holdings_checks = fold_checks(fold_from["holdings_checks"], holdings_checks)  # type: ignore[index]
    reconciliations = holdings_checks
    attribution = F.attribution(
        meta_returns=netted, meta_weights_daily=held, sleeve_returns=gross_as_held,
        asset_weights=asset_weights, asset_returns=asset_returns, book_costs=book_cost, cash_return=cash_return,
    )
    reconciliations = pd.concat(
        [reconciliations, F.attribution_checks(attribution, netted, tolerance), costs.checks],
        ignore_index=True,
    )
    failed = reconciliations[~reconciliations["passed"]]
    if len(failed) and raise_on_failure:
        raise ReconciliationError(_fail_message(failed))

    window = risk_window or _optimizer_lookback(diagnostics) or int(sleeve_returns.index.get_loc(meta_weights.index[0])) + 1
    window = max(window, 2)
    risk = {
        "ex_ante": F.ex_ante_risk_contributions(meta_weights, sleeve_returns, window, *_estimator(diagnostics)),
        "ex_post": F.ex_post_risk_contributions(held, gross_as_held),
        "realised_by_year": F.realised_risk_by_year(held, gross_as_held),
        "window": window,
        "estimator": _estimator(diagnostics)[0],
    }

    generated_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    latest_target = meta_weights.iloc[-1].rename(meta_weights.index[-1])
    summary = build_summary(
        metrics=metrics, reconciliations=reconciliations, latest_meta_weights=held.iloc[-1],
        latest_target_weights=latest_target, latest_asset_weights=asset_weights.iloc[-1].fillna(0.0),
        generated_at=generated_at,
    )
    summary["costs"] = {k: float(v) for k, v in cost_totals.items()} | {"cost_bps": float(cost_bps)}
    summary["benchmark"] = bench.describe() if bench is not None else None
    if book_capacity is not None:
        summary["costs"]["halving_aum"] = book_capacity.halving_aum
    changes = F.what_changed(summary, previous)
    survivorship = _survivorship(asset_returns, live)
    conventions = {**M.CONVENTIONS, **REPORT_CONVENTIONS,
                   "book_cost_bps_used": f"default half-spread {cost_bps:g} bps one-way (run config 'cost_bps'; "
                   f"default {DEFAULT_BOOK_COST_BPS:g} bps); per-ticker half-spreads: "
                   f"{len(costs.cost_model.half_spread_bps)}; borrow fee default "
                   f"{costs.cost_model.default_borrow_bps:g} bps/yr ({len(costs.cost_model.borrow_bps)} per ticker); "
                   f"funding spread {costs.cost_model.funding_spread_bps:g} bps/yr; impact "
                   f"{'on (adv given)' if costs.cost_model.adv is not None else 'off (no adv)'}",
                   "risk_free_rate_used": f"rf = {risk_free_rate:.4%} per year; MAR = {mar:.4%} per year",
                   "risk_window_used": f"{window} trading days",
                   "benchmark": _benchmark_convention(bench),
                   "survivorship_bias": survivorship[1],
                   "reconciliation_tolerance": f"{tolerance:.1e} absolute"}

    shown = P.top_sleeves(held, top_k)
    step = P.display_step(len(live))
    conventions["display"] = (
        f"Plots draw the meta, the benchmarks and the top {len(shown)} of {len(sleeves)} sleeves by average "
        "held meta-weight over the live period (report config top_k); the weight and risk-contribution "
        "plots sum the other sleeves into one 'other' band. Every sleeve is in the tables (click a column "
        "header to sort), and every number in a table is computed on the full daily data. Daily series "
        f"longer than {P.MAX_POINTS:,} days are drawn at every m-th trading day plus the last (here m = "
        f"{step}); drawdowns draw the deepest day of each m-day bucket, so troughs are kept. Growth of 1 opens "
        "on a log scale (the linear / log switch is under its title). Calendar figures (monthly returns, "
        "realised risk, turnover) draw one cell or bar per month or year."
    )

    # --- the decision layer: the meta against its benchmarks -------------------------------------
    books = [n for n in DECISION_BOOKS if n in returns_frame.columns]
    yearly = pd.DataFrame({n: M.yearly_returns(returns_frame[n]) for n in books})
    yearly["days"] = pd.Series(live.year, index=live).value_counts().sort_index()
    decision = {
        "books": books,
        "yearly": yearly,
        "monthly": M.monthly_returns(netted),
        "drawdowns": M.drawdown_periods(netted, top=5),
        "rolling_sharpe": pd.DataFrame({n: M.rolling_sharpe(returns_frame[n], ROLLING_WINDOW, risk_free_rate)
                                        for n in books}),
        "rolling_vol": pd.DataFrame({n: M.rolling_vol(returns_frame[n], ROLLING_WINDOW) for n in books}),
        "weights": _weights_now(summary, risk, changes),
    }
    turnover_by_year = _turnover_per_year(counted["meta"], costs.daily, live)

    # --- figures and HTML (still in memory) ---------------------------------------------------
    curves = [c for c in returns_frame.columns if c not in set(sleeves)] + shown
    figures = {
        "cumulative": P.cumulative_returns(returns_frame[curves], shown),
        "drawdowns": P.drawdowns(returns_frame[curves], shown),
        "monthly_returns": P.monthly_heatmap(decision["monthly"]),
        "rolling_sharpe": P.rolling_lines(decision["rolling_sharpe"], "Rolling 1-year Sharpe ratio "
                                          f"({ROLLING_WINDOW} trading days)", ".2f"),
        "rolling_vol": P.rolling_lines(decision["rolling_vol"], "Rolling 1-year volatility "
                                       f"({ROLLING_WINDOW} trading days, annualised)", ".0%"),
        "meta_weights": P.meta_weights_area(held, meta_weights.index, shown),
        "risk_contributions": P.realised_risk_by_year(risk["realised_by_year"], shown),
        "correlation": P.correlation_heatmap(
            returns_frame[shown],
            "Correlation of daily returns over the live period" if len(shown) == len(sleeves) else
            f"Correlation of daily returns over the live period: top {len(shown)} sleeves by weight"),
        "latest_exposures": P.latest_exposures(asset_weights),
        "exposures_over_time": P.exposures_over_time(asset_weights, flatten.exposure.reindex(live)),
        "turnover": P.turnover_per_year(turnover_by_year),
        "crossing_savings": P.crossing_savings(costs.yearly()),
    }
    if book_capacity is not None:
        figures["capacity"] = P.capacity_curve(book_capacity)
    document = _render(
        title=title, metrics=metrics, reconciliations=reconciliations, attribution=attribution,
        risk=risk, diagnostics=diagnostics, lineage=lineage, changes=changes, conventions=conventions,
        figures=figures, summary=summary, previous=previous, live=live, sleeves=sleeves,
        tolerance=tolerance, risk_free_rate=risk_free_rate, costs=costs, decision=decision,
        turnover_by_year=turnover_by_year, bench=bench, universe=survivorship[0],
        spans=_sleeve_spans(sleeve_returns, live, window),
    )
    summary_text = json.dumps(summary, indent=2, allow_nan=False)

    # --- write (atomically, only now) ---------------------------------------------------------
    out_dir = Path(output_dir)
    html_path = H.write_atomic(out_dir / "report.html", document)
    H.write_atomic(out_dir / "summary.json", summary_text)

    return {
        "update": update,
        "fold_state": RI.fold_state(costs=costs, holdings_checks=holdings_checks, fingerprint=fingerprint,
                                    sleeve_returns=sleeve_returns, meta_weights=meta_weights,
                                    asset_returns=asset_returns, vouched_by=vouched_by),
        "metrics": metrics,
        "meta_returns": netted,
        "standalone_returns": standalone,
        "costs": {"daily": costs.daily, "yearly": costs.yearly(), "totals": cost_totals,
                  "sleeve_totals": costs.sleeve_totals, "cost_bps": float(cost_bps),
                  "capacity": book_capacity},
        "portfolio_returns": returns_frame,
        "html": str(html_path),
        "summary_path": str(out_dir / "summary.json"),
        "reconciliations": reconciliations,
        "reconciled": bool(reconciliations["passed"].all()),
        "attribution": attribution,
        "risk_contributions": risk,
        "summary": summary,
        "changes": changes,
        "decision": decision,
        "turnover_per_year": turnover_by_year,
        "conventions": conventions,
        "figures": list(figures),
    }


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------

_PCT = H.fmt_pct
_TIMES = H.fmt_times  # turnover: multiples of the book's value per year


def _fmt_pp(x) -> str:
    """A decimal per year as percentage points (0.0123 -> '1.23 pp')."""
    return "" if H._isnan(x) else H.fmt_num(x * 100) + " pp"


_METRIC_FORMATS = {
    **{c: _PCT for c in PCT_METRICS},
    **{c: H.fmt_num for c in ("sharpe", "sortino", "calmar", "skew", "excess_kurtosis", "beta",
                              "information_ratio")},
    "reallocation": _TIMES, "asset_turnover": _TIMES,
    "n_days": lambda x: f"{int(x):,}",
}
DECISION_COLUMNS = ("cagr", "ann_vol", "sharpe", "sortino", "max_drawdown", "beta", "alpha", "tracking_error",
                    "information_ratio")
RISK_COLUMNS = ("cagr", "ann_vol", "sharpe", "sortino", "max_drawdown", "calmar", "beta", "alpha",
                "tracking_error", "information_ratio")
TAIL_COLUMNS = ("var_95", "cvar_95", "skew", "excess_kurtosis", "hit_rate", "best_day", "worst_day",
                "reallocation", "asset_turnover", "cost_drag", "n_days")
def _labelled(frame: pd.DataFrame, formats: Mapping, labels: Mapping = METRIC_LABELS):
    """The frame with readable column names, and its formats keyed by them."""
    out = frame.rename(columns=lambda c: labels.get(c, c))
    return out, {labels.get(c, c): f for c, f in formats.items()}


def _tone(x: float) -> str:
    return "" if not np.isfinite(x) else ("neg" if x < 0 else "pos")


def _weights_now(summary: Mapping, risk: Mapping, changes: Mapping) -> pd.DataFrame:
    """Every sleeve's held weight on the last day, its latest target, its risk contributions (ex-ante
    at the latest rebalance, realised over the live period) and, with a previous report, the change."""
    frame = pd.DataFrame({"held": pd.Series(summary["latest_meta_weights"], dtype=float),
                          "target": pd.Series(summary["latest_target_weights"], dtype=float)})
    ex_ante = risk["ex_ante"]
    frame["risk_ex_ante"] = ex_ante.iloc[-1].reindex(frame.index) if len(ex_ante) else np.nan
    frame["risk_realised"] = risk["ex_post"]["rc_realised"].reindex(frame.index)
    if changes:
        previous = changes["meta_weights"]["previous"]
        frame["previous"] = previous.reindex(frame.index)
        frame["change"] = frame["held"] - frame["previous"].fillna(0.0)
    frame.index.name = "sleeve"
    return frame.sort_values("held", ascending=False, kind="stable")


def _turnover_per_year(meta_counted: pd.Series, daily: pd.DataFrame, live: pd.DatetimeIndex) -> pd.DataFrame:
    """Per calendar year of the live range, in × the book's value per year: the meta's sleeve
    reallocation (its counted rebalances, by the year their trade first earns) and the asset turnover
    of the netted book and of the stand-alone view (daily volumes without the initial build), each
    divided by the year's live days / 252. Weighted by the years' lengths they average to the
    annualised figures of the metrics table."""
    days = pd.Series(1, index=live).groupby(live.year).sum()
    years = days / PERIODS_PER_YEAR
    t = pd.Series(meta_counted, dtype=float)
    earn = t.index.where(t.index >= live[0], live[0])
    realloc = t.groupby(earn.year).sum().reindex(days.index, fill_value=0.0)
    volumes = daily[["book_volume", "standalone_volume"]].copy()
    volumes.iloc[0] = 0.0  # the initial build from cash is a cost, not turnover
    by_year = volumes.groupby(live.year).sum()
    frame = pd.DataFrame({"meta: sleeve reallocation": realloc / years,
                          "meta: asset turnover (netted book)": by_year["book_volume"] / years,
                          "stand-alone: asset turnover": by_year["standalone_volume"] / years})
    frame.index.name = "year"
    return frame


def _benchmark_convention(bench: Benchmark | None) -> str:
    if bench is None:
        return "No benchmark: beta, alpha, tracking error and information ratio are empty."
    what = ("a TOTAL RETURN index (dividends reinvested), comparable with the dividend-adjusted stock prices"
            if bench.total_return else
            "a PRICE index (no dividends: not total return); the stocks are dividend-adjusted, so the index's "
            "return is understated by its dividend yield and every excess return and alpha over it is flattered")
    return (f"Benchmark: {bench.label}, {what}; simple daily returns P_t/P_(t-1) - 1 of its levels "
            f"(source: {bench.source}). Beta, alpha, tracking error and information ratio of every portfolio "
            "are against it.")


def _survivorship(asset_returns: pd.DataFrame, live: pd.DatetimeIndex) -> tuple[str, str]:
    """(the caveat's HTML, the convention's text) from the data itself: do tickers list or delist?"""
    window = asset_returns.reindex(live)
    listed = window.notna()
    changing = int((~listed.all()).sum())  # NaN on some live day: lists late or delists inside the window
    n = window.shape[1]
    if changing == 0:
        text = (f"No ticker of the {n} in the price data lists or delists over the window: the universe is "
                "fixed. If it was chosen with hindsight (as the bundled 20 large US stocks, all alive in 2022, "
                "were), every sleeve, the meta and their absolute returns are flattered by survivorship bias, "
                "and so is any comparison with an index that held its failures.")
    else:
        text = (f"{changing} of the {n} tickers list or delist inside the window (a point-in-time universe: "
                "each is traded only while listed, a delisting closes its position to cash). Survivorship "
                "bias is limited to how the universe itself was chosen.")
    return text, text


def _sleeve_spans(sleeve_returns: pd.DataFrame, live: pd.DatetimeIndex, window: int) -> str:
    """When sleeves enter late or stop early: how many the book can hold when it starts (a sleeve
    enters the optimizer once ``window`` rows of it are live), from when all can, and which stopped."""
    index = sleeve_returns.index
    n = sleeve_returns.shape[1]
    parts = []
    eligible = {}
    for name, column in sleeve_returns.items():
        first = column.first_valid_index()
        pos = index.get_loc(first) + window - 1
        eligible[name] = index[pos] if pos < len(index) else None
    late = {k: d for k, d in eligible.items() if d is None or d >= live[0]}
    if late:
        known = [d for d in eligible.values() if d is not None]
        all_from = (f"all {n} from {max(known).date()}" if len(known) == n
                    else f"{n - len(known)} never have a whole window")
        parts.append(f"the book starts on {live[0].date()} able to hold {n - len(late)} of its {n} sleeves (a sleeve "
                     f"enters the optimizer once a whole {window}-day window of it is live); {all_from}")
    ends = sleeve_returns.apply(lambda c: c.last_valid_index())
    stopped = ends[ends < live[-1]]
    if len(stopped):
        parts.append(f"{len(stopped)} sleeve(s) stopped before the end ("
                     + ", ".join(f"{name} on {day.date()}" for name, day in stopped.sort_values().items())
                     + "): their capital went to cash until the next rebalance")
    return "; ".join(parts)


def _caveats(risk_free_rate: float, bench: Benchmark | None, universe: str, spans: str = "") -> str:
    if bench is None:
        bench_text = ("No benchmark was given: beta, alpha, tracking error and information ratio are empty "
                      f"(set ${BENCHMARK_ENV}).")
    elif bench.total_return:
        bench_text = (f"{_html.escape(bench.label)} is a TOTAL RETURN index (dividends reinvested), like the "
                      "dividend-adjusted stock prices: the comparison is like for like.")
    else:
        bench_text = (f"{_html.escape(bench.label)} is a PRICE index, without dividends (not total return): "
                      "it understates the index's return by its dividend yield (roughly 1.5-2.5% a year for "
                      "US large caps), which flatters alpha and the excess return over it. A total-return file "
                      f"can be given (${BENCHMARK_ENV}, docs/report.md).")
    items = [
        "<b>Survivorship.</b> " + _html.escape(universe),
        *(["<b>Sleeves come and go.</b> " + _html.escape(spans[0].upper() + spans[1:]) + "."] if spans else []),
        "<b>Benchmark.</b> " + bench_text,
        f"<b>Risk-free rate.</b> rf = {risk_free_rate:.2%} a year, converted to a daily rate geometrically, "
        "(1 + rf)^(1/252) - 1; one rf for Sharpe, Sortino, alpha, the optimizer and the sleeves' idle cash.",
        "<b>Window.</b> Every portfolio is measured on the meta's live range with daily simple returns "
        "(252 a year, ddof=1); the first and last calendar years may be partial. All conventions: "
        '<a href="#conventions">Conventions</a>.',
    ]
    return '<div class="caveats"><ul>' + "".join(f"<li>{i}</li>" for i in items) + "</ul></div>"


def _decision_html(*, metrics, decision, figures_html, changes, previous, risk_free_rate, live, bench,
                   universe, spans) -> str:
    books = decision["books"]
    meta = metrics.loc["meta"]
    short = LABEL_SHORT | ({"benchmark": bench.name} if bench is not None else {})

    def versus(col: str, fmt) -> str:
        parts = [f"{short.get(n, n)} {fmt(metrics.loc[n, col]) or 'n/a'}" for n in books[1:]]
        return " · ".join(parts)

    bname = bench.name if bench is not None else "benchmark"  # H.card escapes
    na = lambda text: text or "n/a"  # noqa: E731
    cards = "".join([
        H.card("CAGR", na(_PCT(meta["cagr"])), versus("cagr", _PCT), _tone(meta["cagr"])),
        H.card("Sharpe", na(H.fmt_num(meta["sharpe"])), versus("sharpe", H.fmt_num)),
        H.card("Volatility", na(_PCT(meta["ann_vol"])), versus("ann_vol", _PCT)),
        H.card("Max drawdown", na(_PCT(meta["max_drawdown"])), versus("max_drawdown", _PCT), "neg"),
        H.card(f"Beta to {bname}", na(H.fmt_num(meta["beta"])), "cov(r, b) / var(b), daily"),
        H.card("Alpha", na(_PCT(meta["alpha"])),
               f"per year, above beta x {bench.label if bench is not None else 'a benchmark'}",
               _tone(meta["alpha"])),
        H.card("Information ratio", na(H.fmt_num(meta["information_ratio"])), f"vs {bname}, annualised"),
        H.card("Tracking error", na(_PCT(meta["tracking_error"])), "std(r - b) x sqrt(252)"),
    ])
    compare, compare_fmt = _labelled(_metric_view(metrics, books, DECISION_COLUMNS), _METRIC_FORMATS)
    compare = compare.rename(index=short_rows(bench))
    yearly = decision["yearly"].copy()
    if "benchmark" in yearly:
        yearly["meta - benchmark"] = yearly["meta"] - yearly["benchmark"]
    yearly_fmt = {c: _PCT for c in yearly.columns if c != "days"} | {"days": lambda x: f"{int(x):,}"}
    yearly_fmt["meta - benchmark"] = _fmt_pp
    yearly, yearly_fmt = _labelled(yearly, yearly_fmt, {
        "meta": "Meta", "equal_weight_meta": "Equal-weight meta",
        "benchmark": bench.label if bench is not None else "Benchmark", "days": "Days",
        "meta - benchmark": f"Meta − {bench.name if bench is not None else 'benchmark'}"})
    worst = decision["drawdowns"].copy()
    worst_fmt = {"depth": _PCT, "recovery": lambda x: "not recovered" if H._isnan(x) else str(pd.Timestamp(x).date()),
                 "days_to_trough": lambda x: f"{int(x):,}", "duration": lambda x: f"{int(x):,}"}
    worst_labels = {"start": "Start", "trough": "Trough", "recovery": "Recovery", "depth": "Depth",
                    "days_to_trough": "Days to trough", "duration": "Duration (trading days)"}
    worst, worst_fmt = _labelled(worst, worst_fmt, worst_labels)
    weights = decision["weights"]
    weight_labels = {"held": "Held (last day)", "target": "Target (latest rebalance)",
                     "risk_ex_ante": "Risk share ex-ante (latest rebalance)",
                     "risk_realised": "Risk share realised (live period)", "previous": "Previous report",
                     "change": "Change"}
    weights, weight_fmt = _labelled(weights, {c: _PCT for c in weight_labels}, weight_labels)
    if changes:
        prev_note = (f"Changes against the previous report (generated {previous.get('generated_at', 'unknown')}, "
                     f"live to {changes['period'].loc['end', 'previous']}); this report is live to "
                     f"{live[-1].date()}.")
        metric_fmt = {c: (lambda x: H.fmt_num(x, 4)) for c in ("previous", "current", "change")}
        deltas = changes["metrics"].loc[[m for m in ("cagr", "sharpe", "ann_vol", "max_drawdown", "beta", "alpha",
                                                     "information_ratio") if m in changes["metrics"].index]]
        deltas = deltas.rename(index=lambda m: METRIC_LABELS.get(m, m))
        assets = changes["asset_weights"]
        what_changed = (
            H.note(prev_note)
            + '<div class="grid2"><div><h3>Meta metrics: previous vs now</h3>'
            + H.table(deltas, metric_fmt, scroll=False)
            + "</div><div><h3>Largest look-through asset-weight changes</h3>"
            + H.table(assets, {c: _PCT for c in assets.columns}, scroll=False) + "</div></div>")
    else:
        what_changed = H.note("No previous report summary was given: nothing to compare yet.")
    return (
        H.note(f"The headline meta is the netted book (one account, net of its own trading costs), on "
               f"{live[0].date()} – {live[-1].date()} ({len(live):,} trading days), against the equal-weight "
               "meta (1/N of the sleeves, same rebalance dates)"
               + (f" and {bench.label}." if bench is not None else "; no benchmark was given."))
        + _caveats(risk_free_rate, bench, universe, spans)
        + f'<div class="cards">{cards}</div>'
        + "<h3>Meta vs benchmarks</h3>"
        + H.table(compare, compare_fmt, row_class=lambda k, r: "meta" if k == "meta" else "", scroll=False,
                  table_id="summary-table")
        + figures_html("cumulative")
        + '<div class="grid2"><div><h3>Yearly returns (compounded)</h3>'
        + H.table(yearly, yearly_fmt, scroll=False)
        + "</div><div>" + figures_html("monthly_returns") + "</div></div>"
        + '<div class="grid2"><div><h3>Worst 5 drawdowns of the meta</h3>'
        + H.table(worst, worst_fmt, scroll=False)
        + H.note("Start = first day below the previous peak; recovery = first day back at it; duration = "
                 "trading days under water.")
        + "</div><div>" + figures_html("drawdowns") + "</div></div>"
        + '<div class="grid2"><div>' + figures_html("rolling_sharpe") + "</div><div>"
        + figures_html("rolling_vol") + "</div></div>"
        + "<h3>Current meta-weights</h3>"
        + H.table(weights, weight_fmt)
        + "<h3>What changed since the last report</h3>" + what_changed
    )


LABEL_SHORT = {"equal_weight_meta": "EW meta", "meta_standalone": "stand-alone"}


def short_rows(bench: Benchmark | None) -> dict[str, str]:
    """Table rows: the benchmark's row shows its name and kind, e.g. 'S&P 500 (price index)'."""
    return {"benchmark": bench.label} if bench is not None else {}


def _render(*, title, metrics, reconciliations, attribution, risk, diagnostics, lineage, changes,
            conventions, figures, summary, previous, live, sleeves, tolerance, risk_free_rate, costs,
            decision, turnover_by_year, bench, universe, spans) -> str:
    reconciled = bool(reconciliations["passed"].all())
    max_diff = summary["max_reconciliation_diff"]
    n_passed = int(reconciliations["passed"].sum())
    banner = ""
    if not reconciled:  # a failure stays loud at the top: the numbers below do not reconcile
        failed = reconciliations[~reconciliations["passed"]]
        banner = ('<div class="banner bad">RECONCILIATION FAILED — the numbers in this report do not '
                  "reconcile: " + _html.escape(_fail_message(failed)) + "</div>")
    cov_warning = covariance_warning(diagnostics)
    if cov_warning:
        banner += ('<div class="banner bad" id="covariance-warning">WARNING — '
                   + _html.escape(cov_warning) + "</div>")
    status = (f'<a class="status {"ok" if reconciled else "bad"}" id="reconciliation-status" href="#forensics">'
              f'checks {n_passed}/{len(reconciliations)} {"pass" if reconciled else "FAIL"}</a>')

    def fig(name: str) -> str:
        return H.figure_div(figures[name], f"fig-{name}")

    decision_sec = _decision_html(metrics=metrics, decision=decision, figures_html=fig, changes=changes,
                                   previous=previous, risk_free_rate=risk_free_rate, live=live, bench=bench,
                                   universe=universe, spans=spans)

    order = ["meta", "meta_standalone", "equal_weight_meta", "benchmark", *sleeves]
    risk_view, risk_fmt = _labelled(_metric_view(metrics, order, RISK_COLUMNS), _METRIC_FORMATS)
    tail_view, tail_fmt = _labelled(_metric_view(metrics, order, TAIL_COLUMNS), _METRIC_FORMATS)
    risk_view, tail_view = risk_view.rename(index=short_rows(bench)), tail_view.rename(index=short_rows(bench))
    meta_row = lambda k, r: "meta" if k == "meta" else ""  # noqa: E731
    perf = (
        H.note(f"Every portfolio on the meta's live range {live[0].date()} – {live[-1].date()} "
               f"({len(live):,} trading days). VaR/CVaR are positive loss numbers; max drawdown is negative; "
               "beta, alpha, tracking error and information ratio are against "
               + (bench.label if bench is not None else "a benchmark (none given)") + ". "
               "Sleeve reallocation = the meta's two-sided trade between sleeves; asset turnover = a book's "
               "two-sided trade in assets; both in multiples of the book's value per year.")
        + "<h3>Return and risk</h3>" + H.table(risk_view, risk_fmt, row_class=meta_row, table_id="metrics-risk")
        + "<h3>Tails, distribution and trading</h3>" + H.table(tail_view, tail_fmt, row_class=meta_row)
    )
    ex_post = risk["ex_post"]
    rc_labels = {"avg_weight": "Average weight", "ann_vol": "Volatility",
                 "rc_avg_weights": "Risk share at average weights", "rc_realised": "Risk share realised"}
    ex_post_view, ex_post_fmt = _labelled(ex_post, {c: _PCT for c in rc_labels}, rc_labels)
    allocation = (
        fig("meta_weights") + fig("risk_contributions")
        + H.note("Realised risk share = cov(m_s r_s, r_meta) / var(r_meta) over each year's live days: what "
                 "each sleeve added to the meta's realised variance. (The ex-ante shares at each rebalance, "
                 f"under the optimizer's {risk['estimator']} covariance of a trailing {risk['window']}-day "
                 "window, are in the current-weights table; under risk parity they are equal by construction.)")
        + '<div class="grid2"><div>'
        + "<h3>Risk contributions over the live period</h3>"
        + H.table(ex_post_view, ex_post_fmt)
        + "</div><div>" + fig("correlation") + "</div></div>"
    )
    assets = fig("latest_exposures") + fig("exposures_over_time")
    years = len(live) / PERIODS_PER_YEAR

    def largest_first(frame: pd.DataFrame) -> pd.DataFrame:
        lines = [k for k in frame.index if str(k).startswith("(")]  # costs and cash interest stay last
        return pd.concat([frame.drop(index=lines).sort_values("per_year", ascending=False), frame.loc[lines]])

    by_sleeve = largest_first(attribution["by_sleeve"][["avg_weight", "per_year"]])
    by_asset = largest_first(attribution["by_asset"][["avg_weight", "per_year"]])
    attr_labels = {"avg_weight": "Average weight", "per_year": "Contribution (pp per year)"}
    attr_fmt = {"avg_weight": _PCT, "per_year": _fmt_pp}
    by_sleeve, sleeve_fmt = _labelled(by_sleeve, attr_fmt, attr_labels)
    by_asset, asset_fmt = _labelled(by_asset, attr_fmt, attr_labels)
    arithmetic = float(attribution["by_sleeve"]["per_year"].sum())
    total = float(attribution["by_sleeve"]["contribution"].sum())
    sleeve_cagr = (1.0 + total) ** (1.0 / years) - 1.0 if total > -1 else float("nan")
    attr = (
        H.note("Contribution in percentage points of annual return = 252 x the mean daily contribution "
               f"m_s(t) g_s(t) (the book's share of a sleeve times the sleeve's gross return: the book pays no "
               f"sleeve's own cost, it pays its own, one line). The rows add up to {_fmt_pp(arithmetic)} a year, "
               f"the headline meta's arithmetic annual return (252 x mean daily return); its CAGR is "
               f"{_PCT(sleeve_cagr)}, the difference is compounding (volatility drag). Largest first.")
        + '<div class="grid2"><div><h3>By sleeve</h3>'
        + H.table(by_sleeve, sleeve_fmt, scroll=False)
        + "</div><div><h3>By asset (gross) and costs</h3>"
        + H.table(by_asset, asset_fmt)
        + "</div></div>"
    )
    turnover_sec = (
        H.note("Turnover is two-sided (sum of |trades|, not halved), in multiples of the book's value per "
               "year. Sleeve reallocation = the meta's trade between sleeves; asset turnover = the trade in "
               "assets (the netted book's, and the stand-alone view's: the sleeves' own trades plus the meta's).")
        + fig("turnover") + _costs_html(costs, metrics) + fig("crossing_savings")
        + (_capacity_html(figures) if "capacity" in figures else ""))
    rec_banner = (f'<div class="banner ok" id="reconciliation-banner">All {len(reconciliations)} reconciliations '
                  f"passed (largest difference {H.fmt_sci(max_diff)} &le; tolerance {tolerance:.0e}).</div>"
                  if reconciled else
                  f'<div class="banner bad" id="reconciliation-banner">{len(reconciliations) - n_passed} of '
                  f"{len(reconciliations)} reconciliations FAILED (largest difference {H.fmt_sci(max_diff)}, "
                  f"tolerance {tolerance:.0e}).</div>")
    forensics = rec_banner + "<h3>Reconciliations</h3>" + H.table(
        reconciliations,
        {"max_abs_diff": H.fmt_sci, "tolerance": lambda x: f"{x:.0e}",
         "passed": lambda x: "PASS" if x else "FAIL"},
        index=False, text_columns=("description",),
        cell_class=lambda c, v: ("pass" if v else "fail") if c == "passed" else "",
        scroll=False,
    )
    forensics += "<h3>Optimizer diagnostics per rebalance</h3>" + _diagnostics_table(diagnostics)
    forensics += "<h3>Lineage per sleeve</h3>" + _lineage_table(lineage, sleeves)
    forensics += "<h3>Full list of changes since the previous report</h3>" + _changes_html(changes, previous)
    conv = pd.DataFrame({"convention": list(conventions.values())},
                        index=pd.Index(list(conventions.keys()), name="item"))
    conventions_sec = H.table(conv, text_columns=("convention",), scroll=False)

    sections = [
        H.section("decision", "The book: meta vs benchmarks", decision_sec),
        H.section("performance", "Performance of every portfolio", perf),
        H.section("allocation", "Allocation & risk", allocation),
        H.section("assets", "Look-through asset exposures", assets),
        H.section("attribution", "Return attribution (percentage points per year)", attr),
        H.section("turnover", "Turnover and trading costs", turnover_sec),
        H.section("forensics", "Forensics: reconciliations, optimizer, lineage", forensics),
        H.section("conventions", "Conventions", conventions_sec),
    ]
    nav = [("decision", "The book"), ("performance", "All portfolios"), ("allocation", "Allocation & risk"),
           ("assets", "Exposures"), ("attribution", "Attribution"), ("turnover", "Turnover & costs"),
           ("forensics", "Forensics"), ("conventions", "Conventions")]
    subtitle = (f"{len(sleeves)} sleeves · live {live[0].date()} – {live[-1].date()} · "
                f"generated {summary['generated_at']}")
    return H.page(title=title, subtitle=subtitle, status=status, banner=banner, nav=nav, sections=sections,
                  footer="Self-contained report: plotly.js is embedded; opens offline.")


def _costs_html(costs, metrics: pd.DataFrame) -> str:
    """Both cost views side by side and the internal crossing savings per year."""
    t = costs.totals()
    views = pd.DataFrame({
        "Sharpe": [metrics.loc["meta", "sharpe"], metrics.loc["meta_standalone", "sharpe"]],
        "CAGR": [metrics.loc["meta", "cagr"], metrics.loc["meta_standalone", "cagr"]],
        "asset turnover (× per year)": [t["book_turnover"], t["standalone_turnover"]],
        "cost (bps / yr)": [t["book_cost_bps_per_year"], t["standalone_cost_bps_per_year"]],
    }, index=pd.Index(["netted book (headline)", "stand-alone"], name="view"))
    yearly = costs.yearly()
    yearly_view = yearly[["days", "unnetted_book_volume", "book_volume", "savings_volume", "unnetted_book_cost",
                          "book_cost", "savings_bps"]].copy()
    yearly_view[["unnetted_book_cost", "book_cost"]] *= 1e4
    yearly_view = yearly_view.rename(columns={
        "unnetted_book_volume": "un-netted asset trade (× in year)", "book_volume": "book asset trade (× in year)",
        "savings_volume": "crossed internally (× in year)",
        "unnetted_book_cost": "un-netted cost (bps)", "book_cost": "book cost (bps)", "savings_bps": "savings (bps)"})
    bps = lambda x: f"{x:,.1f}"  # noqa: E731
    times = H.fmt_times  # two-sided volume in multiples of the book's value
    return (
        "<h3>Costs: netted book vs stand-alone</h3>"
        + H.note(f"One cost model for both views: sleeves trade at their registry cost_bps, the meta's trades at "
                 f"each asset's half-spread (default {costs.cost_bps:g} bps), the book at the blended rate of the "
                 "trades it nets; holding costs (borrow, funding) on the positions held. Crossing savings "
                 f"{t['savings_bps_per_year']:.1f} bps/yr = trading {t['savings_bps_per_year_trading']:.1f} "
                 f"+ holding {t['savings_bps_per_year_holding']:.1f}, on the same holdings; volume crossed "
                 f"internally {t['crossed_fraction']:.1%} of the un-netted volume.")
        + H.table(views, {"Sharpe": H.fmt_num, "CAGR": H.fmt_pct, "asset turnover (× per year)": times,
                          "cost (bps / yr)": bps}, scroll=False)
        + "<h3>Internal crossing savings per year</h3>"
        + H.table(yearly_view, {"days": lambda x: f"{int(x):,}", "un-netted asset trade (× in year)": times,
                                "book asset trade (× in year)": times, "crossed internally (× in year)": times,
                                "un-netted cost (bps)": bps, "book cost (bps)": bps, "savings (bps)": bps})
    )


def _capacity_html(figures) -> str:
    return "<h3>Capacity: Sharpe and cost drag against AUM</h3>" + H.figure_div(figures["capacity"], "fig-capacity")


def _optimizer_lookback(diagnostics: pd.DataFrame | None) -> int | None:
    """The optimizer's lookback (rows) from its diagnostics, when they carry it."""
    if diagnostics is None or "lookback" not in diagnostics or len(diagnostics) == 0:
        return None
    value = diagnostics["lookback"].iloc[-1]
    return None if pd.isna(value) else int(value)


def _estimator(diagnostics: pd.DataFrame | None) -> tuple[str, float | None]:
    """The optimizer's covariance estimator (and halflife) from its diagnostics; sample if unknown."""
    if diagnostics is None or "covariance" not in diagnostics or len(diagnostics) == 0:
        return "sample", None
    halflife = diagnostics["halflife"].iloc[-1] if "halflife" in diagnostics else None
    return str(diagnostics["covariance"].iloc[-1]), (None if halflife is None or pd.isna(halflife) else float(halflife))


def _diagnostics_table(diagnostics: pd.DataFrame | None) -> str:
    if diagnostics is None or len(diagnostics) == 0:
        return H.note("No optimizer diagnostics were given.")
    frame = diagnostics.copy()
    if "turnover" in frame:  # the optimizer's trade between sleeves: one name for one quantity
        frame = frame.rename(columns={"turnover": "reallocation (× book)"})
    if frame.index.name is None:
        frame.index.name = "rebalance"
    flag_cols = [c for c in frame.columns if any(k in str(c).lower() for k in ("fallback", "status"))]

    def flag(col, value) -> str:
        if col not in flag_cols or value is None or (isinstance(value, float) and np.isnan(value)):
            return ""
        text = str(value).lower()
        return "" if text in ("", "optimal", "ok", "success", "none", "false", "0") else "flag"

    n_flag = int(sum(bool(flag(c, v)) for c in flag_cols for v in frame[c]))
    cov = covariance_summary(diagnostics)
    varying, constant_note = H.constant_columns(frame)
    return (H.note(f"{len(frame)} rebalances; {n_flag} flagged cells (fallbacks / non-optimal status) "
                   "highlighted.") + (H.note(f"Covariance estimator: {cov}.") if cov else "")
            + constant_note + H.table(varying, cell_class=flag))


def _lineage_table(lineage: Mapping[str, Mapping] | None, sleeves) -> str:
    if not lineage:
        return H.note("No lineage was given.")
    frame = pd.DataFrame.from_dict({s: dict(v) for s, v in lineage.items()}, orient="index")
    frame.index.name = "sleeve"
    if "materialized_at" in frame:  # to the second: sub-second digits only add bytes per sleeve
        frame["materialized_at"] = [_to_second(v) for v in frame["materialized_at"]]
    missing = [s for s in sleeves if s not in frame.index]
    note = H.note(f"No lineage for sleeves {missing}.") if missing else ""
    varying, constant_note = H.constant_columns(frame)
    return note + constant_note + H.table(varying, scroll=False)


def _to_second(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return value
    try:
        return pd.Timestamp(value).floor("s").isoformat()
    except (TypeError, ValueError):
        return value


def _changes_html(changes: Mapping[str, pd.DataFrame], previous: Mapping | None) -> str:
    if not previous:
        return H.note("No previous report summary was given: nothing to compare.")
    pct = {c: H.fmt_pct for c in ("previous", "current", "change")}
    metric_fmt = {c: (lambda x: H.fmt_num(x, 4)) for c in ("previous", "current", "change")}
    return (
        H.note(f"Previous report generated {previous.get('generated_at', 'unknown')}.")
        + H.table(changes["period"], scroll=False)
        + '<div class="grid2"><div><h3>Meta metric deltas</h3>'
        + H.table(changes["metrics"], metric_fmt, scroll=False)
        + "<h3>Meta-weight changes (latest held)</h3>" + H.table(changes["meta_weights"], pct, scroll=False)
        + "</div><div><h3>Largest asset-weight changes</h3>"
        + H.table(changes["asset_weights"], pct, scroll=False) + "</div></div>"
    )
