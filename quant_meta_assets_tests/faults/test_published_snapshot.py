"""One published snapshot through real Dagster: a failure injected at each meta stage leaves
readers on the previous complete set (pointer and bundles byte-for-byte), and retention keeps
only the last N runs plus everything still pointed to."""

from __future__ import annotations

import dataclasses

import dagster as dg
import pytest

from quant_meta_assets.publishing import retention, snapshot as publication
from quant_meta_assets.dagster_defs.definitions import defs
from quant_meta_assets.dagster_defs.jobs import META_SELECTION
from quant_meta_assets.dagster_defs.prices import PRICES_KEY
from quant_meta_assets.stages import StageRegistry
from quant_meta_assets_tests.dagster_defs.test_graph import GOOD
from quant_meta_assets_tests.faults.conftest import materialize_all, meta_digest, use_registry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _meta_only(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    """The four meta stages and the publication over the stored sleeves and price snapshot (like meta_job, no Ray)."""
    return dg.materialize(
        defs.resolve_asset_graph().assets_defs,
        instance=instance,
        selection=META_SELECTION,
        raise_on_error=False,
    )


def _inject_failure(monkeypatch, stage_id: str) -> None:
    def boom(**_kwargs):
        raise RuntimeError(f"injected failure in {stage_id}")

    stage = StageRegistry.get(stage_id)
    monkeypatch.setitem(StageRegistry._stages, stage_id, dataclasses.replace(stage, run=boom))


def test_failure_at_each_meta_stage_keeps_the_previous_published_set(tmp_path, monkeypatch, local_ray, small_prices):
    from quant_meta_assets import settings

    storage = settings.storage_root()
    instance = dg.DagsterInstance.get()
    names = use_registry(tmp_path / "good.yaml", GOOD, monkeypatch, instance)
    good = materialize_all(instance, names)
    assert good.success
    snap = publication.read_published()
    assert snap.run_id == good.run_id
    assert snap.outputs["meta/optimize"]["weights"].equals(good.asset_value(["meta", "optimize"])["weights"])
    assert snap.asset_weights.equals(good.asset_value(["meta", "flatten"])["asset_weights"])
    before = meta_digest(storage)
    assert all(before.values())

    for index, stage_id in enumerate(["meta.returns", "meta.optimize", "meta.flatten", "meta.report"]):
        with monkeypatch.context() as patch:
            _inject_failure(patch, stage_id)
            failed = _meta_only(instance)
        assert not failed.success
        assert f"meta__{stage_id.split('.')[1]}" in failed.get_failed_step_keys()
        # the stages before the failure did run and store their outputs, in the failed run's own directory
        stored = [key for key in publication.META_OUTPUTS
                  if (publication.run_scoped_dir(storage, failed.run_id, key.split("/")) / "meta.json").is_file()]
        assert stored == list(publication.META_OUTPUTS[:index]), stage_id
        # readers still see the good run's four outputs, byte for byte
        assert meta_digest(storage) == before, stage_id
        assert publication.read_published().run_id == good.run_id

    # the next good meta run publishes its own set, loading prices and sleeves from storage
    again = _meta_only(instance)
    assert again.success
    assert publication.read_published().run_id == again.run_id
    assert meta_digest(storage) != before


def settings_root():
    from quant_meta_assets import settings

    return settings.storage_root()


def test_retention_keeps_last_n_runs_and_what_latest_materializations_point_to(
    tmp_path, monkeypatch, local_ray, small_prices
):
    monkeypatch.setenv("QUANT_META_KEEP_RUNS", "1")
    instance = dg.DagsterInstance.get()
    names = use_registry(tmp_path / "good.yaml", GOOD, monkeypatch, instance)
    first = materialize_all(instance, names)  # stores prices, sleeves and meta
    assert first.success
    later = [_meta_only(instance) for _ in range(3)]
    assert all(r.success for r in later)
    # kept: the newest (published) run; the run whose price snapshot is still the latest `prices`
    # and whose sleeve bundles the published set reads. Pruned: the rest (N = 1), reports included.
    assert instance.fetch_materializations(PRICES_KEY, limit=1).records[0].run_id == first.run_id
    assert set(retention.run_dirs()) == {first.run_id, later[2].run_id}
    assert (settings_root() / "runs" / first.run_id / "sleeves").is_dir()
    assert not (settings_root() / "runs" / later[1].run_id).exists()
    from quant_meta_assets import settings

    assert not (settings.storage_root() / "runs" / later[0].run_id).exists()
    assert not (settings.storage_root() / "reports" / later[0].run_id).exists()
    assert (settings.storage_root() / "reports" / later[2].run_id / "report.html").is_file()
    assert publication.read_published().run_id == later[2].run_id
