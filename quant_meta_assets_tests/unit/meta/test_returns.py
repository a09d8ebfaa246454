"""meta.returns: common-start alignment and stop-the-line on failed sleeves."""

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


def test_common_start_policy():
    dates = pd.bdate_range("2021-01-01", periods=30)
    out = aggregate_returns([record("a", series(2, 30, dates)), record("b", series(10, 30, dates))])
    assert list(out.columns) == ["a", "b"]
    assert out.index[0] == dates[10] and out.index[-1] == dates[-1]
    assert not out.isna().any().any()


def test_failed_sleeve_stops_the_line_and_is_named():
    dates = pd.bdate_range("2021-01-01", periods=5)
    with pytest.raises(SleeveFailureError, match=r"bad_one: ValueError: boom"):
        aggregate_returns([record("good", series(0, 5, dates)),
                           record("bad_one", None, status="error", error="ValueError: boom")])


def test_no_overlap_and_holes_are_errors():
    dates = pd.bdate_range("2021-01-01", periods=20)
    with pytest.raises(StageInputError, match="no overlapping dates"):
        aggregate_returns([record("a", series(0, 5, dates)), record("b", series(10, 20, dates))])
    holey = series(0, 20, dates)
    holey.iloc[12] = np.nan
    with pytest.raises(StageInputError, match="'a' has a missing return"):
        aggregate_returns([record("a", holey), record("b", series(0, 20, dates))])


def test_single_sleeve_is_fine():
    dates = pd.bdate_range("2021-01-01", periods=5)
    assert aggregate_returns([record("only", series(0, 5, dates))]).shape == (5, 1)
