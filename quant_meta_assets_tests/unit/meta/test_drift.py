"""meta.drift: the drifted-holdings helper, hand-computed, and its NaN policy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.errors import StageInputError
from quant_meta_assets.meta.drift import drift_weights, turnover


def test_drift_weights_hand_computed():
    # 50/50, then +10% / -10%, then 0% / +10%: wealth 0.55, 0.495 -> 0.5 x 1.1, 0.5 x 0.9 x 1.1
    w = np.array([0.5, 0.5])
    out = drift_weights(w, np.array([[0.1, -0.1], [0.0, 0.1]]))
    np.testing.assert_allclose(out, [0.55 / (0.55 + 0.495), 0.495 / (0.55 + 0.495)], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(drift_weights(w, np.zeros((0, 2))), w)
    assert turnover([1.0, 0.0], out) == pytest.approx(2 * (1 - out[0]), abs=1e-15)


def test_drift_weights_pandas_names_the_sleeve_and_date():
    idx = pd.bdate_range("2024-01-01", periods=3)
    r = pd.DataFrame({"a": [0.01, 0.02, 0.0], "b": [0.0, np.nan, 0.01], "c": [np.nan] * 3}, index=idx)
    # c is not held: its NaN returns are irrelevant and contribute exactly nothing
    held = drift_weights(pd.Series({"a": 0.5, "b": 0.5, "c": 0.0}), r.iloc[[0, 2]])
    assert held["c"] == 0.0 and np.isfinite(held).all()
    with pytest.raises(StageInputError, match=r"sleeve 'b' is held .* on 2024-01-02 is NaN"):
        drift_weights(pd.Series({"a": 0.5, "b": 0.5, "c": 0.0}), r)
