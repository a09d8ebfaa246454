"""Helpers for tests that drive real Dagster: whole-graph materialization, registries, digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg

from quant_meta_assets.dagster_defs.definitions import defs
from quant_meta_assets.dagster_defs.meta_assets import META_KEYS
from quant_meta_assets.dagster_defs.partitions import SLEEVES_PARTITIONS_NAME, partition_range_tags

META_DIRS = ("meta/returns", "meta/optimize", "meta/flatten", "meta/report")


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest); {} when ``root`` is absent."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def meta_digest(storage: Path) -> dict[str, dict[str, str]]:
    return {sub: tree_digest(storage / sub) for sub in META_DIRS}


def meta_materialization_ids(instance: dg.DagsterInstance) -> dict[str, int | None]:
    """Latest materialization storage id of each meta asset (None = never materialized)."""
    out = {}
    for key in META_KEYS:
        records = instance.fetch_materializations(key, limit=1).records
        out[key.to_user_string()] = records[0].storage_id if records else None
    return out


def meta_materialization_count(instance: dg.DagsterInstance) -> int:
    return sum(len(instance.fetch_materializations(key, limit=1000).records) for key in META_KEYS)


def use_registry(path: Path, body: str, monkeypatch, instance: dg.DagsterInstance) -> list[str]:
    """Write a registry, point QUANT_META_SLEEVES at it and add its sleeves as partitions."""
    import textwrap

    from quant_meta_assets.registry import load_registry

    path.write_text(textwrap.dedent(body))
    monkeypatch.setenv("QUANT_META_SLEEVES", str(path))
    names = [p.name for p in load_registry()]
    existing = set(instance.get_dynamic_partitions(SLEEVES_PARTITIONS_NAME))
    new = [n for n in names if n not in existing]
    if new:
        instance.add_dynamic_partitions(SLEEVES_PARTITIONS_NAME, new)
    return names


def materialize_all(instance: dg.DagsterInstance, names: list[str]) -> dg.ExecuteInProcessResult:
    """The whole graph (every sleeve partition, the check, the four meta assets), like meta_full."""
    return dg.materialize(
        defs.resolve_asset_graph().assets_defs,
        instance=instance,
        selection=dg.AssetSelection.all(),
        tags=partition_range_tags(instance, names),
        raise_on_error=False,
    )


def check_evaluation(result: dg.ExecuteInProcessResult):
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 1, evaluations
    return evaluations[0]
