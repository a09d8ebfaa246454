"""The real graph: real Dagster (materialize, sensors), real Ray (local, 2 CPUs), real data."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pytest

from quant_meta_assets.dagster_defs.definitions import defs
from quant_meta_assets.dagster_defs.instance_queries import latest_stored_sleeves
from quant_meta_assets.dagster_defs.meta_assets import META_KEYS
from quant_meta_assets.dagster_defs.partitions import SLEEVES_PARTITIONS_NAME
from quant_meta_assets.dagster_defs.sensors import meta_on_fresh_sleeves, sleeve_registry_sensor
from quant_meta_assets.stages import StageRegistry
from quant_meta_assets_tests.conftest import write_registry
from quant_meta_assets_tests.dagster_support import materialize_all, report_sleeve, use_registry

pytestmark = [pytest.mark.timeout(300)]

# the registries here and in test_incremental_meta start with these two built-in sleeves
EW_AND_LOW_VOL = """
sleeves:
  - name: equal_weight
    strategy: equal_weight
    cost_bps: 5
  - name: low_volatility
    strategy: low_volatility
    cost_bps: 5
"""
GOOD = EW_AND_LOW_VOL + """\
  - name: min_variance
    strategy: min_variance
    cost_bps: 5
"""
FAILING = GOOD + """
  - name: broken_sleeve
    strategy: quant_meta_assets_tests.strategies_for_tests:raises
