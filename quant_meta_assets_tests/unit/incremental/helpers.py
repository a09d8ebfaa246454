"""The oracle of the incremental tests: an update must equal a full recompute, element-wise."""

from __future__ import annotations

import numpy as np
import pandas as pd

from quant_meta_assets.incremental.prefix import prices_digest
from quant_meta_assets.incremental.resume import extend_record, plan_sleeve, run_sleeve_update
from quant_meta_assets.sleeves.engine import run_sleeve

TOLERANCE = 1e-10
FRAMES = ("returns", "weights", "costs", "turnover")


def updated(profile, previous: dict, prices: pd.DataFrame, rf: float, model) -> dict:
    """``previous`` (a full or updated record) brought to ``prices`` by an update, as the driver does."""
    plan = plan_sleeve(profile, prices, previous)
    assert plan.update, plan.describe
    window = prices.iloc[plan.window_start:]
    part = run_sleeve_update(profile, window, previous["resume_state"], rf, model)
    assert part["returns"].index[0] > pd.Timestamp(previous["resume_state"]["as_of"])  # only the new days
    tickers = previous["resume_state"]["tickers"]
    return extend_record(previous, part, prices_digest(prices[tickers]))


def max_difference(record: dict, full: dict) -> float:
    """Largest absolute difference over the four frames (same index, columns and NaN pattern asserted)."""
    worst = 0.0
    for key in FRAMES:
        a, b = record[key], full[key]
        assert a.index.equals(b.index), (key, a.index.symmetric_difference(b.index)[:5])
        if isinstance(a, pd.DataFrame):
            assert list(a.columns) == list(b.columns), key
        x, y = a.to_numpy(dtype="float64"), b.to_numpy(dtype="float64")
        assert (np.isnan(x) == np.isnan(y)).all(), key
        if x.size:
            worst = max(worst, float(np.nanmax(np.abs(x - y))) if np.isfinite(x).any() else 0.0)
    strip = [[(d["ticker"], d["last_price_date"]) for d in r["delistings"]] for r in (record, full)]
    assert strip[0] == strip[1], strip
    for mine, theirs in zip(record["delistings"], full["delistings"], strict=True):
        worst = max(worst, abs(mine["weight"] - theirs["weight"]))
    assert (record["start"], record["end"]) == (full["start"], full["end"])
    return worst


def check_update(profile, prices: pd.DataFrame, cut: int, adds, rf: float = 0.0, model=None) -> float:
    """Full run on ``prices[:cut]``, then updates adding each of ``adds`` days in turn (chained), each
    compared with a full run on the same prices. Returns the largest difference seen."""
    from quant_meta_assets.costs.cost_model import CostModel

    model = CostModel() if model is None else model
    record = run_sleeve(profile, prices.iloc[:cut], rf, model)
    rows, worst = cut, 0.0
    for add in adds:
        rows += add
        record = updated(profile, record, prices.iloc[:rows], rf, model)
        full = run_sleeve(profile, prices.iloc[:rows], rf, model)
        worst = max(worst, max_difference(record, full))
        # the state an update leaves is the one a full run leaves (another update continues from it)
        assert record["resume_state"]["as_of"] == full["resume_state"]["as_of"]
        assert record["resume_state"]["last_row"]["date"] == full["resume_state"]["last_row"]["date"]
        assert record["resume_state"]["prices"] == full["resume_state"]["prices"]
        np.testing.assert_allclose(record["resume_state"]["carry"]["close_weights"],
                                   full["resume_state"]["carry"]["close_weights"], atol=TOLERANCE, rtol=0)
    assert worst <= TOLERANCE
    return worst
