"""Sensors: keep the `sleeves` partitions equal to the registry, and rerun the meta stages
once every registered sleeve is freshly and successfully materialized."""


import hashlib

import dagster as dg

from quant_meta_assets.dagster_defs.instance_queries import (
    SLEEVES_KEY,
    latest_materialization_storage_id,
    latest_sleeve_states,
)
from quant_meta_assets.dagster_defs.jobs import meta_job, sleeves_job
from quant_meta_assets.dagster_defs.meta_assets import RETURNS_KEY
from quant_meta_assets.dagster_defs.partitions import SLEEVES_PARTITIONS_NAME, partition_changes, sleeve_partitions


@dg.sensor(
    name="sleeve_registry_sensor",
    job=sleeves_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Adds/removes `sleeves` partitions to match the registry and requests runs of new sleeves.",
)
def sleeve_registry_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    from quant_meta_assets.registry import load_registry

    names = [p.name for p in load_registry()]
    to_add, to_remove = partition_changes(names, context.instance.get_dynamic_partitions(SLEEVES_PARTITIONS_NAME))
    cursor = hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]
    if not to_add and not to_remove:
        return dg.SkipReason(f"partitions already match the registry ({len(names)} sleeves)")
    requests = []
    if to_add:
        requests.append(sleeve_partitions.build_add_request(to_add))
    if to_remove:
        requests.append(sleeve_partitions.build_delete_request(to_remove))
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=name, run_key=f"new-sleeve-{name}-{cursor}") for name in to_add],
        dynamic_partitions_requests=requests,
        cursor=cursor,
    )


@dg.asset_sensor(
    name="meta_on_fresh_sleeves",
    asset_key=SLEEVES_KEY,
    job=meta_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="On a new `sleeves` materialization: run the meta stages once every registered sleeve "
    "succeeded and at least one is newer than the last meta/returns.",
)
def meta_on_fresh_sleeves(context: dg.SensorEvaluationContext, asset_event: dg.EventLogEntry):
    from quant_meta_assets.registry import load_registry

    states = latest_sleeve_states(context.instance, [p.name for p in load_registry()])
    bad = [s for s in states if not s.ok]
    if bad:
        return dg.SkipReason("waiting on sleeves: " + "; ".join(f"{s.sleeve}: {s.failure_reason()}" for s in bad))
    newest = max(s.storage_id or 0 for s in states)
    last_meta = latest_materialization_storage_id(context.instance, RETURNS_KEY) or 0
    if newest <= last_meta:
        return dg.SkipReason("meta stages are already newer than every sleeve")
    return dg.RunRequest(run_key=f"meta-after-{newest}")
