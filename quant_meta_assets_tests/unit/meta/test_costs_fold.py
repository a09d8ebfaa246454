"""An incremental update of the cost views: a trailing window from a meta rebalance, folded into
the stored views of the earlier days, equals the views of all days computed at once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.errors import StageInputError
from quant_meta_assets.meta.costs import cost_views, fold_checks, fold_cost_views

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def book() -> dict:
    """The default registry's sleeves on the bundled data (no Ray), risk-parity meta-weights."""
    from quant_meta_assets.meta.optimize import optimize_meta_weights
    from quant_meta_assets.meta.returns import aggregate_returns
    from quant_meta_assets.prices import asset_returns, load_prices
    from quant_meta_assets.sleeves.engine import run_sleeve
    from quant_meta_assets.sleeves.registry import load_registry

    prices = load_prices()
    records = [run_sleeve(p, prices) for p in load_registry()]
    meta_returns = aggregate_returns(records)
    return dict(meta_weights=optimize_meta_weights(meta_returns, method="risk_parity").weights,
                sleeve_returns=meta_returns, sleeve_costs={r["sleeve"]: r["costs"] for r in records},
                sleeve_weights={r["sleeve"]: r["weights"] for r in records}, asset_returns=asset_returns(prices))


def _views(book: dict, end: pd.Timestamp, start: pd.Timestamp | None = None, **kw):
    def cut(frame):
        return frame.loc[start:end]

    return cost_views(
        meta_weights=cut(book["meta_weights"]), sleeve_returns=cut(book["sleeve_returns"]),
        sleeve_costs={s: cut(v) for s, v in book["sleeve_costs"].items()},
        sleeve_weights={s: cut(v) for s, v in book["sleeve_weights"].items()},
        asset_returns=book["asset_returns"], cost_bps=5.0, **kw)


@pytest.mark.parametrize("new_days", [1, 5, 63])
def test_a_window_folded_into_the_earlier_views_equals_the_full_views(book, new_days):
    days = book["sleeve_returns"].index
    rebalances = book["meta_weights"].index
    t = days[days.get_loc(rebalances[-40]) + 10]  # the earlier run ends 10 days after a rebalance
    end = days[days.get_loc(t) + new_days]
    earlier = _views(book, t)
    d0 = rebalances[rebalances < t][-1]
    window = _views(book, end, start=d0, emit_from=days[days.get_loc(t) + 1],
                    sleeve_rates=earlier.sleeve_sums["rate_bps"].to_dict())
    folded = fold_cost_views(earlier, window)
    full = _views(book, end)
    pd.testing.assert_frame_equal(folded.daily, full.daily, check_exact=False, rtol=0, atol=1e-13)
    pd.testing.assert_frame_equal(folded.sleeve_totals, full.sleeve_totals, check_exact=False, rtol=0, atol=1e-12)
    pd.testing.assert_series_equal(folded.totals(), full.totals(), check_exact=False, rtol=0, atol=1e-10)
    assert folded.checks["check"].tolist() == full.checks["check"].tolist()
    assert folded.checks["passed"].all() and full.checks["passed"].all()
    np.testing.assert_allclose(folded.checks["max_abs_diff"], full.checks["max_abs_diff"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(window.book_weights.to_numpy(), full.book_weights.iloc[-new_days:].to_numpy(),
                               rtol=0, atol=1e-14)


def test_the_window_must_start_at_a_rebalance_before_the_days_it_emits(book):
    days = book["sleeve_returns"].index
    d0 = book["meta_weights"].index[2]
    with pytest.raises(StageInputError, match="emit_from .* must be a live day after the first one"):
        _views(book, days[days.get_loc(d0) + 20], start=d0, emit_from=days[days.get_loc(d0) + 1])


def test_folding_needs_new_days_after_the_earlier_ones(book):
    days = book["sleeve_returns"].index
    t = days[days.get_loc(book["meta_weights"].index[2]) + 5]
    earlier = _views(book, t)
    with pytest.raises(StageInputError, match="not after the previous ones"):
        fold_cost_views(earlier, earlier)


def test_fold_checks_keeps_the_larger_difference_and_a_failure():
    cols = ["check", "description", "max_abs_diff", "where", "tolerance", "passed"]
    a = pd.DataFrame([["x", "", 1e-15, "2020-01-02", 1e-10, True], ["y", "", 2e-9, "2020-01-03", 1e-10, False]],
                     columns=cols)
    b = pd.DataFrame([["x", "", 3e-15, "2020-02-03", 1e-10, True], ["y", "", 1e-16, "2020-02-04", 1e-10, True],
                      ["z", "", float("nan"), "2020-02-05 (NaN)", 1e-10, False]], columns=cols)
    out = fold_checks(a, b).set_index("check")
    assert out.loc["x", "where"] == "2020-02-03" and out.loc["x", "passed"]
    assert out.loc["y", "where"] == "2020-01-03" and not out.loc["y", "passed"]
    assert np.isnan(out.loc["z", "max_abs_diff"]) and not out.loc["z", "passed"]
