"""Parquet/JSON IO manager: no pickle, atomic bundles, one directory per asset (partition).

A stored value is a *bundle*: its pandas objects as Parquet files plus `meta.json` for the
rest, swapped in atomically (see storage.write_bundle). The partitioned `sleeves` asset
returns `{partition_key: sleeve_record}` so that a single-run backfill over many partitions
stores each partition in its own bundle; an unpartitioned downstream asset loads
`{partition_key: record}` back. A failed sleeve is stored as a bundle with its status and
error and *no* frames, so stale good-looking data can never outlive a failure.

Book scale: a partition's value may be a `StagedBundle` that the asset already wrote next to
its target while it ran (`stage_partition`), so the asset never holds every partition's data;
`handle_output` then only commits (two renames each). Partitioned inputs load as
`StoredBundle`s: their frames are read when accessed, one at a time, and only those accessed
(`meta/returns` reads each sleeve's `returns` file and nothing else).

Every bundle is run-scoped (`runs/<run id>/<asset key>[/<partition>]`, see
publishing/snapshot.py): a run never rewrites another run's outputs, so a published set can
always be read back exactly as it was. A sleeve partition loads from the run of its latest
materialization (one bulk query for all partitions); `prices` and the meta assets from the
upstream step's run (see dagster_defs/publishing.py). Nothing is published here: the
`meta/published` step does that once every meta output of its run is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from dagster._core.execution.context.output import RUN_ID_PLACEHOLDER

from quant_meta_assets import settings
from quant_meta_assets.bundle_values import _NEST, join_value, split_value  # noqa: F401  (re-exported)
from quant_meta_assets.errors import StorageError
from quant_meta_assets.publishing.snapshot import run_scoped_dir
from quant_meta_assets.storage import (
    StagedBundle,
    StoredBundle,
    commit_bundles,
    discard_bundle,
    read_bundle,
    stage_appended_bundle,
    stage_bundle,
    write_bundle,
)


def source_dir(context: dg.InputContext, root: Path) -> Path:
    """The bundle an unpartitioned input loads: the upstream step's run when Dagster knows it
    (same run, or the parent of a re-execution), else the run of the asset's latest
    materialization. Which run it was is recorded in the value's lineage, so the gate and the
    publication can refuse inputs of another lineage."""
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
        records = context.instance.fetch_materializations(context.asset_key, limit=1).records
        run_id = records[0].run_id if records else None
    if run_id is None:
        raise StorageError(
            f"{context.asset_key.to_user_string()} has never been materialized: run meta_full "
            "(or materialize it) first"
        )
    return run_scoped_dir(root, run_id, context.asset_key.path)


class PerPartition(dict):
    """``{partition_key: value}`` of a partitioned asset computed by a run without partition tags
    (the run resolved its partitions itself): stored one bundle per key, as a partitioned run would."""


def _leftovers_of(directory: Path) -> bool:
    """Whether a writer's tmp/trash sibling exists (a swap in progress or interrupted): then the
    bundle counts as present and read_bundle decides (it retries, then reports it missing)."""
    prefixes = (f".{directory.name}.tmp-", f".{directory.name}.trash-")  # storage.write_bundle's siblings
    return directory.parent.is_dir() and any(p.name.startswith(prefixes) for p in directory.parent.iterdir())


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores every asset under `base_dir/runs/<run id>/<asset key path>[/<partition>]`."""

    base_dir: str = ""

    def root(self) -> Path:
        """The storage root of every asset (and of the report's HTML): base_dir, else the settings' root."""
        return Path(self.base_dir) if self.base_dir else settings.storage_root()

    def _dir(self, run_id: str, asset_key: dg.AssetKey, partition: str | None = None) -> Path:
        """``runs/<run id>/<asset key path>[/<partition>]`` under the root."""
        return run_scoped_dir(self.root(), run_id, [*asset_key.path, *([partition] if partition is not None else [])])

    def stage_partition(
        self,
        run_id: str,
        asset_key: dg.AssetKey,
        partition: str,
        value: Any,
        encoded: Mapping[str, tuple[str, Any]] | None = None,
        extends: Path | None = None,
        replace_from: Mapping[str, Any] | None = None,
    ) -> StagedBundle:
        """Write one partition's value now, next to its bundle, without making it current; return
        it from the asset (in the `{partition_key: value}` mapping) and `handle_output` commits it.
        ``encoded``: frames already encoded (`storage.encode_chunked`), e.g. by a Ray worker.
        ``extends``: a stored bundle (an update's previous one) that the ``encoded`` frames are
        rows to append to (`storage.stage_appended_bundle`: its earlier years are linked, not read)."""
        frames, meta = split_value(value)
        encoded = dict(encoded or {})
        meta = {k: v for k, v in meta.items() if k not in encoded}
        target = self._dir(run_id, asset_key, partition)
        if extends is not None:
            cuts = {k: pd.Timestamp(v) for k, v in (replace_from or {}).items()}
            return stage_appended_bundle(target, extends, encoded, frames, meta, replace_from=cuts)
        return stage_bundle(target, {**frames, **encoded}, meta)

    def _store_partitions(self, run_id: str, asset_key: dg.AssetKey, obj: Mapping[str, Any], keys: list[str]) -> None:
        """One bundle per key: a staged value is committed, a plain one written (each atomically);
        if anything fails, what was staged is discarded and the previous bundles stay current."""
        staged = {k: v for k, v in obj.items() if isinstance(v, StagedBundle)}
        try:
            for key in keys:
                target = self._dir(run_id, asset_key, key)
                if key not in staged:  # a plain value: its own atomic bundle, written now
                    write_bundle(target, *split_value(obj[key]))
                elif staged[key].target != target:
                    raise StorageError(f"staged bundle for {str(staged[key].target)!r} returned as partition {key!r}")
        except BaseException:
            for item in staged.values():
                discard_bundle(item)
            raise
        commit_bundles(staged[k] for k in keys if k in staged)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        if isinstance(obj, PerPartition):
            self._store_partitions(context.run_id, context.asset_key, obj, list(obj))
            return
        if context.has_asset_partitions:
            keys = context.asset_partition_keys
            if not isinstance(obj, Mapping) or set(keys) - set(obj):
                raise StorageError(
                    f"partitioned asset {context.asset_key.to_user_string()} must return "
                    f"{{partition_key: value}} covering {list(keys)}"
                )
            self._store_partitions(context.run_id, context.asset_key, obj, list(keys))
            return
        write_bundle(self._dir(context.run_id, context.asset_key), *split_value(obj))

    def load_input(self, context: dg.InputContext) -> Any:
        asset_key = context.asset_key
        if not context.has_asset_partitions:
            return join_value(*read_bundle(source_dir(context, self.root())))
        # every partition the instance knows is requested, stale ones (no longer registered,
        # never stored) included: a partition with no bundle at all is left out, and the
        # consumer decides (registered_records names each *registered* sleeve with no output,
        # so no partial set can pass). A bundle that exists but cannot be read still raises.
        # A key that is not a valid sleeve name can never be registered (one can be added
        # from the UI): it is stale by construction and never read. Each partition's bundle is
        # the one its latest materialization stored: one bulk query for all of them.
        from quant_meta_assets.dagster_defs.instance_queries import latest_stored_sleeves
        from quant_meta_assets.sleeves.registry import SLEEVE_NAME_PATTERN

        keys = [k for k in context.asset_partition_keys if SLEEVE_NAME_PATTERN.fullmatch(k) is not None]
        latest = latest_stored_sleeves(context.instance, keys)
        values = {}
        for key in keys:
            if key not in latest or not latest[key].run_id:  # a runless event stores no bundle
                continue
            directory = self._dir(latest[key].run_id, asset_key, key)
            if not directory.exists() and not _leftovers_of(directory):
                continue
            bundle = StoredBundle(directory)
            nested = any(_NEST in k for k in bundle)  # a flat record loads lazily
            values[key] = join_value(*read_bundle(directory)) if nested else bundle
        return values
