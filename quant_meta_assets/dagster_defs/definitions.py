"""The code location: `dagster dev -m quant_meta_assets` / `dagster job execute -m quant_meta_assets -j meta_full`.

Loading syncs the registry's sleeves into the instance's `sleeves` partitions (idempotent; the
registry sensor does the same continuously), because partition-range run tags are validated
when a run is created: the partitions must exist before `dagster job execute` creates its run.
"""

from __future__ import annotations

import os
import warnings

import dagster as dg

from quant_meta_assets.dagster_defs.io_manager import ParquetIOManager
from quant_meta_assets.dagster_defs.jobs import meta_full_job, meta_job, sleeves_job
from quant_meta_assets.dagster_defs.meta_assets import flattened_weights, meta_report, meta_returns, meta_weights
from quant_meta_assets.dagster_defs.partitions import partition_range_tags, sync_sleeve_partitions
from quant_meta_assets.dagster_defs.resources import ray_resource
from quant_meta_assets.dagster_defs.sensors import meta_on_fresh_sleeves, sleeve_registry_sensor
from quant_meta_assets.dagster_defs.sleeves import all_sleeves_succeeded, sleeves
from quant_meta_assets.registry import load_registry


def _registered_range_tags() -> dict[str, str]:
    names = [p.name for p in load_registry()]
    instance = None
    if os.environ.get("DAGSTER_HOME"):
        try:
            instance = dg.DagsterInstance.get()
            sync_sleeve_partitions(instance, names)
        except Exception as exc:  # an unusable instance must not hide the code location
            warnings.warn(f"could not sync sleeve partitions into the Dagster instance: {exc}", stacklevel=2)
            instance = None
    return partition_range_tags(instance, names)


defs = dg.Definitions(
    assets=[sleeves, meta_returns, meta_weights, flattened_weights, meta_report],
    asset_checks=[all_sleeves_succeeded],
    jobs=[meta_full_job(_registered_range_tags()), sleeves_job, meta_job],
    sensors=[sleeve_registry_sensor, meta_on_fresh_sleeves],
    resources={"ray_cluster": ray_resource(), "io_manager": ParquetIOManager()},
)
