"""The Ray pool before a sleeves step (dagster_defs/pool.py), on the real embedded instance: a
slot held by a live run is waited for a bounded time and the holder is named; a slot held by a run
whose worker process is gone, or by a run that ended, is freed and that run marked failed."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest
from dagster._core.events import EngineEventData

from quant_meta_assets.dagster_defs.definitions import defs
from quant_meta_assets.dagster_defs.pool import free_dead_claims, run_worker_pid
from quant_meta_assets.dagster_defs.sleeves import RAY_POOL
from quant_meta_assets_tests.dagster_support import step_failures

pytestmark = [pytest.mark.timeout(300)]


def _holder(instance: dg.DagsterInstance, pid: int, status=dg.DagsterRunStatus.STARTED) -> str:
    """A meta_full run whose executor reported ``pid`` and that holds the pool's slot in its sleeves step."""
    run = instance.create_run_for_job(defs.resolve_job_def("meta_full"), status=dg.DagsterRunStatus.STARTED)
    instance.report_engine_event(f"Executing steps in process (pid: {pid})", run, EngineEventData.in_process(pid))
    instance.handle_run_event(run.run_id, dg.DagsterEvent(
        event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name))
    if not instance.event_log_storage.get_concurrency_info(RAY_POOL).slot_count:
        instance.event_log_storage.initialize_concurrency_limit_to_default(RAY_POOL)  # as the executor does
    claim = instance.event_log_storage.claim_concurrency_slot(RAY_POOL, run.run_id, "sleeves")
    assert claim.is_claimed, claim
    if status != dg.DagsterRunStatus.STARTED:
        instance.report_run_failed(instance.get_run_by_id(run.run_id), message="ended elsewhere")
    return run.run_id


def _claims(instance: dg.DagsterInstance) -> set[str]:
    return {s.run_id for s in instance.event_log_storage.get_concurrency_info(RAY_POOL).claimed_slots}


def test_a_live_holder_is_waited_for_a_bounded_time_and_named(monkeypatch):
    instance = dg.DagsterInstance.get()
    holder = _holder(instance, os.getpid())  # this test process: alive
    assert run_worker_pid(instance, holder) == os.getpid()
    monkeypatch.setenv("QUANT_META_POOL_WAIT_S", "2")
    result = defs.resolve_job_def("meta_full").execute_in_process(instance=instance, raise_on_error=False)
    failures = step_failures(result)
    assert list(failures) == ["prices"], failures
    assert "PoolWaitTimeout" in failures["prices"] and f"held by run {holder} (meta_full, step sleeves" in failures["prices"]
    assert "QUANT_META_POOL_WAIT_S=2" in failures["prices"]
    waiting = [e.user_message for e in instance.all_logs(result.run_id) if "waiting for pool quant_meta_ray" in e.user_message]
    assert waiting and f"held by run {holder}" in waiting[0]
    assert _claims(instance) == {holder} and instance.get_run_by_id(holder).status == dg.DagsterRunStatus.STARTED


def test_dead_or_ended_holders_are_failed_and_their_slots_freed():
    instance = dg.DagsterInstance.get()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid now names no process
    dead = _holder(instance, gone.pid)
    assert _claims(instance) == {dead}
    messages = []

    class Log:
        warning = staticmethod(messages.append)

    assert free_dead_claims(instance, RAY_POOL, own_run_id="me", log=Log) == [dead]
    assert _claims(instance) == set()
    run = instance.get_run_by_id(dead)
    assert run.status == dg.DagsterRunStatus.FAILURE
    (failure,) = instance.all_logs(dead, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert f"its run worker process {gone.pid}" in failure.dagster_event.message
    assert messages == [failure.dagster_event.message]

    instance.event_log_storage.set_concurrency_slots(RAY_POOL, 2)
    ended = _holder(instance, os.getpid(), status=dg.DagsterRunStatus.FAILURE)  # ended, slot never freed
    alive = _holder(instance, os.getpid())
    assert free_dead_claims(instance, RAY_POOL, own_run_id="me", log=Log) == [ended]
    assert _claims(instance) == {alive}
    assert "ended FAILURE without freeing its slots" in messages[-1]
