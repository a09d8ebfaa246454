"""Run-scoped outputs in Dagster: where a run stores `prices` and the meta assets, where a later
run loads them from, and the publication (then retention) once a run's `meta/report` is stored.

The decisions are the pure core's (`publication`, `retention`); this module only asks the
instance which run produced what.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster._core.execution.context.output import RUN_ID_PLACEHOLDER

from quant_meta_assets import settings
from quant_meta_assets.publishing import retention, snapshot as publication
from quant_meta_assets.dagster_defs.prices import PRICES_KEY
from quant_meta_assets.errors import StorageError
from quant_meta_assets.storage import BUNDLE_MANIFEST

# the meta assets' keys from the pure core (importing meta_assets here would be circular:
# meta_assets -> sleeves -> io_manager -> publishing)
META_KEYS = [dg.AssetKey(key.split("/")) for key in publication.META_OUTPUTS]
REPORT_KEY = META_KEYS[-1]
RUN_SCOPED_KEYS = frozenset([PRICES_KEY, *META_KEYS])


def is_run_scoped(asset_key: dg.AssetKey) -> bool:
    return asset_key in RUN_SCOPED_KEYS


def latest_run_id(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> str | None:
    records = instance.fetch_materializations(asset_key, limit=1).records
    return records[0].run_id if records else None


def source_dir(context: dg.InputContext, root: Path) -> Path:
    """The bundle an input loads: the upstream step's run when Dagster knows it (same run, or
    the parent of a re-execution), else the run of the asset's latest materialization."""
    run_id = None
    upstream = context.upstream_output
    if upstream is not None:
        try:
            run_id = upstream.run_id
        except dg.DagsterInvariantViolationError:
            run_id = None
        if run_id == RUN_ID_PLACEHOLDER:  # loaded across runs: Dagster does not say which run
            run_id = None
    if run_id is None:
        run_id = latest_run_id(context.instance, context.asset_key)
    if run_id is None:
        raise StorageError(
            f"{context.asset_key.to_user_string()} has never been materialized: run meta_full "
            "(or materialize it) first"
        )
    return publication.run_scoped_dir(root, run_id, context.asset_key.path)


def publish_after_report(context: dg.OutputContext, root: Path) -> None:
    """Called once this run's `meta/report` bundle is stored: point `published.json` at the
    report and the meta outputs it was computed from, then prune old run-scoped outputs."""
    instance = context.step_context.instance  # an OutputContext has no `instance` of its own
    bundles = {}
    for key in META_KEYS:
        own = publication.run_scoped_dir(root, context.run_id, key.path)
        if (own / BUNDLE_MANIFEST).is_file() or key == REPORT_KEY:
            bundles[key.to_user_string()] = own
        else:  # a run that recomputed only part of the meta stages loaded the rest from their latest run
            run_id = latest_run_id(instance, key)
            if run_id is None:
                raise StorageError(f"cannot publish: {key.to_user_string()} was never materialized")
            bundles[key.to_user_string()] = publication.run_scoped_dir(root, run_id, key.path)
    manifest = publication.publish(root, context.run_id, bundles)
    context.log.info(f"published the meta outputs of run {context.run_id}: {manifest['outputs']}")

    protected = {run_id for key in RUN_SCOPED_KEYS if (run_id := latest_run_id(instance, key))}
    protected |= {
        run.run_id
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=list(_UNFINISHED)))
    }
    protected.add(context.run_id)
    pruned = retention.prune_runs(root, settings.keep_runs(), protected)
    if pruned:
        context.log.info(f"retention ({settings.KEEP_RUNS_ENV}={settings.keep_runs()}): pruned runs {pruned}")


_UNFINISHED = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)
