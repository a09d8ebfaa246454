"""Only a complete, current, successful run of one lineage is ever published, whatever the entry
point; and new prices or new strategy code make sleeves stale. Each test is one reproduction of
how the earlier design published the wrong book, run through the real CLI (or Dagster's own
re-execution API), a real instance and a real local Ray."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from quant_meta_assets.dagster_defs.definitions import defs
from quant_meta_assets.dagster_defs.instance_queries import current_prices_hash, sleeve_statuses
from quant_meta_assets.dagster_defs.prices import prices_source_sensor
from quant_meta_assets.dagster_defs.publishing import PUBLISHED_KEY
from quant_meta_assets.dagster_defs.sensors import meta_on_fresh_sleeves, sleeve_registry_sensor
from quant_meta_assets.dagster_defs.sleeves import ONLY_TAG
from quant_meta_assets.publishing import lineage, retention
from quant_meta_assets.publishing import snapshot as publication
from quant_meta_assets_tests.conftest import REPO_ROOT, run_cli, write_registry
from quant_meta_assets_tests.dagster_defs.test_graph import GOOD
from quant_meta_assets_tests.dagster_support import materialize_all, report_sleeve, step_failures, use_registry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

N_ROWS = 700  # the last ~2.8 years of the bundled prices: short runs, and lookbacks still fit


def pointer_bytes(storage: Path) -> bytes | None:
    path = storage / publication.POINTER
    return path.read_bytes() if path.is_file() else None


@pytest.fixture
def price_files(tmp_path):
    """Two price files: the last N_ROWS - 1 days, and the same with one more day appended."""
    from quant_meta_assets.prices import load_prices

    prices = load_prices().iloc[-N_ROWS:]
    files = []
    for name, frame in (("day1.parquet", prices.iloc[:-1]), ("day2.parquet", prices)):
        path = tmp_path / name
        frame.rename_axis("date").reset_index().to_parquet(path, index=False)
        files.append(path)
    return files


def cli_env(tmp_path: Path, registry: Path, prices: Path, **extra: str) -> dict[str, str]:
    return {"PYTHONPATH": str(REPO_ROOT), "QUANT_META_RAY_NUM_CPUS": "2", "QUANT_META_SLEEVES": str(registry),
            "QUANT_META_PRICES": str(prices), **extra}


def meta_full_job():
    """For Dagster's re-execution API (execute_job needs a reconstructable job)."""
    return defs.resolve_job_def("meta_full")


def meta_job():
    return defs.resolve_job_def("meta_job")


def published_metadata(instance: dg.DagsterInstance, run_id: str) -> dict:
    records = [r for r in instance.fetch_materializations(PUBLISHED_KEY, limit=100).records if r.run_id == run_id]
    assert records, f"run {run_id} recorded no meta/published materialization"
    return {k: getattr(v, "value", v) for k, v in records[0].asset_materialization.metadata.items()}


def test_a_failed_run_never_publishes_through_the_cli_nor_after_the_pointer_write(
    tmp_path, monkeypatch, isolated_env, price_files, local_ray
):
    storage = tmp_path / "storage"
    registry = write_registry(tmp_path / "good.yaml", GOOD)
    # 1. the CLI with a bad retention setting: the run fails at meta/published, before the pointer moves
    env = cli_env(tmp_path, registry, price_files[0], QUANT_META_KEEP_RUNS="abc")
    bad = run_cli(["dagster", "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full"], env)
    assert bad.returncode != 0
    assert "QUANT_META_KEEP_RUNS must be a whole number" in bad.stdout + bad.stderr
    assert pointer_bytes(storage) is None  # nothing was published
    (run,) = dg.DagsterInstance.get().get_run_records()
    assert run.dagster_run.status == dg.DagsterRunStatus.FAILURE

    good = run_cli(["dagster", "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full"],
                   cli_env(tmp_path, registry, price_files[0]))
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    first = publication.read_published(storage)
    assert first.as_of == str(pd.read_parquet(price_files[0])["date"].iloc[-1].date())
    before = pointer_bytes(storage)

    # 2. an exception *after* the pointer write (a full disk while pruning): the step fails and
    #    readers are back on the previous set, byte for byte
    def disk_full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setenv("QUANT_META_SLEEVES", str(registry))
    monkeypatch.setenv("QUANT_META_PRICES", str(price_files[1]))  # a new day: this set would be published
    monkeypatch.setattr(retention, "prune_runs", disk_full)
    instance = dg.DagsterInstance.get()
    failed = materialize_all(instance, [])
    assert not failed.success
    assert "No space left on device" in step_failures(failed)["meta__published"]
    assert pointer_bytes(storage) == before
    assert publication.read_published(storage).run_id == first.run_id


