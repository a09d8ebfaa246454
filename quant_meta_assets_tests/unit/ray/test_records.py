"""ray.compute.check_success_record: a success record from a worker is checked before it is trusted."""

import numpy as np
import pandas as pd

from quant_meta_assets.ray.compute import check_success_record


def _record(returns: list[float]) -> dict:
    idx = pd.bdate_range("2021-01-04", periods=len(returns))
    return {
        "returns": pd.Series(returns, index=idx),
        "weights": pd.DataFrame({"A": 1.0}, index=idx),
        "costs": pd.Series(0.0, index=idx),
        "turnover": pd.Series([1.0], index=idx[:1]),
    }


def test_a_good_record_passes_and_nan_before_live_is_allowed():
    assert check_success_record(_record([np.nan, 0.01, -0.02])) is None


def test_a_non_finite_live_return_is_named_with_its_date():
    problem = check_success_record(_record([np.nan, 0.01, np.inf, np.nan]))
    assert problem == ("'returns' is not finite on 2021-01-06 although the sleeve is live from 2021-01-05; "
                       "2 such value(s)")


def test_wrong_types_and_no_live_value_are_named():
    assert check_success_record({**_record([0.0]), "returns": [0.0]}) == "'returns' must be a pandas Series, got list"
    assert check_success_record(_record([np.nan, np.nan])) == "'returns' has no live (non-NaN) value"
    bad = _record([0.01, 0.02])
    bad["costs"] = bad["costs"] * np.nan
    assert check_success_record(bad) == "'costs' has 2 non-finite value(s)"
