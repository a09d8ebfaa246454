"""What the Dagster instance knows about each sleeve partition: one query helper for the
blocking check, the freshness sensor and the report's lineage table."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

SLEEVES_KEY = dg.AssetKey("sleeves")


@dataclass(frozen=True)
class SleeveState:
    sleeve: str
    materialized: bool
    status: str | None = None  # "success" | "error" | None when never materialized
    error: str | None = None
    run_id: str | None = None
    timestamp: float | None = None
    storage_id: int | None = None
    code_version: str | None = None
    data_version: str | None = None
    start: str | None = None
    end: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "success"

    def failure_reason(self) -> str:
        if not self.materialized:
            return "never materialized"
        return self.error or f"status {self.status!r}"


def _text(metadata: dict, key: str) -> str | None:
    value = metadata.get(key)
    if value is None:
        return None
    return str(getattr(value, "value", value)) if getattr(value, "value", value) is not None else None


def latest_sleeve_states(instance: dg.DagsterInstance, sleeves: Sequence[str]) -> list[SleeveState]:
    """The latest materialization of each sleeve partition and the status it recorded."""
    states = []
    for sleeve in sleeves:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SLEEVES_KEY, asset_partitions=[sleeve]), limit=1
        ).records
        if not records:
            states.append(SleeveState(sleeve=sleeve, materialized=False))
            continue
        record = records[0]
        materialization = record.asset_materialization
        metadata = dict(materialization.metadata) if materialization else {}
        tags = (materialization.tags or {}) if materialization else {}
        states.append(
            SleeveState(
                sleeve=sleeve,
                materialized=True,
                status=_text(metadata, "status"),
                error=_text(metadata, "error"),
                run_id=record.run_id,
                timestamp=record.timestamp,
                storage_id=record.storage_id,
                # the asset's code version plus the hash of the sleeve's registry entry; the data
                # version is the content hash of the stored returns and weights
                code_version="/".join(
                    v for v in (tags.get("dagster/code_version"), _text(metadata, "config_hash")) if v
                ) or None,
                data_version=_text(metadata, "data_hash") or tags.get("dagster/data_version"),
                start=_text(metadata, "start"),
                end=_text(metadata, "end"),
            )
        )
    return states


def latest_materialization_storage_id(instance: dg.DagsterInstance, asset_key: dg.AssetKey) -> int | None:
    records = instance.fetch_materializations(asset_key, limit=1).records
    return records[0].storage_id if records else None