def test_the_gate_holds_for_a_selection_that_skips_meta_returns(tmp_path, isolated_env, price_files, local_ray):
    storage = tmp_path / "storage"
    registry = write_registry(tmp_path / "good.yaml", GOOD)
    env = cli_env(tmp_path, registry, price_files[0])
    good = run_cli(["dagster", "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full"], env)
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    published = publication.read_published(storage)

    # a selection that starts after meta/returns, on unchanged sleeves: one lineage, published, and
    # the set says which run computed each member
    select = ["dagster", "asset", "materialize", "-m", "quant_meta_assets", "--select", "meta/optimize*"]
    partial = run_cli(select, env)
    assert partial.returncode == 0, partial.stdout[-3000:] + partial.stderr[-3000:]
    manifest = publication.published_manifest(storage)
    assert manifest["runs"]["meta/returns"] == published.run_id != manifest["runs"]["meta/optimize"]
    assert manifest["generation"] == 2
    before = pointer_bytes(storage)

    # one sleeve's params change: it is stale, and the same selection stops at meta/optimize
    write_registry(registry, GOOD.replace("strategy: low_volatility", "strategy: low_volatility\n    params: {lookback: 21}"))
    blocked = run_cli(select, env)
    output = blocked.stdout + blocked.stderr
    assert blocked.returncode != 0
    assert "stop the line" in output and "low_volatility: stale: registry entry" in output
    assert "meta__optimize" in output
    assert pointer_bytes(storage) == before


def test_an_older_run_never_overwrites_a_newer_publication(tmp_path, monkeypatch, isolated_env, price_files, local_ray):
    storage = tmp_path / "storage"
    instance = dg.DagsterInstance.get()
    use_registry(tmp_path / "good.yaml", GOOD, monkeypatch, instance)
    infeasible = {"ops": {"meta__optimize": {"config": {"max_weight": 0.1}}}}

    # run A fails at meta/optimize (three sleeves cannot sum to 1 under a 10% cap)
    monkeypatch.setenv("QUANT_META_PRICES", str(price_files[0]))
    run_a = dg.execute_job(dg.reconstructable(meta_full_job), instance=instance, run_config=infeasible,
                           raise_on_error=False)
    assert not run_a.success and "meta__optimize" in run_a.get_failed_step_keys()

    # a price day is appended; run B succeeds and publishes it
    monkeypatch.setenv("QUANT_META_PRICES", str(price_files[1]))
    run_b = dg.execute_job(dg.reconstructable(meta_full_job), instance=instance, raise_on_error=False)
    assert run_b.success
    assert publication.read_published(storage).run_id == run_b.run_id
    before = pointer_bytes(storage)

    # re-executing A from failure (the UI's button) with a feasible config: its meta/returns is of
    # the older prices, so meta/optimize refuses it, names why, and nothing is published
    again = dg.execute_job(
        dg.reconstructable(meta_full_job), instance=instance, raise_on_error=False, run_config={},
        reexecution_options=dg.ReexecutionOptions.from_failure(run_a.run_id, instance),
    )
    assert not again.success
    text = step_failures(again)["meta__optimize"]
    assert "meta/optimize refuses its inputs" in text and "the current prices are" in text
    assert pointer_bytes(storage) == before

    # run C (equal_weight), then run D (risk_parity) publish; re-executing only C's report and
    # publication computes a consistent but older set: not published, and the step says why
    equal = {"ops": {"meta__optimize": {"config": {"method": "equal_weight"}}}}
    run_c = dg.execute_job(dg.reconstructable(meta_job), instance=instance, run_config=equal, raise_on_error=False)
    run_d = dg.execute_job(dg.reconstructable(meta_job), instance=instance, raise_on_error=False)
    assert run_c.success and run_d.success
    latest = publication.read_published(storage)
    assert latest.run_id == run_d.run_id
    report_only = dg.execute_job(
        dg.reconstructable(meta_job), instance=instance, run_config=equal, raise_on_error=False,
        reexecution_options=dg.ReexecutionOptions(
            parent_run_id=run_c.run_id, step_selection=["meta__report", "meta__published"]
        ),
    )
    assert report_only.success
    metadata = published_metadata(instance, report_only.run_id)
    assert metadata["published"] is False and "before the published set's" in metadata["reason"]
    after = publication.read_published(storage)
    assert after.run_id == run_d.run_id
    assert after.outputs["meta/optimize"]["weights"].equals(latest.outputs["meta/optimize"]["weights"])


