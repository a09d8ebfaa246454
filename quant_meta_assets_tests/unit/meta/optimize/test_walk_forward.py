"""Walk-forward contract: rebalance rows, inclusive windows, result shape and picklability."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from quant_meta_assets.meta.optimize import (
    DIAGNOSTIC_COLUMNS,
    METHODS,
    InsufficientHistoryError,
    optimize_meta_weights,
)
from quant_meta_assets_tests.unit.meta.optimize.conftest import factor_returns


@pytest.mark.parametrize("lookback,every", [(60, 21), (50, 7), (2, 1), (150, 200)])
def test_rebalance_rows_exact(lookback, every):
    R = factor_returns(157, 4, seed=1)
    res = optimize_meta_weights(R, method="inverse_vol", lookback=lookback, rebalance_every=every)
    expected = R.index[list(range(lookback - 1, len(R), every))]
    assert list(res.weights.index) == list(expected)
    assert list(res.diagnostics.index) == list(expected)
    assert list(res.weights.columns) == list(R.columns)
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize("method", ["min_variance", "risk_parity", "hrp", "inverse_vol"])
def test_window_ends_at_d_inclusive(method):
    R = factor_returns(130, 5, seed=2)
    lookback, every = 60, 30
    base = optimize_meta_weights(R, method=method, lookback=lookback, rebalance_every=every).weights
    d_pos = lookback - 1 + every  # the second rebalance
    d = R.index[d_pos]
    # perturbing the row after d leaves the weights at d unchanged
    R1 = R.copy()
    R1.iloc[d_pos + 1] = R1.iloc[d_pos + 1] + np.array([0.05, -0.04, 0.03, 0.07, -0.02])
    w1 = optimize_meta_weights(R1, method=method, lookback=lookback, rebalance_every=every).weights
    # equal up to rounding: the exact fast paths are warm-started from the previous rebalance's
    # optimum, which moves the last bits (not the optimum); a window off by one row moves ~1e-3
    np.testing.assert_allclose(w1.loc[d].to_numpy(), base.loc[d].to_numpy(), rtol=0, atol=1e-13)
    # perturbing the row just before the window leaves them unchanged too
    R0 = R.copy()
    R0.iloc[d_pos - lookback] = R0.iloc[d_pos - lookback] + 0.05
    w0 = optimize_meta_weights(R0, method=method, lookback=lookback, rebalance_every=every).weights
    np.testing.assert_allclose(w0.loc[d].to_numpy(), base.loc[d].to_numpy(), rtol=0, atol=1e-13)
    # perturbing row d changes them
    R2 = R.copy()
    R2.iloc[d_pos] = R2.iloc[d_pos] + np.array([0.05, -0.04, 0.03, 0.07, -0.02])
    w2 = optimize_meta_weights(R2, method=method, lookback=lookback, rebalance_every=every).weights
    assert np.abs(w2.loc[d].to_numpy() - base.loc[d].to_numpy()).max() > 1e-6
    # the first window row is part of the estimate as well
    R3 = R.copy()
    R3.iloc[d_pos - lookback + 1] = R3.iloc[d_pos - lookback + 1] + np.array([0.05, -0.04, 0.03, 0.07, -0.02])
    w3 = optimize_meta_weights(R3, method=method, lookback=lookback, rebalance_every=every).weights
    assert np.abs(w3.loc[d].to_numpy() - base.loc[d].to_numpy()).max() > 1e-6


def test_lookback_longer_than_history_names_numbers():
    R = factor_returns(30, 3)
    with pytest.raises(InsufficientHistoryError, match=r"lookback=31.*only 30 rows"):
        optimize_meta_weights(R, lookback=31)
    assert issubclass(InsufficientHistoryError, ValueError)


@pytest.mark.parametrize("method", METHODS)
def test_diagnostics_complete_and_result_picklable(method):
    R = factor_returns(200, 6, seed=3)
    res = optimize_meta_weights(R, method=method, lookback=60, rebalance_every=20, max_weight=0.4)
    d = res.diagnostics
    assert list(d.columns) == DIAGNOSTIC_COLUMNS
    assert len(d) == len(res.weights) == len(range(59, 200, 20))
    required = [c for c in DIAGNOSTIC_COLUMNS if c not in ("fallback_reason", "warning", "halflife", "notes")]
    assert not d[required].isna().any().any()
    assert (d["method"] == method).all()
    assert (d["solve_time_s"] >= 0).all()
    assert d["psd_repaired"].dtype == bool and d["fallback_used"].dtype == bool
    assert (d["n_active_sleeves"] == 6).all()
    assert np.isfinite(d["objective"]).all()
    back = pickle.loads(pickle.dumps(res))
    np.testing.assert_array_equal(back.weights.to_numpy(), res.weights.to_numpy())
    W = res.weights.to_numpy()
    assert np.all(W >= 0) and np.all(W <= 0.4 + 1e-8)
    np.testing.assert_allclose(W.sum(axis=1), 1.0, atol=1e-9)
