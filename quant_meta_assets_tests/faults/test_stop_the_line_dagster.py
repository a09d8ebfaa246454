"""Stop the line through real Dagster (`materialize`, `meta_job`) on a real local Ray.

A sleeve that crashes its worker or hangs past its budget must fail the blocking check naming
the sleeve and the cause; no `meta/*` materialization may be recorded and the stored `meta/*`
files must stay byte-for-byte what the last good run wrote. A partition that once succeeded and
then failed must never be served as good data (no stale frames survive the failure).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from quant_meta_assets.dagster_defs.definitions import defs
from quant_meta_assets.dagster_defs.instance_queries import latest_stored_sleeves
from quant_meta_assets.dagster_defs.io_manager import ParquetIOManager, join_value
from quant_meta_assets.storage import read_bundle, read_json
from quant_meta_assets_tests.dagster_defs.test_graph import GOOD
from quant_meta_assets_tests.dagster_support import tree_digest
from quant_meta_assets_tests.faults.conftest import (
    check_evaluation,
    gate_message,
    materialize_all,
    meta_digest,
    meta_materialization_count,
    meta_materialization_ids,
    use_registry,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CRASH_AND_HANG = GOOD + """
  - name: crashed_sleeve
    strategy: quant_meta_assets_tests.strategies_for_tests:crashes
    max_retries: 0
  - name: hung_sleeve
    strategy: quant_meta_assets_tests.strategies_for_tests:hangs
    timeout_s: 3
"""
FLAKY_GOOD = GOOD + """
  - name: flaky
    strategy: equal_weight
"""
FLAKY_BAD = GOOD + """
  - name: flaky
    strategy: quant_meta_assets_tests.strategies_for_tests:raises
