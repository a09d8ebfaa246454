"""The IO manager stages an update's partition as rows appended to its previous run's bundle."""

from __future__ import annotations

import os

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.dagster_defs.io_manager import ParquetIOManager
from quant_meta_assets.storage import StoredBundle, commit_bundle, encode_chunked

pytestmark = [pytest.mark.timeout(60)]

KEY = dg.AssetKey("sleeves")
RUN_A, RUN_B = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"


def test_stage_partition_appends_to_the_previous_runs_bundle(tmp_path):
    io = ParquetIOManager(base_dir=str(tmp_path / "storage"))
    days = pd.bdate_range("2020-06-01", "2021-03-31", name="date")
    returns = pd.Series(np.linspace(0.0, 0.01, len(days)), index=days, name="ew")
    old, new = returns.loc[:"2021-03-15"], returns.loc["2021-03-16":]
    commit_bundle(io.stage_partition(RUN_A, KEY, "ew", {"status": "success", "returns": old, "n_days": len(old)}))
    staged = io.stage_partition(RUN_B, KEY, "ew", {"status": "success", "returns": None, "n_days": len(returns)},
                                {"returns": encode_chunked(new)}, extends=io._dir(RUN_A, KEY, "ew"))
    commit_bundle(staged)
    bundle = StoredBundle(io._dir(RUN_B, KEY, "ew"))
    pd.testing.assert_series_equal(bundle["returns"], returns, check_freq=False)
    assert bundle["n_days"] == len(returns)
    before, after = (io._dir(run, KEY, "ew") / "returns.2020.parquet" for run in (RUN_A, RUN_B))
    assert os.stat(before).st_ino == os.stat(after).st_ino
