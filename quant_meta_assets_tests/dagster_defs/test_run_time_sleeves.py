"""Real runs on real Ray: `meta_full` covers the registry of the moment it runs (one job object
loaded once, like a long-lived code server), one-partition runs succeed on their own sleeves,
and each partition's Dagster data version is the content hash of what it stored."""

from __future__ import annotations

import dagster as dg
import pytest

from quant_meta_assets.dagster_defs.definitions import defs
from quant_meta_assets.dagster_defs.instance_queries import latest_stored_sleeves
from quant_meta_assets.dagster_defs.partitions import SLEEVES_PARTITIONS_NAME
from quant_meta_assets_tests.conftest import write_registry
from quant_meta_assets_tests.faults.conftest import small_price_file, small_prices  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

FIRST = """
sleeves:
  - name: first
    strategy: equal_weight
  - name: second
    strategy: low_volatility
"""
SECOND = """
sleeves:
  - name: second
    strategy: low_volatility
  - name: third
    strategy: min_variance
"""
WITH_FAILING = SECOND + """
  - name: broken
    strategy: quant_meta_assets_tests.strategies_for_tests:raises
"""


def _sleeves_materialized_by(instance, run_id: str) -> set[str]:
    records = instance.fetch_materializations(dg.AssetKey("sleeves"), limit=100).records
    return {r.partition_key for r in records if r.run_id == run_id and r.partition_key is not None}


def test_meta_full_loaded_once_covers_the_registry_of_each_run(tmp_path, monkeypatch, local_ray, small_prices):
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("meta_full")  # loaded once, before any registry change
    monkeypatch.setenv("QUANT_META_SLEEVES", str(write_registry(tmp_path / "first.yaml", FIRST)))
    one = job.execute_in_process(instance=instance, raise_on_error=False)
    assert one.success
    assert _sleeves_materialized_by(instance, one.run_id) == {"first", "second"}

    # the registry sensor deleted `first` and the registry gained `third`: no reload
    instance.delete_dynamic_partition(SLEEVES_PARTITIONS_NAME, "first")
    monkeypatch.setenv("QUANT_META_SLEEVES", str(write_registry(tmp_path / "second.yaml", SECOND)))
    two = job.execute_in_process(instance=instance, raise_on_error=False)
    assert two.success, [e.message for e in two.all_events if e.is_failure]
    assert _sleeves_materialized_by(instance, two.run_id) == {"second", "third"}
    assert set(instance.get_dynamic_partitions(SLEEVES_PARTITIONS_NAME)) == {"second", "third"}
    assert list(two.asset_value(["meta", "returns"]).columns) == ["second", "third"]

    # each partition's data version is its content hash (the UI's stale/unsynced status follows data)
    stored = latest_stored_sleeves(instance, ["second", "third"])
    for name, record in stored.items():
        version = instance.get_latest_data_version_record(dg.AssetKey("sleeves"), partition_key=name)
        tag = version.asset_materialization.tags["dagster/data_version"]
        assert tag == record.data_version and len(tag) == 16, (name, tag)
    assert stored["second"].data_version != stored["third"].data_version

    # an unregistered partition whose key is not a safe file name does not break the meta load
    instance.add_dynamic_partitions(SLEEVES_PARTITIONS_NAME, ["not a file name/.."])
    meta = defs.resolve_job_def("meta_job").execute_in_process(instance=instance, raise_on_error=False)
    assert meta.success, [e.message for e in meta.all_events if e.is_failure]

    # meta_full for one partition: that sleeve, the check on it, then the meta stages
    single = job.execute_in_process(instance=instance, partition_key="third", raise_on_error=False)
    assert single.success, [e.message for e in single.all_events if e.is_failure]
    assert _sleeves_materialized_by(instance, single.run_id) == {"third"}


