"""Dagster semantics of a long-lived deployment, on a real instance without Ray: loading has no
side effect, stale sleeves are caught, the sensors always act and never duplicate, a broken
registry degrades. Sleeve materializations are recorded as the sleeves asset records them
(runless events with the same metadata), so each test takes seconds."""

from __future__ import annotations

import json
import time

import dagster as dg
import pytest

from quant_meta_assets.dagster_defs.definitions import defs
from quant_meta_assets.dagster_defs.instance_queries import latest_stored_sleeves, sleeve_statuses
from quant_meta_assets.dagster_defs.partitions import SLEEVES_PARTITIONS_NAME
from quant_meta_assets.dagster_defs.sensors import meta_on_fresh_sleeves, sleeve_registry_sensor
from quant_meta_assets.dagster_defs.sleeves import ONLY_TAG
from quant_meta_assets.errors import RegistryError
from quant_meta_assets_tests.conftest import run_cli, write_registry
from quant_meta_assets_tests.dagster_support import gate_message, report_sleeve

pytestmark = [pytest.mark.timeout(240)]

ABC = """
sleeves:
  - name: a
    strategy: equal_weight
  - name: b
    strategy: momentum_12_1
    params: {lookback: 63}
  - name: c
    strategy: low_volatility
"""
ABCD = ABC + """
  - name: d
    strategy: min_variance
"""
B_CHANGED = ABC.replace("lookback: 63", "lookback: 21")
BROKEN = ABC.replace("  - name: c\n", "  - name: c\n    strategy: [unclosed\n")


def _tick(instance, cursor=None) -> dg.SensorResult:
    return sleeve_registry_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))


def _apply(instance, result: dg.SensorResult) -> None:
    """What the daemon does with a tick's partition requests."""
    for request in result.dynamic_partitions_requests or []:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(SLEEVES_PARTITIONS_NAME, list(request.partition_keys))
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(SLEEVES_PARTITIONS_NAME, key)


def _use(tmp_path, monkeypatch, body: str, name: str = "sleeves.yaml"):
    path = write_registry(tmp_path / name, body)
    monkeypatch.setenv("QUANT_META_SLEEVES", str(path))
    return path


