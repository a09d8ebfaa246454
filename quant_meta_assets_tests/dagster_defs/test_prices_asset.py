"""`prices` is an asset: one validated snapshot per run, data version = content hash of the source;
sleeves and the report read the snapshot (never the file); a changed source makes them stale."""

from __future__ import annotations


import dagster as dg
import pytest
from dagster._core.definitions.data_version import CachingStaleStatusResolver
from dagster._core.loader import LoadingContextForTest
from skfolio.datasets import load_sp500_dataset

from quant_meta_assets.dagster_defs.definitions import defs
from quant_meta_assets.dagster_defs.meta_assets import META_KEYS
from quant_meta_assets.dagster_defs.prices import PRICES_KEY, PRICES_SOURCE_KEY, prices_source_sensor
from quant_meta_assets.dagster_defs.sleeves import frame_hash
from quant_meta_assets.bundle_values import join_value
from quant_meta_assets.prices import price_source
from quant_meta_assets.publishing.snapshot import read_published, run_scoped_dir
from quant_meta_assets.storage import read_bundle
from quant_meta_assets_tests.dagster_defs.test_graph import GOOD
from quant_meta_assets_tests.dagster_support import materialize_all, use_registry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


@pytest.fixture
def price_file(tmp_path, monkeypatch):
    path = tmp_path / "prices.csv"
    load_sp500_dataset().iloc[-800:].rename_axis("date").reset_index().to_csv(path, index=False)
    monkeypatch.setenv("QUANT_META_PRICES", str(path))
    return path


def _observe(instance: dg.DagsterInstance) -> dg.SensorResult | dg.SkipReason:
    """One tick of prices_source_sensor, its observations recorded as the daemon would."""
    result = prices_source_sensor(dg.build_sensor_context(instance=instance))
    if isinstance(result, dg.SensorResult):
        for event in result.asset_events:
            instance.report_runless_asset_event(event)
    return result


def _status(instance: dg.DagsterInstance, names: list[str]) -> dict[str, str]:
    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    out = {key.to_user_string(): resolver.get_status(key).value for key in [PRICES_KEY, *META_KEYS]}
    out |= {f"sleeves[{n}]": resolver.get_status(dg.AssetKey("sleeves"), n).value for n in names}
    return out


def test_prices_snapshot_is_what_sleeves_and_report_read_and_source_change_marks_stale(
    tmp_path, monkeypatch, local_ray, price_file
):
    instance = dg.DagsterInstance.get()
    names = use_registry(tmp_path / "s.yaml", GOOD, monkeypatch, instance)
    source_hash = price_source().content_hash  # the one prices hash: of the validated frame
    assert isinstance(_observe(instance), dg.SensorResult)  # the daemon's first tick observes the source
    result = materialize_all(instance, names)
    assert result.success

    record = instance.fetch_materializations(PRICES_KEY, limit=1).records[0]
    assert record.run_id == result.run_id
    assert record.asset_materialization.tags["dagster/data_version"] == source_hash
    snapshot = result.asset_value("prices")
    stored = join_value(*read_bundle(run_scoped_dir(None, result.run_id, ["prices"])))  # one Parquet snapshot per run
    assert frame_hash(stored) == frame_hash(snapshot)
    # the sleeves computed on exactly the snapshot
    sleeve_meta = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("sleeves"), asset_partitions=[names[0]]), limit=1
    ).records[0].asset_materialization.metadata
    assert sleeve_meta["prices_hash"].value == frame_hash(snapshot)

    assert isinstance(_observe(instance), dg.SkipReason)  # unchanged source: nothing new recorded
    assert set(_status(instance, names).values()) == {"FRESH"}

    # a new close appended to the source: observed, and everything downstream turns stale
    text = price_file.read_text().rstrip("\n").splitlines()
    last = text[-1].split(",")
    last[0] = "2023-01-03"
    price_file.write_text("\n".join([*text, ",".join(last)]) + "\n")
    observed = _observe(instance)
    assert isinstance(observed, dg.SensorResult)
    assert observed.asset_events[0].asset_key == PRICES_SOURCE_KEY
    assert observed.asset_events[0].tags["dagster/data_version"] == price_source().content_hash != source_hash
    assert set(_status(instance, names).values()) == {"STALE"}

    # a sleeves-and-meta run without `prices` reads the latest snapshot, never the file: its sleeves
    # are computed on that snapshot, which is no longer the source's, so the line stops (the
    # blocking check names the new prices) and nothing of it is published
    published = read_published()
    rerun = dg.materialize(
        defs.resolve_asset_graph().assets_defs, instance=instance,
        selection=dg.AssetSelection.all() - dg.AssetSelection.assets(PRICES_KEY),
        tags=result.dagster_run.tags, raise_on_error=False,
    )
    assert not rerun.success
    sleeve_meta = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("sleeves"), asset_partitions=[names[0]]), limit=1
    ).records[0].asset_materialization.metadata
    assert sleeve_meta["prices_hash"].value == frame_hash(snapshot)
    (check,) = rerun.get_asset_check_evaluations()
    assert not check.passed and "prices changed" in (check.description or ""), check.description
    assert not [e for e in rerun.get_asset_materialization_events() if e.asset_key.path[0] == "meta"]
    assert read_published().run_id == published.run_id == result.run_id
