"""Jobs. `meta_full` runs every registered sleeve, the stop-the-line check and the four meta stages.

`dagster job execute` has no partition flag, so `meta_full` carries the partition-range run tags
(first..last registered sleeve, in the instance's insertion order) computed when the code
location loads, right after the registry's sleeves were synced into the instance.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from quant_meta_assets.dagster_defs.meta_assets import META_KEYS
from quant_meta_assets.dagster_defs.sleeves import sleeves

SLEEVE_SELECTION = dg.AssetSelection.assets(sleeves)
META_SELECTION = dg.AssetSelection.assets(*META_KEYS)
CHECK_SELECTION = dg.AssetSelection.checks_for_assets(sleeves)

sleeves_job = dg.define_asset_job(
    "sleeves_job",
    selection=SLEEVE_SELECTION | CHECK_SELECTION,
    description="Materialize sleeve partitions on Ray and run the stop-the-line check.",
)

meta_job = dg.define_asset_job(
    "meta_job",
    selection=META_SELECTION | CHECK_SELECTION,
    description="The four meta stages over the stored sleeves, gated by the stop-the-line check.",
    executor_def=dg.in_process_executor,
)


def meta_full_job(range_tags: Mapping[str, str]) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        "meta_full",
        selection=SLEEVE_SELECTION | CHECK_SELECTION | META_SELECTION,
        tags=dict(range_tags),
        # the stages are sequential and the sleeves already fan out on Ray: a subprocess per
        # step would only add ~3 s of imports each
        executor_def=dg.in_process_executor,
        description="Every registered sleeve on Ray, the blocking check, then meta.returns -> "
        "meta.optimize -> meta.flatten -> meta.report.",
    )