def test_new_prices_make_every_sleeve_stale_and_one_run_recomputes_them(
    tmp_path, monkeypatch, isolated_env, price_files, local_ray
):
    instance = dg.DagsterInstance.get()
    names = use_registry(tmp_path / "good.yaml", GOOD, monkeypatch, instance)
    monkeypatch.setenv("QUANT_META_PRICES", str(price_files[0]))
    first = materialize_all(instance, names)
    assert first.success
    assert all(s.ok for s in sleeve_statuses(instance))
    snapshot_version = instance.get_latest_data_version_record(dg.AssetKey("prices")).asset_materialization
    # one prices hash: the snapshot's data version, the source's, what the sleeves recorded
    assert snapshot_version.tags["dagster/data_version"] == current_prices_hash() == lineage.detach(
        publication.read_published().outputs["meta/returns"])["prices_hash"]

    # a day is appended to the price file (no run yet): every sleeve is stale at once, as an update
    monkeypatch.setenv("QUANT_META_PRICES", str(price_files[1]))
    statuses = sleeve_statuses(instance)
    assert [s.state for s in statuses] == ["stale"] * 3
    assert all("prices appended (+1 days after" in s.reason for s in statuses), [s.reason for s in statuses]
    observed = prices_source_sensor(dg.build_sensor_context(instance=instance))
    assert observed.asset_events[0].tags["dagster/data_version"] == current_prices_hash()
    # the registry sensor asks for ONE run of all three; the meta sensor waits
    tick = sleeve_registry_sensor(dg.build_sensor_context(instance=instance))
    (request,) = tick.run_requests
    assert sorted(request.tags[ONLY_TAG].split(",")) == sorted(names)
    waiting = meta_on_fresh_sleeves(dg.build_sensor_context(instance=instance))
    assert isinstance(waiting, dg.SkipReason) and "prices appended" in waiting.skip_message
    # meta_job on the old sleeves stops at the gate, naming them
    blocked = run_cli(["dagster", "job", "execute", "-m", "quant_meta_assets", "-j", "meta_job"],
                      {"PYTHONPATH": str(REPO_ROOT), "QUANT_META_SLEEVES": str(tmp_path / "good.yaml"),
                       "QUANT_META_PRICES": str(price_files[1])})
    assert blocked.returncode != 0
    assert "stop the line" in blocked.stdout + blocked.stderr and "prices appended" in blocked.stdout + blocked.stderr
    # the requested run (sleeves_job with the sensor's tags) recomputes all three on Ray, in one run
    rerun = dg.materialize(
        defs.resolve_asset_graph().assets_defs, instance=instance, raise_on_error=False, tags=request.tags,
        selection=dg.AssetSelection.assets("prices", "sleeves") | dg.AssetSelection.checks_for_assets(
            dg.AssetKey("sleeves")),
    )
    assert rerun.success
    assert all(s.ok for s in sleeve_statuses(instance))
    # ... each one an update of the day from the first run's bundle (docs/incremental.md)
    modes = {r.partition_key: r.asset_materialization.metadata["mode"].value
             for r in instance.fetch_materializations(dg.AssetKey("sleeves"), limit=50).records
             if r.run_id == rerun.run_id and r.partition_key}
    assert modes == {name: f"update (+1 days from run {first.run_id})" for name in names}, modes


PLUGIN_V1 = "def weights(prices):\n    return prices * 0 + 1.0 / prices.shape[1]\n"
PLUGIN_V2 = "def weights(prices):\n    return (prices * 0 + 1.0 / prices.shape[1]) * 0.5\n"


def test_new_strategy_code_makes_its_sleeve_stale(tmp_path, monkeypatch, isolated_env, price_files):
    package = tmp_path / "plugins" / "edited_strategies"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "strat.py").write_text(PLUGIN_V1)
    monkeypatch.syspath_prepend(str(tmp_path / "plugins"))
    monkeypatch.setenv("QUANT_META_PRICES", str(price_files[0]))
    instance = dg.DagsterInstance.get()
    body = GOOD + "  - name: plugin\n    strategy: edited_strategies.strat:weights\n"
    names = use_registry(tmp_path / "reg.yaml", body, monkeypatch, instance)
    for name in names:
        report_sleeve(instance, name)  # stored as computed with today's registry, code and prices
    assert all(s.ok for s in sleeve_statuses(instance))

    (package / "strat.py").write_text(PLUGIN_V2)  # the function body changes, nothing else
    stat = os.stat(package / "strat.py")
    os.utime(package / "strat.py", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    statuses = {s.sleeve: s for s in sleeve_statuses(instance)}
    assert statuses["plugin"].state == "stale" and "strategy code changed" in statuses["plugin"].reason
    assert all(statuses[n].ok for n in names if n != "plugin")
    tick = sleeve_registry_sensor(dg.build_sensor_context(instance=instance))
    (request,) = tick.run_requests
    assert request.tags[ONLY_TAG] == "plugin" and "strategy code changed" in request.tags["quant_meta/why"]
    # the gate: meta_job does not run on the old code's output
    result = dg.materialize(defs.resolve_asset_graph().assets_defs, instance=instance, raise_on_error=False,
                            selection=dg.AssetSelection.assets(dg.AssetKey(["meta", "returns"])))
    assert not result.success
    assert "plugin: stale: strategy code changed" in step_failures(result)["meta__returns"]