"""


def test_asset_keys_mirror_stage_ids():
    repo_keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    for stage in StageRegistry.meta_stages():
        assert "/".join(stage.asset_key) in repo_keys
        assert stage.stage_id.replace(".", "/") == "/".join(stage.asset_key)
    assert {"meta_full", "sleeves_job", "meta_job"} <= {j.name for j in defs.resolve_all_job_defs()}


def test_check_is_blocking():
    from quant_meta_assets.dagster_defs.sleeves import all_sleeves_succeeded

    checks = list(defs.resolve_asset_graph().asset_check_keys)
    assert [c.name for c in checks] == ["all_sleeves_succeeded"]
    spec = next(iter(all_sleeves_succeeded.check_specs))
    assert spec.blocking and spec.asset_key == dg.AssetKey("sleeves")


def test_whole_graph_materializes_on_real_ray(tmp_path, monkeypatch, local_ray):
    instance = dg.DagsterInstance.get()
    names = use_registry(tmp_path / "s.yaml", GOOD, monkeypatch, instance)
    result = materialize_all(instance, names)
    assert result.success
    for key in META_KEYS:
        records = instance.fetch_materializations(key, limit=1).records
        assert records, f"{key.to_user_string()} was not materialized"
    check = result.get_asset_check_evaluations()[0]
    assert check.passed
    weights = result.asset_value(["meta", "optimize"])["weights"]
    assert abs(weights.sum(axis=1) - 1).max() < 1e-9
    report_md = instance.fetch_materializations(META_KEYS[-1], limit=1).records[0].asset_materialization.metadata
    assert "report_path" in report_md and report_md["report_path"].value.endswith("report.html")
    # the UI summary: Markdown tables and numeric headline metrics (plotted across materializations)
    for table in ("metrics", "reconciliations", "latest_weights"):
        assert isinstance(report_md[table], dg.MarkdownMetadataValue)
    for number in ("meta_cagr", "meta_sharpe", "meta_max_drawdown", "max_reconciliation_diff",
                   "crossing_savings_bps", "book_turnover", "standalone_turnover"):
        assert isinstance(report_md[number], dg.FloatMetadataValue)
    assert report_md["max_reconciliation_diff"].value < 1e-9
    # formatted for a person: the report as a file:// link, a headline with units, weights in %
    assert isinstance(report_md["report"], dg.UrlMetadataValue)
    assert Path(urlparse(report_md["report"].value).path) == Path(report_md["report_path"].value).resolve()
    assert "| CAGR | " in report_md["headline"].value and "× per year" in report_md["headline"].value
    optimize_md = instance.fetch_materializations(META_KEYS[1], limit=1).records[0].asset_materialization.metadata
    assert "%" in optimize_md["latest_weights"].value
    one_sleeve = dg.AssetRecordsFilter(asset_key=dg.AssetKey("sleeves"), asset_partitions=[names[0]])
    sleeve_md = instance.fetch_materializations(one_sleeve, limit=1).records[0].asset_materialization.metadata
    assert sleeve_md["runtime_s"].value == round(sleeve_md["runtime_s"].value, 2)
    assert re.fullmatch(r"[+-][\d,]+\.\d\d% \(×[\d,]+\.\d\d\)", sleeve_md["total_return"].value)
    # lineage: per sleeve, its run, a code version that includes its registry entry, a content hash
    states = list(latest_stored_sleeves(instance, names).values())
    assert {s.run_id for s in states} == {result.run_id}
    assert len({s.data_version for s in states}) == len(names)
    from quant_meta_assets.dagster_defs.sleeves import CODE_VERSION

    assert all(s.code_version.startswith(CODE_VERSION + "/") and len(s.code_version) == 33 for s in states)


def test_failing_sleeve_fails_check_and_blocks_every_meta_asset(tmp_path, monkeypatch, local_ray):
    instance = dg.DagsterInstance.get()
    names = use_registry(tmp_path / "s.yaml", FAILING, monkeypatch, instance)
    result = materialize_all(instance, names)
    assert not result.success
    evaluation = result.get_asset_check_evaluations()[0]
    assert not evaluation.passed
    assert "broken_sleeve: ValueError: boom from the strategy" in evaluation.description
    for key in META_KEYS:
        assert not instance.fetch_materializations(key, limit=1).records, key
    # the failure is visible per partition in the UI, without opening logs
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("sleeves"), asset_partitions=["broken_sleeve"]), limit=1
    ).records[0]
    assert record.asset_materialization.metadata["status"].value == "error"


def test_registry_sensor_syncs_partitions(tmp_path, monkeypatch):
    from quant_meta_assets.dagster_defs.sleeves import ONLY_TAG

    monkeypatch.setenv("QUANT_META_SLEEVES", str(write_registry(tmp_path / "s.yaml", GOOD)))
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(SLEEVES_PARTITIONS_NAME, ["stale_sleeve", "equal_weight"])
    result = sleeve_registry_sensor(dg.build_sensor_context(instance=instance))
    assert isinstance(result, dg.SensorResult)
    added = [r for r in result.dynamic_partitions_requests if isinstance(r, dg.AddDynamicPartitionsRequest)]
    deleted = [r for r in result.dynamic_partitions_requests if isinstance(r, dg.DeleteDynamicPartitionsRequest)]
    assert list(added[0].partition_keys) == ["low_volatility", "min_variance"]
    assert list(deleted[0].partition_keys) == ["stale_sleeve"]
    # equal_weight's partition existed but it was never materialized: it is requested too, all in one run
    (request,) = result.run_requests
    assert request.partition_key is None
    assert sorted(request.tags[ONLY_TAG].split(",")) == ["equal_weight", "low_volatility", "min_variance"]
    assert "never materialized" in request.tags["quant_meta/why"]


def test_meta_sensor_waits_for_every_sleeve(tmp_path, monkeypatch):
    monkeypatch.setenv("QUANT_META_SLEEVES", str(write_registry(tmp_path / "s.yaml", GOOD)))
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(SLEEVES_PARTITIONS_NAME, ["equal_weight", "low_volatility", "min_variance"])

    def materialize(name, status):
        report_sleeve(instance, name, status)

    materialize("equal_weight", "success")
    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        tick = meta_on_fresh_sleeves.evaluate_tick(context)
    assert not tick.run_requests and "low_volatility: never materialized" in tick.skip_message
    materialize("low_volatility", "success")
    materialize("min_variance", "success")
    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        tick = meta_on_fresh_sleeves.evaluate_tick(context)
    assert len(tick.run_requests) == 1 and tick.run_requests[0].job_name in (None, "meta_job")
