"""What the Dagster instance knows about the sleeves, read in bulk, fed to the one pure answer
(`sleeves.status.assess_sleeves`) that the blocking check, the meta gate, both sensors and the
report's lineage share.

Two queries whatever the number of sleeves: the latest materialization storage id of every
partition (one GROUP BY), then those records by storage id.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from quant_meta_assets.sleeves.status import SleeveStatus, StoredSleeve, assess_sleeves, identity

SLEEVES_KEY = dg.AssetKey("sleeves")


def _text(metadata, key: str) -> str | None:
    value = metadata.get(key)
    value = getattr(value, "value", value)
    return None if value is None or value == "" else str(value)


def _stored(record: dg.EventLogRecord) -> StoredSleeve:
    materialization = record.asset_materialization
    metadata = dict(materialization.metadata) if materialization else {}
    tags = (materialization.tags or {}) if materialization else {}
    return StoredSleeve(
        status=_text(metadata, "status") or "unknown",
        config_hash=_text(metadata, "config_hash"),
        prices_hash=_text(metadata, "prices_hash"),
        error=_text(metadata, "error"),
        run_id=record.run_id,
        timestamp=record.timestamp,
        storage_id=record.storage_id,
        # the asset's code version plus the hash of the sleeve's registry entry; the data
        # version is the content hash of the stored returns and weights
        code_version="/".join(v for v in (tags.get("dagster/code_version"), _text(metadata, "config_hash")) if v)
        or None,
        data_version=_text(metadata, "data_hash") or tags.get("dagster/data_version"),
        start=_text(metadata, "start"),
        end=_text(metadata, "end"),
        code_hash=_text(metadata, "code_hash"),
    )


def latest_stored_sleeves(instance: dg.DagsterInstance, sleeves: Sequence[str]) -> dict[str, StoredSleeve]:
    """The latest materialization record of each named sleeve partition (absent = never)."""
    if not sleeves:
        return {}
    ids = instance.event_log_storage.get_latest_storage_id_by_partition(
        SLEEVES_KEY, dg.DagsterEventType.ASSET_MATERIALIZATION, set(sleeves)
    )
    if not ids:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SLEEVES_KEY, storage_ids=list(ids.values())), limit=len(ids)
    ).records
    by_id = {r.storage_id: r for r in records}
    return {name: _stored(by_id[i]) for name, i in ids.items() if i in by_id}


def current_prices_hash(instance: dg.DagsterInstance | None = None) -> str:
    """The prices every sleeve must have been computed on: the content hash of the price source's
    validated frame *now* (prices.price_source: the file is re-parsed only when its bytes
    changed). The same hash is the observable source's data version and the `prices` snapshot's,
    so a price file changed after a run makes every sleeve stale at once, for the gate, both
    sensors and the UI. ``instance`` is accepted for the callers' symmetry; it is not read."""
    from quant_meta_assets.prices import price_source

    return price_source().content_hash


def sleeve_statuses(
    instance: dg.DagsterInstance, profiles=None, prices_hash: str | None = None
) -> list[SleeveStatus]:
    """The state of every registered sleeve (registry, code and prices read now unless given).

    Raises RegistryError / PriceDataError when the registry or prices cannot be read.
    """
    if profiles is None:
        from quant_meta_assets.sleeves.registry import load_registry

        profiles = load_registry()
    if prices_hash is None:
        prices_hash = current_prices_hash(instance)
    registered = {p.name: identity(p) for p in profiles}
    stored = latest_stored_sleeves(instance, list(registered))
    return assess_sleeves(registered, prices_hash, stored, _price_changes(stored, prices_hash))


def _price_changes(stored, prices_hash: str) -> dict:
    """How today's prices differ from each older prices hash the sleeves were computed on (an
    append, a revision, ...), read from the runs' stored snapshots; only when some sleeve is on
    older prices (then the price file is read once). Best effort: what cannot be read is left
    out and the reason stays "prices changed"."""
    older = {}
    for record in stored.values():
        if record.status == "success" and record.prices_hash and record.prices_hash != prices_hash and record.run_id:
            older.setdefault(record.prices_hash, record.run_id)
    if not older:
        return {}
    from quant_meta_assets.dagster_defs.prices import stored_price_changes

    return stored_price_changes(older)


def latest_materialization_storage_id(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> int | None:
    records = instance.fetch_materializations(asset_key, limit=1).records
    return records[0].storage_id if records else None
