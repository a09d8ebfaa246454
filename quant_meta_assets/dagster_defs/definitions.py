"""The code location: `dg dev` / `dagster dev -m quant_meta_assets`, `dagster job execute -m quant_meta_assets -j meta_full`.

Loading it reads nothing and writes nothing: no registry, no instance (see jobs.py and sleeves.py
for where the sleeve set is resolved). A broken registry therefore never hides the location.
"""

from __future__ import annotations

import dagster as dg

from quant_meta_assets.dagster_defs.alerts import run_failure_webhook_sensor
from quant_meta_assets.dagster_defs.io_manager import ParquetIOManager
from quant_meta_assets.dagster_defs.jobs import meta_full_job, meta_job, sleeves_job
from quant_meta_assets.dagster_defs.meta_assets import flattened_weights, meta_report, meta_returns, meta_weights
from quant_meta_assets.dagster_defs.prices import prices, prices_source, prices_source_sensor
from quant_meta_assets.dagster_defs.publishing import meta_published
from quant_meta_assets.dagster_defs.resources import ray_resource
from quant_meta_assets.dagster_defs.schedules import daily_meta_schedule
from quant_meta_assets.dagster_defs.sensors import meta_on_fresh_sleeves, sleeve_registry_sensor
from quant_meta_assets.dagster_defs.sleeves import all_sleeves_succeeded, sleeves

defs = dg.Definitions(
    assets=[
        prices_source,
        prices,
        sleeves,
        meta_returns,
        meta_weights,
        flattened_weights,
        meta_report,
        meta_published,
    ],
    asset_checks=[
        all_sleeves_succeeded,
    ],
    jobs=[
        meta_full_job,
        sleeves_job,
        meta_job,
    ],
    sensors=[
        sleeve_registry_sensor,
        meta_on_fresh_sleeves,
        prices_source_sensor,
        run_failure_webhook_sensor(),
    ],
    schedules=[
        daily_meta_schedule(),
    ],
    resources={"ray_cluster": ray_resource(), "io_manager": ParquetIOManager()},
)