@pytest.mark.slow
def test_definitions_validate_leaves_the_instance_as_it_was_even_with_a_broken_registry(tmp_path, isolated_env):
    instance = dg.DagsterInstance.get()
    instance.add_dynamic_partitions(SLEEVES_PARTITIONS_NAME, ["prod_x"])
    for body in (ABC, BROKEN):
        env = {"QUANT_META_SLEEVES": str(write_registry(tmp_path / "s.yaml", body))}
        done = run_cli(["dagster", "definitions", "validate", "-m", "quant_meta_assets"], env, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert instance.get_dynamic_partitions(SLEEVES_PARTITIONS_NAME) == ["prod_x"]
    assert not instance.get_run_records() and not instance.get_latest_materialization_event(dg.AssetKey("sleeves"))


def test_loading_the_code_location_reads_no_registry_and_keeps_meta_full_free_of_partition_tags():
    job = defs.resolve_job_def("meta_full")
    partition_tags = ("dagster/partition", "dagster/asset_partition")  # its only system tag is dagster/max_runtime
    assert not any(k.startswith(partition_tags) for k in job.tags), job.tags
    assert not any(k.startswith(partition_tags) for k in (job.run_tags or {})), job.run_tags


def test_stale_sleeves_are_named_by_the_shared_answer_and_the_meta_gate(tmp_path, monkeypatch, isolated_env):
    instance = dg.DagsterInstance.get()
    _use(tmp_path, monkeypatch, ABC)
    for name in "abc":
        report_sleeve(instance, name)
    assert [s.state for s in sleeve_statuses(instance)] == ["current"] * 3

    _use(tmp_path, monkeypatch, B_CHANGED, "changed.yaml")
    states = {s.sleeve: s for s in sleeve_statuses(instance)}
    assert states["b"].state == "stale" and "registry entry, risk-free rate or holding costs changed" in states["b"].reason
    assert states["a"].ok and states["c"].ok
    # the gate in front of the meta stages stops meta_job, naming the sleeve and what changed
    result = defs.resolve_job_def("meta_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    message = gate_message(result)
    assert "b: stale: registry entry, risk-free rate or holding costs changed" in message and "a:" not in message
    assert not instance.get_latest_materialization_event(dg.AssetKey(["meta", "returns"]))

    # other prices: every sleeve is stale, because of the prices
    from skfolio.datasets import load_sp500_dataset

    prices = load_sp500_dataset().iloc[-300:].rename_axis("date").reset_index()
    prices.to_csv(tmp_path / "prices.csv", index=False)
    monkeypatch.setenv("QUANT_META_PRICES", str(tmp_path / "prices.csv"))
    states = sleeve_statuses(instance)
    assert all(s.state == "stale" and "prices changed" in s.reason for s in states)


def _requested(result: dg.SensorResult) -> tuple[list[str], str | None]:
    """The sleeves of the tick's one run request (the registry sensor never asks for more than one run)."""
    assert len(result.run_requests) <= 1, result.run_requests
    if not result.run_requests:
        return [], None
    request = result.run_requests[0]
    assert request.partition_key is None  # one run for the set, not one per partition
    return request.tags[ONLY_TAG].split(","), request.run_key


def test_registry_sensor_runs_missing_failed_changed_and_readded_sleeves_with_unique_keys(
    tmp_path, monkeypatch, isolated_env
):
    instance = dg.DagsterInstance.get()
    _use(tmp_path, monkeypatch, ABC)
    first = _tick(instance)
    _apply(instance, first)
    sleeves, first_key = _requested(first)
    assert sleeves == ["a", "b", "c"] and "a: never materialized" in first.run_requests[0].tags["quant_meta/why"]
    for name in "abc":
        report_sleeve(instance, name, "success" if name != "c" else "error")

    # c failed: requested again with the same key (Dagster drops a repeat: no loop on a failing sleeve)
    second = _tick(instance, first.cursor)
    c_sleeves, c_key = _requested(second)
    assert c_sleeves == ["c"] and _requested(_tick(instance, second.cursor))[1] == c_key

    # +d: d runs; b's entry changes: b runs, in the same one run, under a new key
    _use(tmp_path, monkeypatch, ABCD.replace("lookback: 63", "lookback: 21"), "abcd.yaml")
    third = _tick(instance, second.cursor)
    _apply(instance, third)
    sleeves, third_key = _requested(third)
    assert sleeves == ["b", "c", "d"] and third_key not in (first_key, c_key)
    assert "b: stale: registry entry" in third.run_requests[0].tags["quant_meta/why"]
    report_sleeve(instance, "d")
    report_sleeve(instance, "b")
    d_key = _requested(_tick(instance, third.cursor))[1]  # c alone again

    # -d: its partition goes, nothing runs for it; +d again: it runs, under a key never used before
    _use(tmp_path, monkeypatch, ABC.replace("lookback: 63", "lookback: 21"), "abc2.yaml")
    fourth = _tick(instance, third.cursor)
    _apply(instance, fourth)
    assert "d" not in instance.get_dynamic_partitions(SLEEVES_PARTITIONS_NAME)
    assert "d" not in _requested(fourth)[0]
    _use(tmp_path, monkeypatch, ABCD.replace("lookback: 63", "lookback: 21"), "abcd2.yaml")
    fifth = _tick(instance, fourth.cursor)
    readd, readd_key = _requested(fifth)
    assert "d" in readd and readd_key not in (d_key, third_key)
    assert "d: re-added" in fifth.run_requests[0].tags["quant_meta/why"]
    assert json.loads(fifth.cursor)["generation"] == {"d": 1}


def test_broken_registry_fails_the_sensor_tick_and_the_jobs_then_recovers(tmp_path, monkeypatch, isolated_env):
    instance = dg.DagsterInstance.get()
    path = _use(tmp_path, monkeypatch, BROKEN)
    with pytest.raises(RegistryError, match=r"YAML syntax error at line \d+"):
        _tick(instance)
    with pytest.raises(RegistryError, match=str(path.name)):
        with dg.build_sensor_context(instance=instance, definitions=defs) as context:
            meta_on_fresh_sleeves.evaluate_tick(context)
    result = defs.resolve_job_def("meta_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success and "YAML syntax error" in gate_message(result)
    # fixing the file recovers without a restart
    write_registry(path, ABC)
    assert _requested(_tick(instance))[0] == ["a", "b", "c"]


def _add_run(instance, job_name: str, status: dg.DagsterRunStatus) -> str:
    run = instance.create_run_for_job(defs.resolve_job_def(job_name), status=status)
    return run.run_id


def test_freshness_sensor_skips_while_a_meta_run_is_active_and_after_a_failed_meta_attempt(
    tmp_path, monkeypatch, isolated_env
):
    instance = dg.DagsterInstance.get()
    _use(tmp_path, monkeypatch, ABC)

    def tick():
        with dg.build_sensor_context(instance=instance, definitions=defs) as context:
            return meta_on_fresh_sleeves.evaluate_tick(context)

    for name in "abc":
        report_sleeve(instance, name)
    assert len(tick().run_requests) == 1
    run_id = _add_run(instance, "meta_full", dg.DagsterRunStatus.STARTED)
    result = tick()
    assert not result.run_requests and run_id in result.skip_message
    instance.report_run_canceled(instance.get_run_by_id(run_id))

    # a meta run that fails (here: no stored bundles behind the recorded sleeves) is not re-requested
    failed = defs.resolve_job_def("meta_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success
    result = tick()
    assert not result.run_requests and "already attempted" in result.skip_message
    # a newer sleeve materialization makes the meta stages due again
    time.sleep(0.01)
    report_sleeve(instance, "a")
    assert len(tick().run_requests) == 1


@pytest.mark.slow
def test_bulk_status_query_is_constant_in_the_number_of_sleeves(tmp_path, monkeypatch, isolated_env):
    """1,000 registered sleeves, some materialized twice: the shared answer takes well under a second
    (an in-memory instance only to keep the 1,100 writes of the setup short)."""
    instance = dg.DagsterInstance.ephemeral()
    body = "sleeves:\n" + "".join(f"  - name: s{i:04d}\n    strategy: equal_weight\n" for i in range(1000))
    _use(tmp_path, monkeypatch, body)
    from quant_meta_assets.dagster_defs.instance_queries import current_prices_hash
    from quant_meta_assets.sleeves.registry import load_registry
    from quant_meta_assets.sleeves.status import code_hash, config_hash

    profiles = load_registry()
    prices_hash = current_prices_hash()
    for p in profiles + profiles[:100]:
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "sleeves", partition=p.name,
            metadata={"status": "success", "config_hash": config_hash(p), "code_hash": code_hash(p),
                      "prices_hash": prices_hash},
        ))
    started = time.perf_counter()
    statuses = sleeve_statuses(instance, profiles, prices_hash)
    elapsed = time.perf_counter() - started
    assert len(statuses) == 1000 and all(s.ok for s in statuses)
    assert len(latest_stored_sleeves(instance, [p.name for p in profiles])) == 1000
    assert elapsed < 1.0, f"{elapsed:.2f} s for 1,000 sleeves"


def test_every_sleeves_step_shares_one_ray_slot(isolated_env):
    """Sensor-launched sleeve runs queue for the machine: the sleeves step is in a pool whose limit,
    from the project's dagster.yaml, is one."""
    from quant_meta_assets.dagster_defs.sleeves import RAY_POOL, sleeves

    assert sleeves.op.pool == RAY_POOL
    config = dg.DagsterInstance.get().get_concurrency_config()
    assert config.pool_config.default_pool_limit == 1
