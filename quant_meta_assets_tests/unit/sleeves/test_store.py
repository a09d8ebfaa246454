"""SleeveStore: outcomes streamed to disk, committed together, read back lazily (returns only
when only returns are asked for)."""

from __future__ import annotations

import pandas as pd
import pytest

from quant_meta_assets.ray.compute import SleeveOutcome
from quant_meta_assets.errors import StorageError
from quant_meta_assets.meta.returns import aggregate_returns
from quant_meta_assets.sleeves.registry import SleeveProfile
from quant_meta_assets.sleeves.engine import error_record, run_sleeve
from quant_meta_assets.sleeves.store import SleeveStore
from quant_meta_assets_tests.strategies_for_tests import make_prices, spec


@pytest.fixture(scope="module")
def records():
    prices = make_prices()
    return [run_sleeve(SleeveProfile(name=n, strategy=spec("good"), rebalance="monthly"), prices) for n in ("a", "b")]


def test_stream_is_stored_and_meta_returns_reads_only_returns(tmp_path, records):
    store = SleeveStore(tmp_path / "sleeves")
    stored = store.save_stream((SleeveOutcome.from_record(r) for r in reversed(records)), ["a", "b"])
    assert [r["sleeve"] for r in stored] == ["a", "b"]
    for name in ("a", "b"):  # weights that cannot be read: meta.returns must not need them
        for chunk in store.path(name).glob("weights.*parquet"):
            chunk.unlink()  # a stored file is never written over (chunks may be shared by links)
            chunk.write_bytes(b"corrupt")
    expected = aggregate_returns(records)
    pd.testing.assert_frame_equal(aggregate_returns(stored), expected, check_freq=False)
    with pytest.raises(StorageError, match=r"weights\.\d{4}\.parquet"):
        stored[0]["weights"]


def test_a_failing_stream_commits_nothing(tmp_path, records):
    store = SleeveStore(tmp_path / "sleeves")
    store.save_stream([SleeveOutcome.from_record(records[0])], ["a"])

    def stream():
        yield SleeveOutcome.from_record(error_record("a", ValueError("new"), 0.1))
        raise RuntimeError("driver lost Ray")

    with pytest.raises(RuntimeError, match="driver lost Ray"):
        store.save_stream(stream(), ["a"])
    assert store.load("a")["status"] == "success"  # the previous bundle is still current
    assert sorted(p.name for p in (tmp_path / "sleeves").iterdir()) == ["a"]  # nothing staged left
