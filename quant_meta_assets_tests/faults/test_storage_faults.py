"""Interrupted writes through the IO manager the assets use, and the storage safety rules.

`unit/test_storage.py` covers storage.py on its own (serialisation errors, leftovers named by a
dead pid, concurrent readers). Here: the pyarrow writer failing *after* writing part of a file,
a writer process killed mid-bundle and mid-swap, all seen through `ParquetIOManager`; and a
property test that no partition key can make the IO manager write outside its root.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quant_meta_assets.dagster_defs.io_manager import ParquetIOManager
from quant_meta_assets.errors import StorageError
from quant_meta_assets.storage import read_bundle
from quant_meta_assets_tests.conftest import REPO_ROOT, run_cli

pytestmark = [pytest.mark.timeout(60)]

INDEX = pd.date_range("2022-01-03", periods=5, freq="B", name="date")
KEY = dg.AssetKey(["tables", "returns"])  # any unpartitioned asset
SLEEVES = dg.AssetKey("sleeves")
RUN = "0f0e0d0c-0000-4000-8000-000000000001"  # every bundle is run-scoped: runs/<run id>/<asset key>


def returns(offset: float) -> pd.DataFrame:
    return pd.DataFrame({"a": np.arange(5.0) + offset, "b": 1.0 + offset}, index=INDEX)


def record(offset: float) -> dict:
    return {"sleeve": "s", "status": "success", "error": None,
            "returns": returns(offset)["a"].rename("s"), "weights": returns(offset)}


@pytest.fixture
def io(tmp_path) -> ParquetIOManager:
    return ParquetIOManager(base_dir=str(tmp_path / "store"))


def store(io: ParquetIOManager, value, key=KEY, partitions=None):
    context = dg.build_output_context(asset_key=key, partition_key=partitions[0] if partitions else None, run_id=RUN)
    if partitions and len(partitions) > 1:
        context = _multi_partition_output_context(key, partitions)
    io.handle_output(context, value)


def _multi_partition_output_context(key, partitions):
    class Ctx:  # handle_output only reads these attributes
        asset_key = key
        run_id = RUN
        has_asset_partitions = True
        asset_partition_keys = partitions

    return Ctx()


def load(io: ParquetIOManager, key=KEY, partition=None):
    if partition is not None:  # what a partition's latest materialization (run RUN) would load
        from quant_meta_assets.bundle_values import join_value

        return join_value(*read_bundle(io._dir(RUN, key, partition)))
    upstream = dg.build_output_context(asset_key=key, run_id=RUN)
    return io.load_input(dg.build_input_context(asset_key=key, upstream_output=upstream))


def visible(directory: Path) -> list[str]:
    """What a directory listing shows, hidden temp/trash entries included."""
    return sorted(p.name for p in directory.iterdir())


def partial_then_fail(table, where, *args, **kwargs):
    """A pyarrow writer that dies after writing the first bytes of a valid Parquet file."""
    where.write(b"PAR1" + b"\x00" * 64)
    raise OSError("disk full (simulated) after a partial write")


def test_writer_failing_midway_keeps_previous_asset_version(io, monkeypatch):
    import pyarrow.parquet as pq

    store(io, returns(0.0))
    monkeypatch.setattr(pq, "write_table", partial_then_fail)
    with pytest.raises(OSError, match="disk full"):
        store(io, returns(100.0))
    monkeypatch.undo()
    pd.testing.assert_frame_equal(load(io), returns(0.0), check_freq=False)
    parent = io._dir(RUN, KEY).parent
    assert visible(parent) == ["returns"]  # no .returns.tmp-* staging dir left behind
    assert visible(io._dir(RUN, KEY)) == ["__value__.2022.parquet", "meta.json"]


def test_partitioned_write_failing_on_the_second_partition(io, monkeypatch):
    """Each partition is its own atomic bundle: one that failed keeps its previous version whole."""
    import pyarrow.parquet as pq

    store(io, {"p1": record(0.0), "p2": record(0.0)}, SLEEVES, ["p1", "p2"])
    real = pq.write_table
    calls = {"n": 0}

    def fail_on_third(table, where, *args, **kwargs):  # p1 has 2 frames; the 3rd write is p2's first
        calls["n"] += 1
        if calls["n"] == 3:
            return partial_then_fail(table, where)
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", fail_on_third)
    with pytest.raises(OSError, match="disk full"):
        store(io, {"p1": record(1.0), "p2": record(1.0)}, SLEEVES, ["p1", "p2"])
    monkeypatch.undo()
    assert load(io, SLEEVES, "p1")["weights"]["a"].iloc[0] == 1.0  # written completely
    p2 = load(io, SLEEVES, "p2")
    assert p2["weights"]["a"].iloc[0] == 0.0 and p2["returns"].iloc[0] == 0.0  # old version, whole
    assert visible(io._dir(RUN, SLEEVES, "p1").parent) == ["p1", "p2"]


KILL_SNIPPET = """
import os, sys
import numpy as np, pandas as pd
import pyarrow.parquet as pq
from quant_meta_assets import storage

