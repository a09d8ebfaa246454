"""Jobs. `meta_full` runs every registered sleeve, the stop-the-line check and the four meta stages.

`meta_full` carries no partition tags: its sleeves step resolves the registered sleeves when it
runs (sleeves.py), so the CLI with no flags, `dg launch --job meta_full`, a long-lived UI after
the registry changed, and a sensor or schedule RunRequest all cover exactly the registry of that
moment. Launched for one partition (or a range) it computes just those.
"""

from __future__ import annotations

import dagster as dg

from quant_meta_assets.dagster_defs.meta_assets import META_KEYS
from quant_meta_assets.dagster_defs.prices import PRICES_KEY
from quant_meta_assets.dagster_defs.publishing import PUBLISHED_KEY
from quant_meta_assets.dagster_defs.sleeves import sleeves

SLEEVE_SELECTION = dg.AssetSelection.assets(sleeves)
# the four stages, then the publication step (which runs only after every one of them is recorded)
META_SELECTION = dg.AssetSelection.assets(*META_KEYS, PUBLISHED_KEY)
CHECK_SELECTION = dg.AssetSelection.checks_for_assets(sleeves)
META_JOB_NAMES = ("meta_full", "meta_job")
# run monitoring (deploy/dagster.yaml) cancels a meta_full still going after 4 h: a run whose worker
# died otherwise holds the Ray pool for good (docs/deploy.md)
META_FULL_MAX_RUNTIME_S = 4 * 3600

sleeves_job = dg.define_asset_job(
    "sleeves_job",
    # its own prices snapshot too: a fresh instance has none, and a sleeve computed on a newer
    # snapshot with other content makes the older sleeves stale (sleeves.status), never mixed silently
    selection=dg.AssetSelection.assets(PRICES_KEY) | SLEEVE_SELECTION | CHECK_SELECTION,
    description="Materialize sleeve partitions on Ray and check them (the run's own sleeves).",
)

meta_job = dg.define_asset_job(
    "meta_job",
    selection=META_SELECTION,
    description="The four meta stages over the stored sleeves, then meta/published; every stage stops the line "
    "unless every registered sleeve is good and current and its inputs are of the current lineage.",
    executor_def=dg.in_process_executor,
)

meta_full_job = dg.define_asset_job(
    "meta_full",
    # prices first: one snapshot per run, read by the sleeves and the report of this run
    selection=dg.AssetSelection.assets(PRICES_KEY) | SLEEVE_SELECTION | CHECK_SELECTION | META_SELECTION,
    # the stages are sequential and the sleeves already fan out on Ray: a subprocess per
    # step would only add ~3 s of imports each
    executor_def=dg.in_process_executor,
    tags={"dagster/max_runtime": str(META_FULL_MAX_RUNTIME_S)},
    description="Every registered sleeve (resolved when the run starts) on Ray, the blocking check, then "
    "meta.returns -> meta.optimize -> meta.flatten -> meta.report -> meta/published.",
)
