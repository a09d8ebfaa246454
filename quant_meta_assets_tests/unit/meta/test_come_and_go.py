"""Sleeves come and go: hand-computed ledgers of a late sleeve and of a sleeve that stops.

Two sleeves on a six-day panel, every number worked out by hand below (no code of the project
in the oracle): ``a`` holds ticker X, ``b`` holds ticker Y (weight 1, no cash), the meta is
``equal_weight`` over the sleeves active in a 2-row window, rebalanced every 2 rows (rows 1, 3, 5).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.meta.costs import cost_views
from quant_meta_assets.meta.drift import cash_after_stop, stopped_mask
from quant_meta_assets.meta.flatten import flatten_weights, meta_portfolio_returns
from quant_meta_assets.meta.optimize import InfeasibleConstraintsError, optimize_meta_weights
from quant_meta_assets.meta.returns import aggregate_returns
from quant_meta_assets.report import build_report

pytestmark = [pytest.mark.timeout(120)]

DAYS = pd.bdate_range("2024-01-01", periods=6, name="date")
OPT = dict(method="equal_weight", lookback=2, rebalance_every=2)


def _records(a, b):
    return [{"sleeve": name, "status": "success", "error": None, "returns": pd.Series(r, index=DAYS, dtype=float)}
            for name, r in (("a", a), ("b", b))]


def _no_costs(returns):
    return {s: pd.Series(0.0, index=returns.index) for s in returns.columns}


def _sleeve_weights():
    return {"a": pd.DataFrame({"X": 1.0}, index=DAYS), "b": pd.DataFrame({"Y": 1.0}, index=DAYS)}


def test_late_sleeve_ledger_by_hand():
    nan = np.nan
    returns = aggregate_returns(_records([0.01, 0.02, -0.01, 0.03, 0.00, 0.02],
                                         [nan, nan, 0.05, -0.02, 0.04, -0.01]))
    assert returns.index[0] == DAYS[0]  # the late sleeve does not move the book's start
    opt = optimize_meta_weights(returns, **OPT, risk_free_rate=0.0)
    # row 1 (window d0, d1): b has NaN -> inactive, exactly 0; row 3 (d2, d3): both live -> 1/2 each
    assert opt.weights.index.tolist() == [DAYS[1], DAYS[3], DAYS[5]]
    assert opt.weights.loc[DAYS[1]].tolist() == [1.0, 0.0]
    assert opt.weights.loc[DAYS[3]].tolist() == [0.5, 0.5]
    assert opt.diagnostics.loc[DAYS[1], "notes"] == "inactive (NaN in window): b"
    flat = flatten_weights(opt.weights, _sleeve_weights(), returns, _no_costs(returns), cash_return=0.0)
    held = flat.meta_weights_daily
    # d2, d3: all in a (b not live); d4: 1/2 each; d5: drifted through d4 (a +0%, b +4%)
    expected = pd.DataFrame({"a": [1.0, 1.0, 0.5, 0.5 / 1.02], "b": [0.0, 0.0, 0.5, 0.52 / 1.02]}, index=DAYS[2:])
    pd.testing.assert_frame_equal(held, expected, check_names=False, atol=1e-15, rtol=0)
    assert (held["b"].loc[:DAYS[3]] == 0.0).all()  # exactly 0, not a tiny number
    pd.testing.assert_frame_equal(flat.asset_weights, expected.set_axis(["X", "Y"], axis=1),
                                  check_names=False, atol=1e-15, rtol=0)
    meta = meta_portfolio_returns(held, returns, cash_return=0.0)
    by_hand = [-0.01, 0.03, 0.5 * 0.00 + 0.5 * 0.04, (0.5 * 0.02 + 0.52 * -0.01) / 1.02]
    assert meta.tolist() == pytest.approx(by_hand, abs=1e-15)


def test_stopped_sleeve_ledger_by_hand():
    """b's last live day is d2: from d3 its sub-account is cash earning rf_d (no asset), until the
    rebalance of d3 sells it (window d2, d3 has NaN: inactive) and a holds everything from d4."""
    nan = np.nan
    rf_d = 1e-4
    returns = aggregate_returns(_records([0.01, 0.02, 0.10, 0.03, 0.00, 0.02],
                                         [0.02, 0.01, -0.10, nan, nan, nan]))
    assert returns.index[-1] == DAYS[-1] and returns["b"].iloc[3:].isna().all()  # NaN after b stops
    assert stopped_mask(returns.to_numpy())[:, 1].tolist() == [False] * 3 + [True] * 3
    assert cash_after_stop(returns, rf_d)["b"].iloc[3:].tolist() == [rf_d] * 3
    opt = optimize_meta_weights(returns, **OPT, risk_free_rate=(1 + rf_d) ** 252 - 1)
    assert opt.weights.loc[DAYS[1]].tolist() == [0.5, 0.5]
    assert opt.weights.loc[DAYS[3]].tolist() == [1.0, 0.0]
    # turnover at d3 against the holdings drifted through d2 and d3 (b as cash on d3)
    a_val, b_val = 0.5 * 1.10 * 1.03, 0.5 * 0.90 * (1 + rf_d)
    b_held = b_val / (a_val + b_val)
    assert opt.diagnostics.loc[DAYS[3], "turnover"] == pytest.approx(2 * b_held, abs=1e-12)

    flat = flatten_weights(opt.weights, _sleeve_weights(), returns, _no_costs(returns), cash_return=rf_d)
    held = flat.meta_weights_daily
    # d2: 1/2 each; d3: drifted through d2 (a +10%, b -10%) = 0.55 / 0.45; d4, d5: all in a
    expected = pd.DataFrame({"a": [0.5, 0.55, 1.0, 1.0], "b": [0.5, 0.45, 0.0, 0.0]}, index=DAYS[2:])
    pd.testing.assert_frame_equal(held, expected, check_names=False, atol=1e-15, rtol=0)
    # on d3 b is cash: no asset weight from it, the book holds 0.45 in cash
    assert flat.asset_weights.loc[DAYS[3]].tolist() == pytest.approx([0.55, 0.0], abs=1e-15)
    assert flat.exposure.loc[DAYS[3], "net"] == pytest.approx(0.55, abs=1e-15)
    meta = meta_portfolio_returns(held, returns, cash_return=rf_d)
    by_hand = [0.5 * 0.10 + 0.5 * -0.10, 0.55 * 0.03 + 0.45 * rf_d, 0.00, 0.02]
    assert meta.tolist() == pytest.approx(by_hand, abs=1e-15)


def test_stopped_sleeve_costs_and_report_reconcile(tmp_path):
    """A sleeve that stops on row 300 of 400 (its weights frame ends with it): both cost views and
    every report reconciliation hold, and its liquidation is paid by the netted book."""
    rng = np.random.default_rng(7)
    dates = pd.bdate_range("2020-01-01", periods=400, name="date")
    assets = pd.DataFrame(rng.normal(4e-4, 0.01, (400, 3)), index=dates, columns=["X", "Y", "Z"])
    sleeve_returns = assets.set_axis(["a", "b", "c"], axis=1).copy()
    sleeve_returns.iloc[300:, 2] = np.nan  # 'c' stops after row 299
    weights = {s: pd.DataFrame(1.0, index=dates, columns=[t]) for s, t in zip("abc", "XYZ", strict=True)}
    weights["c"] = weights["c"].iloc[:300]
    costs = {s: pd.Series(0.0, index=dates) for s in "abc"}
    costs["c"] = costs["c"].iloc[:300]
    opt = optimize_meta_weights(sleeve_returns, "risk_parity", lookback=100, rebalance_every=21,
                                risk_free_rate=0.0)
    assert (opt.weights.loc[opt.weights.index >= dates[300], "c"] == 0.0).all()
    assert (opt.weights.loc[opt.weights.index < dates[299], "c"] > 0.0).all()
    views = cost_views(meta_weights=opt.weights, sleeve_returns=sleeve_returns,
                       sleeve_costs=pd.DataFrame(costs), sleeve_weights=weights,
                       asset_returns=assets, cost_bps=5.0, cash_return=0.0)
    assert views.reconciled, views.checks.to_string()
    # the day after c stops, the book sells its Z: c's share of the book, at 5 bps
    day = dates[300]
    c_share = views.book_weights.loc[dates[299], "Z"] * (1 + assets.loc[dates[299], "Z"]) / (
        1 + (views.book_weights.loc[dates[299]] * assets.loc[dates[299]]).sum())
    assert views.book_weights.loc[day, "Z"] == 0.0
    assert views.daily.loc[day, "book_volume"] == pytest.approx(c_share, rel=1e-9)
    report = build_report(
        sleeve_returns=sleeve_returns, meta_weights=opt.weights, diagnostics=opt.diagnostics,
        flatten=flatten_weights(opt.weights, weights, sleeve_returns, costs, cash_return=0.0), sleeve_weights=weights,
        sleeve_costs=costs, sleeve_turnover={}, asset_returns=assets, benchmark=None, lineage=None,
        previous=None, output_dir=tmp_path, risk_free_rate=0.0,
    )
    assert report["reconciled"]
    meta = report["portfolio_returns"]["meta"]
    assert meta.notna().all() and meta.index[-1] == dates[-1]
    html = open(report["html"], encoding="utf-8").read()
    assert f"1 sleeve(s) stopped before the end (c on {dates[299].date()})" in html[:html.index('class="cards"')]


@pytest.mark.timeout(300)
def test_a_late_sleeve_never_moves_the_meta_start_on_the_bundled_data():
    """Issue 18's reproduction: the default registry plus a 12-1 momentum sleeve with a 5,500-day
    formation period (live from 2011-11). The meta's first live day is the default registry's,
    and the late sleeve is at exactly 0 until a whole optimizer window of it is live."""
    from dataclasses import replace

    from quant_meta_assets.prices import load_prices
    from quant_meta_assets.sleeves.engine import run_sleeve
    from quant_meta_assets.sleeves.registry import load_registry

    prices = load_prices()
    profiles = load_registry()
    records = [run_sleeve(p, prices) for p in profiles]
    base = next(p for p in profiles if p.name == "momentum_12_1")
    late = replace(base, name="momentum_long", params={**base.params, "lookback": 5500})
    late_record = run_sleeve(late, prices)
    assert late_record["start"] >= "2011-11-01"

    def meta(recs):
        returns = aggregate_returns(recs)
        opt = optimize_meta_weights(returns, method="risk_parity", lookback=252, rebalance_every=21)
        held = flatten_weights(opt.weights, {r["sleeve"]: r["weights"] for r in recs}, returns,
                               {r["sleeve"]: r["costs"] for r in recs}).meta_weights_daily
        return returns, opt, held

    base_returns, _, base_held = meta(records)
    returns, opt, held = meta([*records, late_record])
    assert held.index[0] == base_held.index[0]  # the late sleeve does not move the meta's start
    assert returns.index[0] == base_returns.index[0]
    first_live = returns.index.get_loc(returns["momentum_long"].first_valid_index())
    full_window = returns.index[first_live + 251]  # the first row whose 252-row window is all live
    w = opt.weights["momentum_long"]
    assert (w.loc[w.index < full_window] == 0.0).all()  # exactly 0, not small
    assert (w.loc[w.index >= full_window] > 0.0).all()
    assert (held.loc[held.index <= w.index[w.index >= full_window][0], "momentum_long"] == 0.0).all()
    notes = opt.diagnostics.loc[w.index < full_window, "notes"].dropna()
    assert notes.str.contains("momentum_long").any()


def test_the_book_starts_when_its_live_sleeves_can_be_allocated():
    """With max_weight 0.6 one sleeve cannot hold the whole book: the rebalances where only one
    sleeve has a whole window are not emitted (before, an InfeasibleConstraintsError stopped the
    run), and the first emitted rebalance says why the book starts there."""
    rng = np.random.default_rng(5)
    dates = pd.bdate_range("2020-01-01", periods=300, name="date")
    returns = pd.DataFrame(rng.normal(4e-4, 0.01, (300, 2)), index=dates, columns=["a", "b"])
    returns.iloc[:60, 1] = np.nan  # b goes live on row 60: its first whole 50-row window ends on row 109
    opt = optimize_meta_weights(returns, "inverse_vol", lookback=50, rebalance_every=20, max_weight=0.6)
    assert opt.weights.index[0] == dates[109]  # rows 49, 69, 89 have only 'a' active
    assert (opt.weights.max(axis=1) <= 0.6 + 1e-9).all() and np.allclose(opt.weights.sum(axis=1), 1.0)
    note = opt.diagnostics["notes"].iloc[0]
    assert "the book starts here: 3 earlier rebalance(s) could not be allocated (the first: 2020-03-10: " in note
    assert "sum of max_weight over 1 sleeves is 0.6 < 1" in note
    assert (opt.diagnostics["lookback"] == 50).all()
    with pytest.raises(InfeasibleConstraintsError, match="no rebalance can be allocated"):  # b never has a window
        optimize_meta_weights(returns.iloc[:100], "inverse_vol", lookback=50, rebalance_every=20, max_weight=0.6)


def test_after_the_start_a_set_that_cannot_meet_the_bounds_is_still_an_error():
    rng = np.random.default_rng(6)
    dates = pd.bdate_range("2020-01-01", periods=300, name="date")
    returns = pd.DataFrame(rng.normal(4e-4, 0.01, (300, 3)), index=dates, columns=["a", "b", "c"])
    returns.iloc[200:, 2] = np.nan  # c stops: a and b alone cannot fill the book at max_weight 0.4
    with pytest.raises(InfeasibleConstraintsError, match=r"rebalance 2020-\d\d-\d\d.*with inactive sleeves pinned "
                       r"to 0 \(inactive \(NaN in window\): c\): sum of max_weight over 2 sleeves is 0.8 < 1"):
        optimize_meta_weights(returns, "inverse_vol", lookback=50, rebalance_every=20, max_weight=0.4)


def test_a_book_that_started_late_resumes_like_a_full_walk():
    """An incremental update resumes the walk after a start that skipped rebalances (3 here)."""
    rng = np.random.default_rng(5)
    dates = pd.bdate_range("2020-01-01", periods=300, name="date")
    returns = pd.DataFrame(rng.normal(4e-4, 0.01, (300, 2)), index=dates, columns=["a", "b"])
    returns.iloc[:60, 1] = np.nan
    kwargs = dict(method="inverse_vol", lookback=50, rebalance_every=20, max_weight=0.6)
    before = optimize_meta_weights(returns.iloc[:200], **kwargs)
    resumed = optimize_meta_weights(returns, resume=before, **kwargs)
    full = optimize_meta_weights(returns, **kwargs)
    assert before.weights.index[0] == dates[109] and len(full.weights) > len(before.weights)
    pd.testing.assert_frame_equal(resumed.weights, full.weights, check_freq=False, rtol=0, atol=1e-12)
