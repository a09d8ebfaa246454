"""An incremental report (``report.incremental``) equals a full recompute: on the default
registry's sleeves over the bundled data, a report through day t folded forward by 1, 5 and 63
days gives the same metrics, cost views, reconciliations, attribution and risk as a report
computed on all the days at once; and it falls back to a full recompute, saying why, when its
inputs are not an append of the previous ones."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.meta.flatten import FlattenResult, flatten_weights
from quant_meta_assets.report import build_report

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # whole reports on the bundled data: in `make test`


@pytest.fixture(scope="module")
def book():
    from quant_meta_assets.meta.optimize import optimize_meta_weights
    from quant_meta_assets.meta.returns import aggregate_returns
    from quant_meta_assets.prices import asset_returns, load_prices
    from quant_meta_assets.sleeves.engine import run_sleeve
    from quant_meta_assets.sleeves.registry import load_registry

    prices = load_prices()
    records = [run_sleeve(p, prices) for p in load_registry()]
    meta_returns = aggregate_returns(records)
    optimized = optimize_meta_weights(meta_returns, method="risk_parity")
    weights = {r["sleeve"]: r["weights"] for r in records}
    costs = {r["sleeve"]: r["costs"] for r in records}
    flat = flatten_weights(optimized.weights, weights, meta_returns, costs)
    return dict(records=records, meta_returns=meta_returns, optimized=optimized, weights=weights, costs=costs,
                flat=flat, asset_returns=asset_returns(prices))


def _report(book, end, tmp_path, name, **kw):
    def cut(frame):
        return frame.loc[:end]

    return build_report(
        sleeve_returns=cut(book["meta_returns"]), meta_weights=cut(book["optimized"].weights),
        diagnostics=cut(book["optimized"].diagnostics),
        flatten=FlattenResult(cut(book["flat"].asset_weights), cut(book["flat"].meta_weights_daily),
                              cut(book["flat"].exposure)),
        sleeve_weights={s: cut(w) for s, w in book["weights"].items()},
        sleeve_costs={s: cut(c) for s, c in book["costs"].items()},
        sleeve_turnover={r["sleeve"]: cut(r["turnover"]) for r in book["records"]},
        asset_returns=cut(book["asset_returns"]), benchmark=None, lineage=None, previous=None,
        output_dir=tmp_path / name, code_version="test", **kw)


def _assert_same(folded: dict, full: dict) -> None:
    pd.testing.assert_frame_equal(folded["metrics"], full["metrics"], check_exact=False, rtol=1e-9, atol=1e-12)
    pd.testing.assert_frame_equal(folded["costs"]["daily"], full["costs"]["daily"], check_exact=False,
                                  rtol=0, atol=1e-13)
    pd.testing.assert_frame_equal(folded["costs"]["yearly"], full["costs"]["yearly"], check_exact=False,
                                  rtol=0, atol=1e-11)
    pd.testing.assert_series_equal(folded["costs"]["totals"], full["costs"]["totals"], check_exact=False,
                                   rtol=1e-12, atol=1e-12)
    pd.testing.assert_frame_equal(folded["costs"]["sleeve_totals"], full["costs"]["sleeve_totals"],
                                  check_exact=False, rtol=1e-12, atol=1e-12)
    a, b = folded["reconciliations"], full["reconciliations"]
    assert a["check"].tolist() == b["check"].tolist()
    assert a["passed"].all() and b["passed"].all()
    np.testing.assert_allclose(a["max_abs_diff"], b["max_abs_diff"], rtol=0, atol=1e-14)
    for key in ("by_sleeve", "by_asset"):
        pd.testing.assert_frame_equal(folded["attribution"][key], full["attribution"][key], check_exact=False,
                                      rtol=1e-9, atol=1e-12)
    pd.testing.assert_frame_equal(folded["portfolio_returns"], full["portfolio_returns"], check_exact=False,
                                  rtol=0, atol=1e-13)


@pytest.mark.parametrize("new_days", [1, 5, 63])
def test_a_folded_report_equals_a_full_recompute(book, tmp_path, new_days):
    days = book["meta_returns"].index
    t = days[days.get_loc(book["optimized"].weights.index[-30]) + 7]  # mid-month: a rebalance falls in 63 days
    end = days[days.get_loc(t) + new_days]
    earlier = _report(book, t, tmp_path, "earlier")
    assert earlier["update"].mode == "full"
    folded = _report(book, end, tmp_path, "folded", fold_from=earlier["fold_state"], fold_vouched=None)
    assert folded["update"].mode == "extend", folded["update"].reason
    assert folded["update"].new_rows == new_days
    full = _report(book, end, tmp_path, "full")
    _assert_same(folded, full)
    # and the next day folds into the folded report's state as into a full one's
    nxt = days[days.get_loc(end) + 1]
    again = _report(book, nxt, tmp_path, "again", fold_from=folded["fold_state"], fold_vouched=None)
    assert again["update"].mode == "extend"
    _assert_same(again, _report(book, nxt, tmp_path, "again_full"))


def test_a_revised_input_or_an_unvouched_sleeve_recomputes_in_full_and_says_why(book, tmp_path):
    days = book["meta_returns"].index
    t = days[-40]
    earlier = _report(book, t, tmp_path, "earlier")
    end = days[-30]
    unvouched = _report(book, end, tmp_path, "unvouched", fold_from=earlier["fold_state"])
    assert unvouched["update"].mode == "full"
    assert "vouches" in unvouched["update"].reason
    state = dict(earlier["fold_state"])
    state["digests"] = {**state["digests"], "asset_returns": "0" * 32}
    revised = _report(book, end, tmp_path, "revised", fold_from=state, fold_vouched=None)
    assert revised["update"].mode == "full"
    assert "asset_returns differ from the previous report's" in revised["update"].reason
    other = _report(book, end, tmp_path, "other", fold_from=earlier["fold_state"], fold_vouched=None, cost_bps=7.0)
    assert other["update"].mode == "full" and "cost_bps" in other["update"].reason
    _assert_same(revised, _report(book, end, tmp_path, "full"))
