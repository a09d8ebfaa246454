"""The driver's half of an update against a stored previous bundle: only the new rows are
encoded, staging links the earlier years and reads only the last chunk, and the stored result
equals a full recompute."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from quant_meta_assets import storage
from quant_meta_assets.costs.cost_model import load_cost_model
from quant_meta_assets.incremental.prefix import prices_digest
from quant_meta_assets.incremental.resume import plan_sleeve, run_sleeve_update
from quant_meta_assets.ray.compute import SleeveOutcome, finish_update, pack_record
from quant_meta_assets.sleeves.engine import run_sleeve
from quant_meta_assets.sleeves.registry import SleeveProfile
from quant_meta_assets.sleeves.store import SleeveStore
from quant_meta_assets_tests.strategies_for_tests import make_prices

pytestmark = [pytest.mark.timeout(120)]

FRAMES = ("returns", "weights", "costs", "turnover")
PROFILE = SleeveProfile(name="mom", strategy="momentum_12_1", params={"lookback": 60, "skip": 5, "top_n": 2},
                        rebalance="weekly", cost_bps=5)


def _update(bundle, prices, model):
    plan = plan_sleeve(PROFILE, prices, bundle.meta)
    assert plan.update, plan.describe
    part = run_sleeve_update(PROFILE, prices.iloc[plan.window_start:], bundle.meta["resume_state"], None, model)
    return finish_update(SleeveOutcome.from_record(part), bundle, prices_digest(prices))


def test_an_update_appends_to_the_stored_bundle_and_equals_a_full_run(tmp_path, monkeypatch):
    model = load_cost_model()
    prices = make_prices(n_days=700)  # 2020-01-01 .. 2022-09
    first = SleeveStore(tmp_path / "run1")
    [bundle] = first.save_stream([SleeveOutcome(**pack_record("mom", run_sleeve(PROFILE, prices.iloc[:680], None,
                                                                                   model)))], ["mom"])
    opened: list[str] = []
    real = storage._open_stored

    def spy(directory, file_name, opener, read):
        opened.append(file_name)
        return real(directory, file_name, opener, read)

    monkeypatch.setattr(storage, "_open_stored", spy)
    outcome = _update(bundle, prices.iloc[:695], model)
    assert outcome.appended_to == bundle.directory and outcome.replace_from.keys() == {"turnover"}
    assert max(len(storage.decode_frame(data)) for _, data in outcome.parquet.values()) <= 16  # new rows only
    [second] = SleeveStore(tmp_path / "run2").save_stream([outcome], ["mom"])
    assert sorted(set(opened)) == [f"{k}.2022.parquet" for k in sorted(FRAMES)]  # the last year, nothing older
    monkeypatch.setattr(storage, "_open_stored", real)
    for name in os.listdir(second.directory):  # the history (rows before 2022): the same files, linked
        if name.endswith(".parquet") and ".2022." not in name:
            assert os.stat(second.directory / name).st_ino == os.stat(bundle.directory / name).st_ino, name

    [third] = SleeveStore(tmp_path / "run3").save_stream([_update(second, prices, model)], ["mom"])  # chained
    shutil.rmtree(tmp_path / "run1")  # the older runs pruned: the latest bundle is whole
    shutil.rmtree(tmp_path / "run2")
    full = pack_record("mom", run_sleeve(PROFILE, prices, None, model))
    mine = SleeveStore(tmp_path / "run3").load("mom")
    for key in FRAMES:
        a, b = mine[key], SleeveOutcome(**full).to_record()[key]
        assert a.index.equals(b.index), key
        np.testing.assert_allclose(a.to_numpy(dtype=float), b.to_numpy(dtype=float), atol=1e-10, rtol=0)
    record = full["record"]
    assert mine["n_days"] == record["n_days"]
    assert mine["total_return"] == pytest.approx(record["total_return"], abs=1e-12)
    assert (mine["start"], mine["end"]) == (record["start"], record["end"])
    assert mine["data_hash"] not in (record["data_hash"], second["data_hash"])  # a chained version of its content


def test_an_in_memory_previous_record_is_still_extended_in_full():
    model = load_cost_model()
    prices = make_prices(n_days=300)
    previous = run_sleeve(PROFILE, prices.iloc[:280], None, model)
    plan = plan_sleeve(PROFILE, prices, previous)
    part = run_sleeve_update(PROFILE, prices.iloc[plan.window_start:], previous["resume_state"], None, model)
    outcome = finish_update(SleeveOutcome.from_record(part), previous, prices_digest(prices))
    assert outcome.appended_to is None
    assert outcome.to_record()["returns"].index.equals(run_sleeve(PROFILE, prices, None, model)["returns"].index)