INDEX = pd.date_range("2022-01-03", periods=5, freq="B", name="date")
target, mode = sys.argv[1], sys.argv[2]
frames = {{"__value__": pd.DataFrame({{"a": np.arange(5.0) + 100, "b": 101.0}}, index=INDEX)}}
if mode == "mid_file":
    real = pq.write_table
    def die(table, where, *a, **k):
        where.write(b"PAR1" + b"\\0" * 64)
        where.flush()
        os._exit(9)  # killed: no except/finally runs
    pq.write_table = die
elif mode == "mid_swap":
    real_rename = os.rename
    def rename(src, dst):
        real_rename(src, dst)
        if ".trash-" in str(dst):
            os._exit(9)  # killed between 'old -> trash' and 'new -> current'
    storage.os.rename = rename
storage.write_bundle(target, frames, {{}})
"""


def _killed_writer(target: Path, mode: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(KILL_SNIPPET.format()), str(target), mode],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
        timeout=60,
    )
    assert proc.returncode == 9, proc.stderr[-2000:]


def test_writer_killed_mid_file_leaves_old_version_loadable_and_leftover_never_loaded(io):
    store(io, returns(0.0))
    target = io._dir(RUN, KEY)
    _killed_writer(target, "mid_file")
    leftovers = [n for n in visible(target.parent) if n.startswith(".returns.tmp-")]
    assert leftovers, "the killed writer left its staging directory"
    pd.testing.assert_frame_equal(load(io), returns(0.0), check_freq=False)  # never the leftover
    store(io, returns(2.0))  # the next writer removes the dead writer's leftover
    assert visible(target.parent) == ["returns"]
    pd.testing.assert_frame_equal(load(io), returns(2.0), check_freq=False)


def test_writer_killed_between_the_two_renames_is_missing_not_stale(io):
    """After a crash mid-swap the current bundle is absent: readers get StorageError (so Dagster
    fails the step), never the trash; the next successful write restores a current bundle."""
    store(io, returns(0.0))
    target = io._dir(RUN, KEY)
    _killed_writer(target, "mid_swap")
    names = visible(target.parent)
    assert "returns" not in names
    assert any(n.startswith(".returns.trash-") for n in names)
    assert any(n.startswith(".returns.tmp-") for n in names)  # complete, but never committed
    with pytest.raises(StorageError, match="missing"):
        load(io)
    store(io, returns(3.0))
    assert visible(target.parent) == ["returns"]
    pd.testing.assert_frame_equal(load(io), returns(3.0), check_freq=False)


def test_report_with_a_mixed_type_column_is_stored_and_loaded_back(io):
    """meta.report's 'what changed' period table holds str dates and an int n_days in one column;
    Arrow has no type for that, and every second report run used to fail to store (soak test)."""
    period = pd.DataFrame(
        {"previous": ["2020-01-02", "2022-12-28", 751], "current": ["2020-01-02", "2022-12-28", np.int64(751)]},
        index=pd.Index(["start", "end", "n_days"], name="field"),
    )
    report = {"html": "report.html", "what_changed": {"period": period, "note": "x"}}
    key = dg.AssetKey(["tables", "report"])
    store(io, report, key)
    back = load(io, key)
    loaded = back["what_changed"]["period"]
    assert loaded.loc["n_days", "previous"] == 751 and isinstance(loaded.loc["n_days", "current"], int)
    pd.testing.assert_frame_equal(loaded, period.astype(object).assign(current=["2020-01-02", "2022-12-28", 751]))
    assert back["what_changed"]["note"] == "x" and back["html"] == "report.html"


def test_partitioned_load_leaves_out_never_stored_partitions_but_not_half_swapped_ones(io, monkeypatch):
    """meta assets request every partition the instance knows (stale ones included): one that was
    never stored is left out (registered_records then names any *registered* sleeve missing);
    one whose swap was interrupted (only tmp/trash siblings left) is an error, never skipped."""
    from quant_meta_assets.dagster_defs import instance_queries
    from quant_meta_assets.sleeves.status import StoredSleeve

    store(io, {"p1": record(0.0)}, SLEEVES, ["p1"])
    # the instance's answer: p1's and p2's latest materializations are run RUN's, "stale" has none
    monkeypatch.setattr(instance_queries, "latest_stored_sleeves",
                        lambda _instance, keys: {k: StoredSleeve("success", run_id=RUN) for k in keys if k != "stale"})

    class Ctx:
        asset_key = SLEEVES
        instance = None
        has_asset_partitions = True
        asset_partition_keys = ["p1", "p2", "stale"]

    assert list(io.load_input(Ctx())) == ["p1"]  # p2 recorded but never stored here, "stale" never recorded
    half = io._dir(RUN, SLEEVES, "p1").parent / ".p2.trash-999999999-abc"
    half.mkdir()
    with pytest.raises(StorageError, match="p2.*missing"):
        io.load_input(Ctx())


# ----------------------------------------------------------------- containment (property)

ASSET_PARTS = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=3)
PARTITION = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["..", ".", "../x", "/etc", "a/../../b", "\x00", "~", ".hidden", "a\\..\\b", "C:"]),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(asset_parts=ASSET_PARTS, partition=PARTITION)
def test_no_partition_key_writes_outside_the_storage_root(tmp_path, asset_parts, partition):
    root = (tmp_path / "root").resolve()
    io = ParquetIOManager(base_dir=str(root))
    try:
        path = io._dir(RUN, dg.AssetKey(asset_parts), partition)
    except StorageError:
        return
    assert path.is_relative_to(root) and path != root
    assert path.relative_to(root).parts == ("runs", RUN, *asset_parts, partition)


def test_io_manager_refuses_an_unsafe_partition_before_writing(io, tmp_path):
    with pytest.raises(StorageError, match="unsafe path part"):
        store(io, {"../escape": record(0.0)}, SLEEVES, ["../escape"])
    assert not (tmp_path / "escape").exists()
    assert not Path(io.base_dir).exists() or not any(Path(io.base_dir).rglob("*.parquet"))


# ----------------------------------------------------------------- UI binding

@pytest.mark.slow  # the CLI in a subprocess: out of make test-fast (<= 3 min)
def test_make_dev_binds_localhost_and_workspace_loads_the_package(tmp_path):
    makefile = (REPO_ROOT / "Makefile").read_text()
    dev = makefile.split("\ndev:", 1)[1].split("\n\n", 1)[0]
    assert "dagster dev -w workspace.yaml -h 127.0.0.1" in dev
    assert "0.0.0.0" not in makefile
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    modules = [entry["python_module"]["module_name"] for entry in workspace["load_from"]]
    assert modules == ["quant_meta_assets"]
    # a fresh process, as `dagster dev` loads it (in this process `quant_meta_assets.dagster_defs` may
    # already be the subpackage: see the report)
    env = {"PYTHONPATH": str(REPO_ROOT)}
    proc = run_cli(["dagster", "definitions", "validate", "-w", "workspace.yaml"], env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Validation successful for code location quant_meta_assets" in proc.stdout + proc.stderr
