"""Sensors, both driven by the one per-sleeve answer (`instance_queries.sleeve_statuses`).

- `sleeve_registry_sensor` keeps the `sleeves` partitions equal to the registry and requests
  **one** run of every registered sleeve that is not good and current (missing, failed, stale:
  registry entry, strategy code or prices changed) or that was removed and re-added: new prices
  make every sleeve stale, and one run (one Ray, one pool slot) recomputes them all. The run key
  is unique per set of (sleeve, config hash, code hash, prices hash, re-add generation), so a
  change or a re-add always runs while a failing set is not retried on every tick. Its cursor
  remembers the registered names (to see re-adds) and the generations.
- `meta_on_fresh_sleeves` requests `meta_job` when every registered sleeve is good and current and
  at least one is newer than the last meta/returns, unless a meta run is queued or in progress,
  or the meta stages were already attempted on these sleeves (no loop on a failing meta run).
A broken registry fails the tick with the RegistryError (file, line, key).
"""

from __future__ import annotations

import hashlib
import json

import dagster as dg

from quant_meta_assets.dagster_defs.instance_queries import current_prices_hash, sleeve_statuses
from quant_meta_assets.dagster_defs.jobs import META_JOB_NAMES, meta_job, sleeves_job
from quant_meta_assets.dagster_defs.meta_assets import RETURNS_KEY
from quant_meta_assets.dagster_defs.partitions import SLEEVES_PARTITIONS_NAME, partition_changes, sleeve_partitions
from quant_meta_assets.dagster_defs.sleeves import ONLY_TAG
from quant_meta_assets.sleeves.status import identity, not_good

ACTIVE_RUN_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _read_cursor(cursor: str | None) -> tuple[set[str] | None, dict[str, int]]:
    if not cursor:
        return None, {}
    data = json.loads(cursor)
    return set(data["registered"]), {k: int(v) for k, v in data.get("generation", {}).items()}


@dg.sensor(
    name="sleeve_registry_sensor",
    job=sleeves_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Keeps the `sleeves` partitions equal to the registry and runs, in one run, every registered "
    "sleeve that is missing, failed, stale (registry entry, strategy code or prices changed) or re-added.",
)
def sleeve_registry_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    from quant_meta_assets.sleeves.registry import load_registry

    profiles = load_registry()  # a RegistryError fails the tick, naming file, line and key
    names = [p.name for p in profiles]
    prices_hash = current_prices_hash(context.instance)
    previous, generation = _read_cursor(context.cursor)
    statuses = {s.sleeve: s for s in sleeve_statuses(context.instance, profiles, prices_hash)}
    readded = [n for n in names if previous is not None and n not in previous and statuses[n].stored is not None]
    for name in readded:
        generation[name] = generation.get(name, 0) + 1
    to_run = [n for n in names if not statuses[n].ok or n in readded]
    to_add, to_remove = partition_changes(names, context.instance.get_dynamic_partitions(SLEEVES_PARTITIONS_NAME))
    partition_requests = []
    if to_add:
        partition_requests.append(sleeve_partitions.build_add_request(to_add))
    if to_remove:
        partition_requests.append(sleeve_partitions.build_delete_request(to_remove))
    run_requests = []
    if to_run:
        hashes = {p.name: identity(p) for p in profiles}
        key = hashlib.sha256(json.dumps(
            [[n, *hashes[n], generation.get(n, 0)] for n in to_run] + [prices_hash]
        ).encode()).hexdigest()[:20]
        why = "; ".join(f"{n}: {'re-added' if n in readded else statuses[n].reason}" for n in to_run[:5])
        more = f" (and {len(to_run) - 5} more)" if len(to_run) > 5 else ""
        run_requests.append(dg.RunRequest(
            run_key=f"sleeves-{key}",
            tags={ONLY_TAG: ",".join(to_run), "quant_meta/why": (why + more)[:1000]},
        ))
    cursor = json.dumps({"registered": names, "generation": generation}, sort_keys=True)
    skip = None
    if not run_requests and not partition_requests:
        skip = f"all {len(names)} registered sleeves are good and current; partitions match the registry"
    return dg.SensorResult(
        run_requests=run_requests, dynamic_partitions_requests=partition_requests, cursor=cursor, skip_reason=skip
    )


def _active_meta_run(instance: dg.DagsterInstance) -> dg.RunRecord | None:
    for job_name in META_JOB_NAMES:
        records = instance.get_run_records(
            dg.RunsFilter(job_name=job_name, statuses=ACTIVE_RUN_STATUSES), limit=1
        )
        if records:
            return records[0]
    return None


@dg.sensor(
    name="meta_on_fresh_sleeves",
    job=meta_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Runs meta_job once every registered sleeve is good and current and at least one sleeve is "
    "newer than the last meta/returns; skips while a meta run is queued or in progress, and after a meta "
    "attempt on the same sleeves (it does not loop on a failing meta run).",
)
def meta_on_fresh_sleeves(context: dg.SensorEvaluationContext):
    instance = context.instance
    statuses = sleeve_statuses(instance)
    bad = not_good(statuses)
    if bad:
        return dg.SkipReason("waiting on sleeves: " + "; ".join(f"{s.sleeve}: {s.reason}" for s in bad))
    active = _active_meta_run(instance)
    if active is not None:
        return dg.SkipReason(
            f"meta run {active.dagster_run.run_id} ({active.dagster_run.job_name}) is "
            f"{active.dagster_run.status.value.lower()}"
        )
    newest = max(statuses, key=lambda s: s.stored.storage_id)
    newest_id = newest.stored.storage_id
    last_meta = instance.fetch_materializations(RETURNS_KEY, limit=1).records
    if last_meta and last_meta[0].storage_id > newest_id:
        return dg.SkipReason("meta stages are already newer than every sleeve")
    planned = instance.get_latest_planned_materialization_info(RETURNS_KEY)
    if planned is not None and planned.storage_id > newest_id:
        return dg.SkipReason(f"meta stages were already attempted on these sleeves (run {planned.run_id})")
    newest_run = instance.get_run_by_id(newest.stored.run_id) if newest.stored.run_id else None
    if newest_run is not None and newest_run.job_name in META_JOB_NAMES:
        return dg.SkipReason(
            f"the newest sleeve came from {newest_run.job_name} run {newest_run.run_id}, which ran the meta "
            f"stages itself ({newest_run.status.value.lower()})"
        )
    return dg.RunRequest(run_key=f"meta-after-{newest_id}")
