"""`meta/published`: the publication step, after every meta output of the run is recorded.

Publication is a step Dagster sees, never a side effect of storing an output: it runs last in
`meta_full` and `meta_job`, after `meta/report`, so a run that fails, is canceled or is still
running never reaches it. The step
1. finds the `meta/report` this run stored (or, for a re-execution, the one its parent stored);
2. reads the lineage stored with it and with the three bundles it was computed from;
3. passes the gate (every sleeve good and current, the set of the current lineage);
4. publishes through the pure core (publishing.snapshot.publish: one lineage, never older than
   the published set; an older set is *not published*, with the reason in the log and metadata);
5. prunes old run directories (publishing.retention). If anything fails after the pointer was
   switched, the previous pointer is put back before the step fails.

Everything the step reads of the instance is read in bulk (one query for all sleeves).
"""


from pathlib import Path

import dagster as dg

from quant_meta_assets import settings
from quant_meta_assets.code_versions import asset_code_version
from quant_meta_assets.dagster_defs.gate import require_current
from quant_meta_assets.dagster_defs.instance_queries import SLEEVES_KEY
from quant_meta_assets.dagster_defs.meta_assets import GROUP, REPORT_KEY
from quant_meta_assets.dagster_defs.prices import PRICES_KEY
from quant_meta_assets.errors import LineageError, StorageError
from quant_meta_assets.publishing import lineage, retention
from quant_meta_assets.publishing import snapshot as publication
from quant_meta_assets.storage import read_bundle

PUBLISHED_KEY = dg.AssetKey(["meta", "published"])
META_KEYS = [dg.AssetKey(key.split("/")) for key in publication.META_OUTPUTS]

_UNFINISHED = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)


def _stored_lineage(directory: Path) -> dict | None:
    _frames, meta = read_bundle(directory, keys=[])  # the manifest only, no frame is read
    found = meta.get(lineage.KEY)
    return dict(found) if isinstance(found, dict) else None


def _report_dir(context: dg.AssetExecutionContext, root: Path) -> Path:
    """This run's stored meta/report, else (a re-execution of this step alone) its parents'."""
    run = context.run
    while run is not None:
        directory = publication.run_scoped_dir(root, run.run_id, REPORT_KEY.path)
        if directory.is_dir():
            return directory
        run = context.instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    raise dg.Failure(
        description="not published: this run (and the runs it re-executes) stored no meta/report; "
        "run meta_full or meta_job"
    )


def _members(root: Path, report_dir: Path) -> tuple[dict[str, Path], dict[str, dict]]:
    """The four bundles of the set the report was computed from, and their stored lineage."""
    report = _stored_lineage(report_dir)
    if not report:
        raise LineageError(f"{report_dir.name}: meta/report of run {report_dir.parent.parent.name} records no lineage")
    bundles = {"meta/report": report_dir}
    members = {"meta/report": report}
    for key, run_id in report["inputs"].items():
        bundles[key] = publication.run_scoped_dir(root, run_id, key.split("/"))
        members[key] = _stored_lineage(bundles[key])
    return bundles, members


def _protected_runs(instance: dg.DagsterInstance, own_run: dg.DagsterRun) -> set[str]:
    """Runs retention must keep besides the published set's: the latest materialization of every
    run-scoped asset (each sleeve partition's included, one bulk query), the runs in progress
    and the runs they re-execute."""
    protected = {own_run.run_id}
    for key in (PRICES_KEY, *META_KEYS):
        records = instance.fetch_materializations(key, limit=1).records
        if records:
            protected.add(records[0].run_id)
    partitions = set(instance.get_dynamic_partitions("sleeves"))
    if partitions:
        ids = instance.event_log_storage.get_latest_storage_id_by_partition(
            SLEEVES_KEY, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions
        )
        if ids:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=SLEEVES_KEY, storage_ids=list(ids.values())), limit=len(ids)
            ).records
            protected |= {r.run_id for r in records}
    for run in [own_run, *instance.get_runs(filters=dg.RunsFilter(statuses=list(_UNFINISHED)))]:
        protected.add(run.run_id)
        if run.parent_run_id:
            protected.add(run.parent_run_id)
        if run.root_run_id:
            protected.add(run.root_run_id)
    return protected


@dg.asset(
    key=PUBLISHED_KEY,
    deps=[REPORT_KEY],
    group_name=GROUP,
    code_version=asset_code_version("meta/published"),
    kinds={"json"},
    required_resource_keys={"io_manager"},
    description="Publishes the run's meta set to published.json, the one path consumers read, once every "
    "meta output is recorded: only a set of one lineage (one prices snapshot, today's sleeve bundles, each "
    "output computed from the others) and never one older than the published set.",
)
def meta_published(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    root: Path = context.resources.io_manager.root()
    report_dir = _report_dir(context, root)
    try:
        bundles, members = _members(root, report_dir)
    except (LineageError, StorageError) as exc:
        raise dg.Failure(description=f"not published: {exc}") from exc
    require_current(context, members)  # every sleeve good and current, every member of the current line
    keep = settings.keep_runs()  # a bad setting fails here, before the pointer moves
    previous = publication.published_manifest(root)
    try:
        manifest, refused = publication.publish(root, context.run_id, bundles, members)
    except (LineageError, StorageError) as exc:
        raise dg.Failure(description=f"not published: {exc}") from exc
    if refused is not None:
        context.log.warning(refused)
        return dg.MaterializeResult(metadata={
            "published": False, "reason": refused, "as_of": members["meta/report"]["as_of"],
            "published_run": manifest["run_id"], "published_as_of": str(manifest.get("as_of", "")),
        })
    try:
        pruned = retention.prune_runs(root, keep, _protected_runs(context.instance, context.run))
        context.log.info(
            f"published generation {manifest['generation']} (as of {manifest['as_of']}): "
            f"{manifest['outputs']}" + (f"; retention ({settings.KEEP_RUNS_ENV}={keep}) pruned {pruned}" if pruned else "")
        )
        return dg.MaterializeResult(metadata={
            "published": True,
            "generation": dg.IntMetadataValue(manifest["generation"]),
            "as_of": manifest["as_of"],
            "prices_hash": manifest["prices_hash"],
            "runs": dg.JsonMetadataValue(manifest["runs"]),
            "sleeves_digest": lineage.digest(manifest["sleeves"]),
            "n_sleeves": dg.IntMetadataValue(len(manifest["sleeves"])),
            "pointer": dg.PathMetadataValue(str(publication.published_path(root))),
        })
    except BaseException:
        publication.restore(root, previous)  # the step fails: readers keep the previous set
        raise