"""
STORED_SUFFIXES = {".parquet", ".json", ".html"}


def _storage() -> Path:
    from quant_meta_assets import settings

    return settings.storage_root()


def _good_run(tmp_path, monkeypatch, instance, body=GOOD):
    names = use_registry(tmp_path / "good.yaml", body, monkeypatch, instance)
    result = materialize_all(instance, names)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    ids = meta_materialization_ids(instance)
    assert all(v is not None for v in ids.values()), ids
    return ids


def test_worker_crash_and_hang_stop_the_line_and_keep_last_good_meta(tmp_path, monkeypatch, local_ray, small_prices):
    instance = dg.DagsterInstance.get()
    ids = _good_run(tmp_path, monkeypatch, instance)
    storage = _storage()
    before = meta_digest(storage)
    assert all(before.values()), "the good run stored every meta asset"
    n_meta = meta_materialization_count(instance)

    # safety: nothing stored is a pickle (or anything but Parquet / JSON / HTML)
    stored = [p for p in storage.rglob("*") if p.is_file()]
    assert stored and {p.suffix for p in stored} <= STORED_SUFFIXES, {p.suffix for p in stored}
    for path in stored:
        assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"

    names = use_registry(tmp_path / "bad.yaml", CRASH_AND_HANG, monkeypatch, instance)
    result = materialize_all(instance, names)
    assert not result.success
    evaluation = check_evaluation(result)
    assert not evaluation.passed
    text = evaluation.description
    assert "2 of 5 sleeves are not good" in text, text
    assert "crashed_sleeve: WorkerCrashedError" in text, text
    assert "hung_sleeve: SleeveTimeout: sleeve 'hung_sleeve' timed out after 3 s" in text, text
    assert "equal_weight" not in text  # the good sleeves are not blamed
    # nothing downstream ran: same latest meta materializations, same count, same bytes
    assert meta_materialization_ids(instance) == ids
    assert meta_materialization_count(instance) == n_meta
    assert meta_digest(storage) == before
    # each failed partition is visible in the UI with its cause
    for name, cause in (("crashed_sleeve", "WorkerCrashedError"), ("hung_sleeve", "timed out after 3 s")):
        record = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("sleeves"), asset_partitions=[name]), limit=1
        ).records[0]
        metadata = record.asset_materialization.metadata
        assert metadata["status"].value == "error" and cause in metadata["error"].value


def test_failed_partition_leaves_no_stale_data_and_meta_job_stays_blocked(
    tmp_path, monkeypatch, local_ray, small_prices
):
    instance = dg.DagsterInstance.get()
    ids = _good_run(tmp_path, monkeypatch, instance, FLAKY_GOOD)
    storage = _storage()
    good_run = latest_stored_sleeves(instance, ["flaky"])["flaky"].run_id
    good_bundle = storage / "runs" / good_run / "sleeves" / "flaky"
    assert read_json(good_bundle / "meta.json")["meta"]["status"] == "success"
    assert sorted({p.name.split(".")[0] for p in good_bundle.iterdir()}) == ["costs", "meta", "returns", "turnover",
                                                                          "weights"]  # each frame: its yearly chunks
    good_files = tree_digest(good_bundle)
    before = meta_digest(storage)
    n_meta = meta_materialization_count(instance)

    names = use_registry(tmp_path / "bad.yaml", FLAKY_BAD, monkeypatch, instance)
    result = materialize_all(instance, names)
    assert not result.success
    assert "flaky: ValueError: boom from the strategy" in check_evaluation(result).description

    # the latest stored bundle is the failure, with no frames: the good data is no longer what
    # loads (it stays, untouched, in its own run's directory, which the published set names)
    bundle = storage / "runs" / result.run_id / "sleeves" / "flaky"
    assert latest_stored_sleeves(instance, ["flaky"])["flaky"].run_id == result.run_id
    assert tree_digest(good_bundle) == good_files
    assert [p.name for p in bundle.iterdir()] == ["meta.json"]
    manifest = read_json(bundle / "meta.json")
    assert manifest["frames"] == {}
    assert manifest["meta"]["status"] == "error"
    assert manifest["meta"]["error"] == "ValueError: boom from the strategy"
    loaded = join_value(*read_bundle(ParquetIOManager()._dir(result.run_id, dg.AssetKey("sleeves"), "flaky")))
    assert loaded["status"] == "error"
    assert all(loaded[k] is None for k in ("returns", "weights", "costs", "turnover"))

    # meta_job alone (the meta assets, no sleeves) still stops at the gate in front of meta/returns
    meta_job = defs.resolve_job_def("meta_job")
    rerun = meta_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not rerun.success
    assert "flaky: ValueError: boom from the strategy" in gate_message(rerun)
    assert meta_materialization_ids(instance) == ids
    assert meta_materialization_count(instance) == n_meta
    assert meta_digest(storage) == before


def test_meta_job_blocks_on_a_never_run_sleeve_and_on_storage_that_disagrees_with_the_instance(
    tmp_path, monkeypatch, local_ray, small_prices
):
    """Two ways the instance and the stored bundles can drift apart; neither may reach meta/*."""
    from quant_meta_assets.dagster_defs.io_manager import split_value
    from quant_meta_assets.sleeves.engine import error_record
    from quant_meta_assets.storage import write_bundle

    instance = dg.DagsterInstance.get()
    ids = _good_run(tmp_path, monkeypatch, instance)
    storage = _storage()
    before = meta_digest(storage)
    meta_job = defs.resolve_job_def("meta_job")

    # 1. a sleeve registered after the last run: the gate names it, nothing downstream runs
    use_registry(tmp_path / "new.yaml", FLAKY_GOOD, monkeypatch, instance)
    result = meta_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert "flaky: never materialized" in gate_message(result)
    assert meta_materialization_ids(instance) == ids and meta_digest(storage) == before

    # 2. the stored bundle says error while the instance still records success (a writer that
    #    died between storing the bundle and logging the materialization): the gate passes,
    #    meta.returns refuses the failed sleeve by name, and nothing is materialized or stored
    use_registry(tmp_path / "good_again.yaml", GOOD, monkeypatch, instance)
    failed = error_record("min_variance", ValueError("written but never recorded"), 0.1)
    recorded_run = latest_stored_sleeves(instance, ["min_variance"])["min_variance"].run_id
    write_bundle(ParquetIOManager()._dir(recorded_run, dg.AssetKey("sleeves"), "min_variance"), *split_value(failed))
    result = meta_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert [e.step_key for e in failures] == ["meta__returns"]
    message = str(failures[0].step_failure_data.error)
    assert "min_variance: ValueError: written but never recorded" in message, message
    assert meta_materialization_ids(instance) == ids and meta_digest(storage) == before


def test_a_timeout_is_retried_in_the_same_run_and_a_strategy_error_is_not(tmp_path, monkeypatch, local_ray, small_prices):
    """A sleeve that timed out gets a bounded retry inside the run (Dagster's RetryRequested, only
    the transient failures recomputed); a strategy's own exception is deterministic and runs once."""
    instance = dg.DagsterInstance.get()
    marker, counter = tmp_path / "hang_marker", tmp_path / "raise_counter"
    body = GOOD + f"""
  - name: hangs_once
    strategy: quant_meta_assets_tests.strategies_for_tests:hangs_once
    params: {{marker: "{marker}"}}
    timeout_s: 3
    check_lookahead: false  # the calls are counted: no extra call for the look-ahead check
  - name: raises
    strategy: quant_meta_assets_tests.strategies_for_tests:count_and_raise
    params: {{counter: "{counter}"}}
"""
    names = use_registry(tmp_path / "reg.yaml", body, monkeypatch, instance)
    result = materialize_all(instance, names)
    assert not result.success  # "raises" stops the line
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert [e.step_key for e in retries] == ["sleeves"]  # one retry: after it only the strategy error is left
    assert marker.read_text().count("attempt") == 2  # timed out once, then succeeded on the retry
    assert counter.read_text().count("attempt") == 1  # the deterministic error ran once
    states = latest_stored_sleeves(instance, names)
    assert states["hangs_once"].status == "success" and states["raises"].status == "error"
    assert {s.run_id for s in states.values()} == {result.run_id}
    assert "raises" in check_evaluation(result).description and "hangs_once" not in check_evaluation(result).description
