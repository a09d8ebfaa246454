"""A dead run frees the Ray pool; a run waits for the pool a bounded time, saying who holds it.

Dagster frees a run's concurrency slots when the run ends. A run whose worker is killed (kill -9,
the OOM killer, a lost machine) never ends: it stays STARTED and keeps the `quant_meta_ray` slot,
and every later sleeves step waits for it forever ("Step blocked by limit for pool"). Under
`dagster-daemon run`, run monitoring (deploy/dagster.yaml) fails such a run after the job's
`dagster/max_runtime` and frees its slots. Without a daemon (`dagster job execute` on the embedded
instance) nothing would, so the step before the sleeves step (`prices`) does it here:

1. `free_dead_claims`: for each other run holding (or queued on) the pool, a run that already
   ended, or whose run worker process (the pid Dagster's executor records) is gone from this
   machine, is marked FAILURE with the reason, and its slots are freed.
2. `wait_for_ray_pool`: then it waits until the pool has a free slot, logging which run holds it,
   at most $QUANT_META_POOL_WAIT_S (default 3600 s), then fails with PoolWaitTimeout naming the
   holder. The wait is inside a step, so Ctrl-C / SIGTERM end the run CANCELED.

A run is only judged dead by its process on the machine that ran it: runs tagged with another
host (`quant_meta/host`, set here) are left to run monitoring; untagged runs are judged only on a
SQLite instance (one machine).
"""

from __future__ import annotations

import socket
import time

import dagster as dg

from quant_meta_assets import settings
from quant_meta_assets.errors import QuantMetaError
from quant_meta_assets.processes import process_alive

__all__ = ["HOST_TAG", "PoolWaitTimeout", "free_dead_claims", "run_worker_pid", "wait_for_ray_pool"]

HOST_TAG = "quant_meta/host"
POOL_WAIT_ENV = "QUANT_META_POOL_WAIT_S"
DEFAULT_POOL_WAIT_S = 3600.0
POLL_S = 1.0
LOG_EVERY_S = 60.0


class PoolWaitTimeout(QuantMetaError, TimeoutError):
    """A run waited longer than $QUANT_META_POOL_WAIT_S for a slot of the Ray pool."""


def pool_wait_s() -> float:
    return settings.env_number(POOL_WAIT_ENV, DEFAULT_POOL_WAIT_S, float, minimum=0, unit="seconds")


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The pid of the run's worker, as its executor recorded it ("Executing steps in process (pid: N)",
    or the multiprocess executor's parent process); None before the executor started."""
    for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        data = entry.dagster_event.engine_event_data if entry.dagster_event else None
        pid = data.metadata.get("pid") if data is not None else None
        if pid is not None:
            try:
                return int(getattr(pid, "value", pid))
            except (TypeError, ValueError):
                continue
    return None


def _single_machine(instance: dg.DagsterInstance) -> bool:
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    return isinstance(instance.event_log_storage, SqliteEventLogStorage)


def _why_dead(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """Why the run can no longer use its slots, or None if it may be alive (or cannot be told here)."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return f"run {run_id} no longer exists"
    run = record.dagster_run
    if run.is_finished:
        return f"run {run_id} ended {run.status.value} without freeing its slots"
    host = run.tags.get(HOST_TAG)
    if host is not None and host != socket.gethostname():
        return None  # another machine's run: run monitoring (max_runtime) is the judge
    if host is None and not _single_machine(instance):
        return None
    pid = run_worker_pid(instance, run_id)
    if pid is None:
        return None  # still starting
    started = record.start_time or record.create_timestamp.timestamp()
    if process_alive(pid, started_before=started):
        return None
    return (f"run {run_id} ({run.job_name}) is {run.status.value} but its run worker process {pid} on "
            f"{socket.gethostname()} is gone (killed: kill -9, the OOM killer, a lost machine)")


def free_dead_claims(instance: dg.DagsterInstance, pool: str, *, own_run_id: str, log) -> list[str]:
    """Fail every other run that holds or waits for ``pool`` but is dead, and free its slots; their ids."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    holders = {s.run_id for s in info.claimed_slots} | {s.run_id for s in info.pending_steps}
    freed = []
    for run_id in sorted(holders - {own_run_id}):
        reason = _why_dead(instance, run_id)
        if reason is None:
            continue
        message = f"{reason}; marked FAILURE and its {pool} slot freed by run {own_run_id}"
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            instance.report_run_failed(run, message=message)
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        log.warning(message)
        freed.append(run_id)
    return freed


def _holders_text(instance: dg.DagsterInstance, claims) -> str:
    parts = []
    for slot in claims:
        run = instance.get_run_record_by_id(slot.run_id)
        since = (time.strftime("%H:%M:%S", time.localtime(run.start_time))
                 if run is not None and run.start_time else "?")
        job = run.dagster_run.job_name if run is not None else "?"
        parts.append(f"run {slot.run_id} ({job}, step {slot.step_key}, started {since})")
    return ", ".join(parts)


def runs_step(context: dg.AssetExecutionContext, step_key: str) -> bool:
    """Whether this run will execute ``step_key`` (a run of a job or selection without it never waits)."""
    if step_key not in {node.name for node in context.job_def.nodes_in_topological_order}:
        return False
    keys = context.run.step_keys_to_execute
    return keys is None or step_key in keys


def wait_for_ray_pool(context: dg.AssetExecutionContext, pool: str, step_key: str = "sleeves") -> None:
    """Before the run's ``step_key`` claims ``pool``: free dead runs' slots, then wait (bounded) for one."""
    if not runs_step(context, step_key):
        return
    instance, run_id = context.instance, context.run_id
    instance.add_run_tags(run_id, {HOST_TAG: socket.gethostname()})
    timeout = pool_wait_s()
    start = time.monotonic()
    last_log = None
    while True:
        free_dead_claims(instance, pool, own_run_id=run_id, log=context.log)
        info = instance.event_log_storage.get_concurrency_info(pool)
        limit = info.limit if info.limit is not None else (info.slot_count or None)
        others = [s for s in info.claimed_slots if s.run_id != run_id]
        if limit is None or len(others) < limit:
            if last_log is not None:
                context.log.info(f"pool {pool}: a slot is free after {time.monotonic() - start:.0f} s")
            return
        waited = time.monotonic() - start
        holders = _holders_text(instance, others)
        if waited >= timeout:
            raise PoolWaitTimeout(
                f"pool {pool} (limit {limit}) is held by {holders}; waited {waited:.0f} s "
                f"({POOL_WAIT_ENV}={timeout:.0f}). If that run is stuck, terminate it in the UI "
                "(or `dagster run delete`); if it is working, launch this run later."
            )
        if last_log is None or time.monotonic() - last_log >= LOG_EVERY_S:
            context.log.info(f"waiting for pool {pool} (limit {limit}): held by {holders}; "
                             f"waited {waited:.0f} s of at most {timeout:.0f} s")
            last_log = time.monotonic()
        time.sleep(POLL_S)
