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

`prices` and the four meta assets are run-scoped instead (`runs/<run id>/<asset key>`, see
dagster_defs/publishing.py): a run never rewrites another run's outputs, and a stored
`meta/report` switches the published snapshot (`published.json`) to its run's set.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from quant_meta_assets import settings
from quant_meta_assets.bundle_values import _NEST, join_value, split_value  # noqa: F401  (re-exported)
from quant_meta_assets.dagster_defs.publishing import REPORT_KEY, is_run_scoped, publish_after_report, source_dir
from quant_meta_assets.errors import StorageError
from quant_meta_assets.publishing.snapshot import run_scoped_dir
from quant_meta_assets.storage import (
    StagedBundle,
    StoredBundle,
    commit_bundles,
    discard_bundle,
    read_bundle,
    safe_child,
    stage_bundle,
    write_bundle,
)


class PerPartition(dict):
    """``{partition_key: value}`` of a partitioned asset computed by a run without partition tags
    (the run resolved its partitions itself): stored one bundle per key, as a partitioned run would."""


def _leftovers_of(directory: Path) -> bool:
    """Whether a writer's tmp/trash sibling exists (a swap in progress or interrupted): then the
    bundle counts as present and read_bundle decides (it retries, then reports it missing)."""
    prefixes = (f".{directory.name}.tmp-", f".{directory.name}.trash-")  # storage.write_bundle's siblings
    return directory.parent.is_dir() and any(p.name.startswith(prefixes) for p in directory.parent.iterdir())


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores every asset under `base_dir/<asset key path>[/<partition>]`."""

    base_dir: str = ""

    def root(self) -> Path:
        """The storage root of every asset (and of the report's HTML): base_dir, else the settings' root."""
        return Path(self.base_dir) if self.base_dir else settings.storage_root()

    def _dir(self, asset_key: dg.AssetKey, partition: str | None = None) -> Path:
        parts = [*asset_key.path, *([partition] if partition is not None else [])]
        return safe_child(self.root(), *parts)

    def stage_partition(
        self, asset_key: dg.AssetKey, partition: str, value: Any, encoded: Mapping[str, tuple[str, bytes]] | None = None
    ) -> StagedBundle:
        """Write one partition's value now, next to its bundle, without making it current; return
        it from the asset (in the `{partition_key: value}` mapping) and `handle_output` commits it.
        ``encoded``: frames already encoded (`storage.encode_frame`), e.g. by a Ray worker."""
        frames, meta = split_value(value)
        encoded = dict(encoded or {})
        meta = {k: v for k, v in meta.items() if k not in encoded}
        return stage_bundle(self._dir(asset_key, partition), {**frames, **encoded}, meta)

    def _store_partitions(self, asset_key: dg.AssetKey, obj: Mapping[str, Any], keys: list[str]) -> None:
        """One bundle per key: a staged value is committed, a plain one written (each atomically);
        if anything fails, what was staged is discarded and the previous bundles stay current."""
        staged = {k: v for k, v in obj.items() if isinstance(v, StagedBundle)}
        try:
            for key in keys:
                target = self._dir(asset_key, key)
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
        if is_run_scoped(context.asset_key):
            # runs/<run id>/...: never rewritten by a later run; meta/report then publishes the set
            write_bundle(run_scoped_dir(self.root(), context.run_id, context.asset_key.path), *split_value(obj))
            if context.asset_key == REPORT_KEY:
                publish_after_report(context, self.root())
            return
        if isinstance(obj, PerPartition):
            self._store_partitions(context.asset_key, obj, list(obj))
            return
        if context.has_asset_partitions:
            keys = context.asset_partition_keys
            if not isinstance(obj, Mapping) or set(keys) - set(obj):
                raise StorageError(
                    f"partitioned asset {context.asset_key.to_user_string()} must return "
                    f"{{partition_key: value}} covering {list(keys)}"
                )
            self._store_partitions(context.asset_key, obj, list(keys))
            return
        write_bundle(self._dir(context.asset_key), *split_value(obj))

    def load_input(self, context: dg.InputContext) -> Any:
        asset_key = context.asset_key
        if is_run_scoped(asset_key):
            return join_value(*read_bundle(source_dir(context, self.root())))
        if context.has_asset_partitions:
            # every partition the instance knows is requested, stale ones (no longer registered,
            # never stored) included: a partition with no bundle at all is left out, and the
            # consumer decides (registered_records names each *registered* sleeve with no output,
            # so no partial set can pass). A bundle that exists but cannot be read still raises.
            # A key that is not a valid sleeve name can never be registered (one can be added
            # from the UI): it is stale by construction and never read.
            from quant_meta_assets.registry import SLEEVE_NAME_PATTERN

            values = {}
            for key in context.asset_partition_keys:
                if SLEEVE_NAME_PATTERN.fullmatch(key) is None:
                    continue
                directory = self._dir(asset_key, key)
                if not directory.exists() and not _leftovers_of(directory):
                    continue
                bundle = StoredBundle(directory)
                nested = any(_NEST in k for k in bundle)  # a flat record loads lazily
                values[key] = join_value(*read_bundle(directory)) if nested else bundle
            return values
        return join_value(*read_bundle(self._dir(asset_key)))
