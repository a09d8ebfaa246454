"""An update of the meta stages equals a full recompute on the same inputs (meta.incremental).

The oracle is the full recompute: every sleeve is run on the extended prices, then meta.returns,
meta.optimize and meta.flatten in full; the update extends the outputs of a run on the cut prices
(stored and read back as bundles, as the Dagster assets do) with the sleeves of the extended run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.bundle_values import join_value, split_value
from quant_meta_assets.meta.incremental import (
    extend_flatten,
    extend_optimize,
    extend_returns,
    frame_digest,
    optimize_fingerprint,
    returns_update,
)
from quant_meta_assets.meta.returns import aggregate_returns
from quant_meta_assets.sleeves.engine import run_sleeve
from quant_meta_assets.sleeves.registry import load_registry
from quant_meta_assets.stages import SleeveFrames
from quant_meta_assets.storage import read_bundle, write_bundle
from quant_meta_assets.synthetic_book import book_registry, factor_prices

pytestmark = pytest.mark.timeout(240)

TOL = 1e-10
LOOKBACK, EVERY = 120, 21
# diagnostics that record wall-clock time, not a result
TIMING_COLUMNS = ["solve_time_s", "attempts"]


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    prices = factor_prices(16, 700, seed=3)
    path = tmp_path_factory.mktemp("registry") / "sleeves.yaml"
    path.write_text(book_registry(6, list(prices.columns), seed=2))
    profiles = load_registry(path)

    def records(px: pd.DataFrame) -> list[dict]:
        return [{**run_sleeve(p, px), "sleeve": p.name, "status": "success"} for p in profiles]

    return prices, records, records(prices)


def _stored(value: dict, directory) -> dict:
    """``value`` written as a bundle and read back (what the next run's update reads)."""
    write_bundle(directory, *split_value(value))
    return join_value(*read_bundle(directory))


def _max_diff(a: pd.DataFrame, b: pd.DataFrame) -> float:
    assert a.index.equals(b.index) and list(a.columns) == list(b.columns)
    x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
    assert np.array_equal(np.isnan(x), np.isnan(y))
    return float(np.nanmax(np.abs(x - y), initial=0.0))


def _assert_diagnostics_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = a.drop(columns=TIMING_COLUMNS), b.drop(columns=TIMING_COLUMNS)
    assert a.index.equals(b.index) and list(a.columns) == list(b.columns)
    for col in a.columns:
        x, y = a[col], b[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            assert _max_diff(x.to_frame(), y.to_frame()) <= TOL, col
        else:
            assert [None if pd.isna(v) else v for v in x] == [None if pd.isna(v) else v for v in y], col


@pytest.mark.parametrize("method", ["risk_parity", "min_variance"])
@pytest.mark.parametrize("appended", [1, 5, 14, 15, 63])  # 14: a rebalance on the previous last row; 15: on the first new row
def test_update_equals_full_recompute(book, tmp_path, method, appended):
    prices, records, full_records = book
    params = {"method": method, "lookback": LOOKBACK, "rebalance_every": EVERY, "risk_free_rate": 0.0}
    fingerprint = optimize_fingerprint(params, "code")
    # the previous run: cut prices, everything in full
    cut = records(prices.iloc[:-appended])
    r_cut = aggregate_returns(cut)
    o_cut, o_key, update = extend_optimize(None, r_cut, fingerprint, **params)
    assert update.mode == "full"
    f_cut, f_key, _ = extend_flatten(None, o_cut.weights, SleeveFrames(cut, "weights"), r_cut,
                                     dict(SleeveFrames(cut, "costs")), 0.0)
    prev_o = _stored({"weights": o_cut.weights, "diagnostics": o_cut.diagnostics, "state": o_cut.state,
                      "append_key": o_key}, tmp_path / "optimize")
    prev_f = _stored({"asset_weights": f_cut.asset_weights, "meta_weights_daily": f_cut.meta_weights_daily,
                      "exposure": f_cut.exposure, "append_key": f_key}, tmp_path / "flatten")
    prev_r = _stored({"returns": r_cut}, tmp_path / "returns")["returns"]
    # the update, on the sleeves of the extended prices
    r_new = aggregate_returns(full_records)
    r_ext, r_update = extend_returns(prev_r, r_new)  # what the update's meta/returns stores
    assert r_update.mode == "extend" and r_update.new_rows == appended, r_update
    o_new, _, o_update = extend_optimize(prev_o, r_ext, fingerprint, **params)
    assert o_update.mode == "extend", o_update
    f_new, _, f_update = extend_flatten(prev_f, o_new.weights, SleeveFrames(full_records, "weights"), r_ext,
                                        dict(SleeveFrames(full_records, "costs")), 0.0)
    assert f_update.mode == "extend" and f_update.new_rows == appended, f_update
    # the oracle: a full recompute on the same inputs
    o_full, _, _ = extend_optimize(None, r_new, fingerprint, **params)
    f_full, _, _ = extend_flatten(None, o_full.weights, SleeveFrames(full_records, "weights"), r_new,
                                  dict(SleeveFrames(full_records, "costs")), 0.0)
    new_rebalances = len(o_full.weights) - len(o_cut.weights)
    assert new_rebalances == sum(1 for r in range(len(r_cut), len(r_new)) if r >= LOOKBACK - 1 and (r - LOOKBACK + 1) % EVERY == 0)
    if appended == 63:
        assert new_rebalances == 3
    if appended == 15:
        assert new_rebalances == 1
    diffs = {
        "meta_returns": _max_diff(r_ext, r_new),
        "weights": _max_diff(o_new.weights, o_full.weights),
        "asset_weights": _max_diff(f_new.asset_weights, f_full.asset_weights),
        "meta_weights_daily": _max_diff(f_new.meta_weights_daily, f_full.meta_weights_daily),
        "exposure": _max_diff(f_new.exposure, f_full.exposure),
    }
    assert max(diffs.values()) <= TOL, diffs
    print(f"largest difference update vs full ({method}, +{appended} days): {max(diffs.values()):.3g} {diffs}")
    _assert_diagnostics_equal(o_new.diagnostics, o_full.diagnostics)
    assert o_new.state == o_full.state  # the next update resumes from the same walk state


def test_a_revised_return_recomputes_in_full_and_says_where(book):
    prices, records, full_records = book
    r_old = aggregate_returns(records(prices.iloc[:-5]))
    r_new = aggregate_returns(full_records).copy()
    day, sleeve = r_new.index[-100], r_new.columns[2]
    r_new.loc[day, sleeve] += 1e-4
    update = returns_update(r_old, r_new)
    assert update.mode == "full"
    assert f"revised on {day.date()} for sleeve {sleeve!r}" in update.describe()
    params = {"method": "risk_parity", "lookback": LOOKBACK, "rebalance_every": EVERY, "risk_free_rate": 0.0}
    fp = optimize_fingerprint(params, "code")
    o_old, key, _ = extend_optimize(None, r_old, fp, **params)
    previous = {"weights": o_old.weights, "diagnostics": o_old.diagnostics, "state": o_old.state, "append_key": key}
    _, _, update = extend_optimize(previous, r_new, fp, **params)
    assert update.mode == "full" and "meta/returns differs" in update.reason
    # another configuration never resumes the walk
    other = {**params, "rebalance_every": 10}
    _, _, update = extend_optimize(previous, aggregate_returns(full_records), optimize_fingerprint(other, "code"), **other)
    assert update.mode == "full" and "configuration or code changed" in update.reason


def test_a_revised_sleeve_weight_recomputes_flatten_in_full(book):
    prices, records, full_records = book
    cut = records(prices.iloc[:-5])
    params = {"method": "risk_parity", "lookback": LOOKBACK, "rebalance_every": EVERY, "risk_free_rate": 0.0}
    fp = optimize_fingerprint(params, "code")
    r_cut, r_new = aggregate_returns(cut), aggregate_returns(full_records)
    o_cut, _, _ = extend_optimize(None, r_cut, fp, **params)
    f_cut, key, _ = extend_flatten(None, o_cut.weights, SleeveFrames(cut, "weights"), r_cut,
                                   dict(SleeveFrames(cut, "costs")), 0.0)
    previous = {"asset_weights": f_cut.asset_weights, "meta_weights_daily": f_cut.meta_weights_daily,
                "exposure": f_cut.exposure, "append_key": key}
    o_new, _, _ = extend_optimize(None, r_new, fp, **params)
    revised = [dict(r) for r in full_records]
    name = revised[1]["sleeve"]
    w = revised[1]["weights"].copy()
    w.iloc[-200, 0] += 1e-3
    revised[1]["weights"] = w
    result, _, update = extend_flatten(previous, o_new.weights, SleeveFrames(revised, "weights"), r_new,
                                       dict(SleeveFrames(revised, "costs")), 0.0)
    assert update.mode == "full" and f"sleeve {name!r}" in update.reason, update
    assert len(result.asset_weights) == len(f_cut.asset_weights) + 5


def test_frame_digest_sees_every_cell_and_date():
    frame = pd.DataFrame({"a": [0.1, np.nan, 0.3], "b": [1.0, 2.0, 3.0]},
                         index=pd.date_range("2020-01-01", periods=3, name="date"))
    base = frame_digest(frame)
    assert frame_digest(frame.copy()) == base
    changed = frame.copy()
    changed.iloc[2, 1] = np.nextafter(3.0, 4.0)
    assert frame_digest(changed) != base
    assert frame_digest(frame.rename(columns={"b": "c"})) != base
    assert frame_digest(frame.set_axis(frame.index + pd.Timedelta(days=1))) != base
    assert frame_digest(frame, until=frame.index[1]) == frame_digest(frame.iloc[:2])


def test_a_rounding_revision_keeps_the_previous_value_and_says_so():
    index = pd.date_range("2021-01-04", periods=4, freq="B", name="date")
    previous = pd.DataFrame({"a": [0.01, 0.02, 0.03], "b": [np.nan, 0.01, -0.02]}, index=index[:3])
    current = pd.DataFrame({"a": [0.01, 0.02 + 2e-18, 0.03, 0.04], "b": [np.nan, 0.01, -0.02, 0.0]}, index=index)
    frame, update = extend_returns(previous, current)
    assert update.mode == "extend" and update.new_rows == 1
    assert "1 cell(s) of the previous 3 rows differ by rounding" in update.reason
    assert frame.iloc[1, 0] == 0.02 and frame.iloc[3, 0] == 0.04  # the previous value, then the new row
    revised = current.copy()
    revised.iloc[1, 0] = 0.021
    frame, update = extend_returns(previous, revised)
    assert update.mode == "full" and frame is revised
    assert "revised on 2021-01-05 for sleeve 'a'" in update.reason
    late = current.copy()
    late.iloc[0, 1] = 0.0  # a sleeve's history now starts earlier: not an append
    assert extend_returns(previous, late)[1].mode == "full"


class _TrailingOnly(SleeveFrames):
    """Sleeve frames that may be read from a date on only (what a stored, chunked bundle offers)."""

    def __getitem__(self, sleeve):
        raise AssertionError(f"{sleeve}: read whole")


def test_sleeves_whose_bundles_extend_the_ones_read_are_read_from_the_previous_last_day_only(book):
    prices, records, full_records = book
    cut = records(prices.iloc[:-5])
    params = {"method": "risk_parity", "lookback": LOOKBACK, "rebalance_every": EVERY, "risk_free_rate": 0.0}
    fp = optimize_fingerprint(params, "code")
    r_cut, r_new = aggregate_returns(cut), aggregate_returns(full_records)
    names = list(r_cut.columns)
    o_cut, _, _ = extend_optimize(None, r_cut, fp, **params)
    f_cut, key, _ = extend_flatten(None, o_cut.weights, SleeveFrames(cut, "weights"), r_cut,
                                   dict(SleeveFrames(cut, "costs")), 0.0, bundles={s: ("run-1", None) for s in names})
    assert key["sleeve_runs"] == {s: "run-1" for s in names}
    previous = {"asset_weights": f_cut.asset_weights, "meta_weights_daily": f_cut.meta_weights_daily,
                "exposure": f_cut.exposure, "append_key": key}
    o_new, _, _ = extend_optimize(None, r_new, fp, **params)
    costs = dict(SleeveFrames(full_records, "costs"))
    result, key2, update = extend_flatten(previous, o_new.weights, _TrailingOnly(full_records, "weights"), r_new,
                                          costs, 0.0, bundles={s: ("run-2", "run-1") for s in names})
    assert update.mode == "extend" and f"{len(names)} sleeve(s) extend the bundles it read" in update.reason, update
    full, _, _ = extend_flatten(None, o_new.weights, SleeveFrames(full_records, "weights"), r_new, costs, 0.0)
    assert _max_diff(result.asset_weights, full.asset_weights) == 0.0
    assert key2["sleeves"] == {} and key2["sleeve_runs"] == {s: "run-2" for s in names}
    # a sleeve recomputed in full (its bundle extends nothing) needs a digest the carried path did not keep
    again = {**previous, "append_key": key2}
    _, _, update = extend_flatten(again, o_new.weights, SleeveFrames(full_records, "weights"), r_new, costs, 0.0,
                                  bundles={**{s: ("run-3", "run-2") for s in names}, names[0]: ("run-3", None)})
    assert update.mode == "full" and f"sleeve {names[0]!r}: its bundle does not extend" in update.reason, update
