"""meta.returns: sleeves come and go (outer join of live spans) and stop-the-line on failed sleeves."""

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.errors import SleeveFailureError, StageInputError
from quant_meta_assets.meta.returns import aggregate_returns


def record(name, returns, status="success", error=None):
    return {"sleeve": name, "status": status, "error": error, "returns": returns}


def series(start, end, dates):
    s = pd.Series(np.nan, index=dates)
    s.iloc[start:end] = 0.001
    return s


def test_each_sleeve_from_its_own_first_live_day_to_its_last():
    dates = pd.bdate_range("2021-01-01", periods=30)
    out = aggregate_returns([record("a", series(2, 25, dates)), record("b", series(10, 30, dates)),
                             record("c", series(4, 20, dates))])
    assert list(out.columns) == ["a", "b", "c"]
    assert out.index[0] == dates[2] and out.index[-1] == dates[-1]  # the first start, the last end
    for name, (lo, hi) in {"a": (2, 25), "b": (10, 30), "c": (4, 20)}.items():
        live = out[name].notna().to_numpy()
        assert live.sum() == hi - lo and out[name].first_valid_index() == dates[lo]
        assert out[name].last_valid_index() == dates[hi - 1]


def test_failed_sleeve_stops_the_line_and_is_named():
    dates = pd.bdate_range("2021-01-01", periods=5)
    with pytest.raises(SleeveFailureError, match=r"bad_one: ValueError: boom"):
        aggregate_returns([record("good", series(0, 5, dates)),
                           record("bad_one", None, status="error", error="ValueError: boom")])


def test_disjoint_spans_are_kept_and_a_hole_inside_a_live_span_is_named():
    dates = pd.bdate_range("2021-01-01", periods=20)
    out = aggregate_returns([record("a", series(0, 5, dates)), record("b", series(10, 20, dates))])
    assert out.index[0] == dates[0] and out.index[-1] == dates[-1]
    assert out["a"].iloc[5:].isna().all() and out["b"].iloc[:10].isna().all()
    holey = series(3, 20, dates)
    holey.iloc[12] = np.nan
    with pytest.raises(StageInputError, match=r"'a' has a missing return on 2021-01-19 inside its live span "
                                              r"2021-01-06\.\.2021-01-28 \(1 such day"):
        aggregate_returns([record("a", holey), record("b", series(0, 20, dates))])


def test_single_sleeve_is_fine():
    dates = pd.bdate_range("2021-01-01", periods=5)
    assert aggregate_returns([record("only", series(0, 5, dates))]).shape == (5, 1)