def test_a_one_partition_run_succeeds_on_its_own_sleeve_while_the_gate_still_blocks_meta(
    tmp_path, monkeypatch, local_ray, small_prices
):
    instance = dg.DagsterInstance.get()
    monkeypatch.setenv("QUANT_META_SLEEVES", str(write_registry(tmp_path / "s.yaml", WITH_FAILING)))
    instance.add_dynamic_partitions(SLEEVES_PARTITIONS_NAME, ["second", "third", "broken"])
    # `third` and `broken` were never materialized: a run of `second` alone still succeeds
    result = defs.resolve_job_def("sleeves_job").execute_in_process(
        instance=instance, partition_key="second", raise_on_error=False
    )
    assert result.success
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.passed and "all 1 sleeves" in evaluation.description
    # dagster-ray's meaningless "Deleted LocalRay" (its delete is a no-op) is not logged
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert not [m for m in messages if "Deleted LocalRay" in (m or "")]
    version = instance.get_latest_data_version_record(dg.AssetKey("sleeves"), partition_key="second")
    stored = latest_stored_sleeves(instance, ["second"])["second"]
    assert version.asset_materialization.tags["dagster/data_version"] == stored.data_version

    # the whole graph ("materialize all") stops the line at the check and at the gate
    everything = defs.resolve_job_def("meta_full").execute_in_process(instance=instance, raise_on_error=False)
    assert not everything.success
    (check,) = everything.get_asset_check_evaluations()
    assert not check.passed and "broken: ValueError: boom from the strategy" in check.description
    assert not instance.get_latest_materialization_event(dg.AssetKey(["meta", "returns"]))


def test_every_output_and_the_report_html_go_under_the_io_managers_base_dir(
    tmp_path, monkeypatch, local_ray, small_prices
):
    from quant_meta_assets.dagster_defs import meta_assets
    from quant_meta_assets.dagster_defs.io_manager import ParquetIOManager
    from quant_meta_assets.dagster_defs.prices import prices
    from quant_meta_assets.dagster_defs.resources import ray_resource
    from quant_meta_assets.dagster_defs.sleeves import sleeves

    instance = dg.DagsterInstance.get()
    monkeypatch.setenv("QUANT_META_SLEEVES", str(write_registry(tmp_path / "s.yaml", FIRST)))
    base = tmp_path / "elsewhere"
    from quant_meta_assets.dagster_defs.publishing import meta_published

    assets = [prices, sleeves, meta_assets.meta_returns, meta_assets.meta_weights, meta_assets.flattened_weights,
              meta_assets.meta_report, meta_published]
    result = dg.materialize(
        assets, instance=instance, resources={"io_manager": ParquetIOManager(base_dir=str(base)), "ray_cluster": ray_resource()}
    )
    assert result.success
    report = result.asset_value(["meta", "report"])
    assert str(report["html"]).startswith(str(base / "reports" / result.run_id))
    run_dir = base / "runs" / result.run_id
    assert (run_dir / "sleeves" / "first").is_dir() and (run_dir / "meta" / "returns").is_dir()
    assert (base / "published.json").is_file() and (base / "runs" / result.run_id / "prices").is_dir()
    assert not (tmp_path / "storage").exists()  # nothing under the settings' root


def test_a_range_run_gives_each_partition_its_content_data_version(tmp_path, monkeypatch, local_ray, small_prices):
    """A backfill of a partition range is one run with one Output: each partition still gets its own
    content hash as Dagster's data version (what the UI's stale status reads)."""
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._core.loader import LoadingContextForTest

    from quant_meta_assets.dagster_defs.instance_queries import sleeve_statuses
    from quant_meta_assets.sleeves.registry import load_registry

    instance = dg.DagsterInstance.get()
    monkeypatch.setenv("QUANT_META_SLEEVES", str(write_registry(tmp_path / "s.yaml", SECOND)))
    instance.add_dynamic_partitions(SLEEVES_PARTITIONS_NAME, ["second", "third"])
    result = defs.resolve_job_def("sleeves_job").execute_in_process(
        instance=instance, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": "second", "dagster/asset_partition_range_end": "third"},
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert _sleeves_materialized_by(instance, result.run_id) == {"second", "third"}
    stored = latest_stored_sleeves(instance, ["second", "third"])
    assert {s.state for s in sleeve_statuses(instance, load_registry())} == {"current"}
    assert stored["second"].data_version != stored["third"].data_version
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    for name in ("second", "third"):
        current = resolver.get_current_data_version(dg.AssetKey("sleeves"), name)
        assert current.value == stored[name].data_version, name
        record = instance.get_latest_data_version_record(dg.AssetKey("sleeves"), partition_key=name)
        assert record.run_id == result.run_id and record.asset_materialization.metadata["status"].value == "success"
