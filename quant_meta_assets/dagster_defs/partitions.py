"""The `sleeves` dynamic partitions and their sync with the registry (the source of truth)."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

SLEEVES_PARTITIONS_NAME = "sleeves"
sleeve_partitions = dg.DynamicPartitionsDefinition(name=SLEEVES_PARTITIONS_NAME)


def partition_changes(registered: Sequence[str], existing: Sequence[str]) -> tuple[list[str], list[str]]:
    """(to_add, to_remove) that make the instance's partitions equal the registry's sleeves."""
    existing_set, registered_set = set(existing), set(registered)
    return [n for n in registered if n not in existing_set], [n for n in existing if n not in registered_set]


def sync_sleeve_partitions(instance: dg.DagsterInstance, registered: Sequence[str]) -> tuple[list[str], list[str]]:
    """Add and delete partitions in the instance so they match the registry; returns the changes."""
    to_add, to_remove = partition_changes(registered, instance.get_dynamic_partitions(SLEEVES_PARTITIONS_NAME))
    if to_add:
        instance.add_dynamic_partitions(SLEEVES_PARTITIONS_NAME, to_add)
    for name in to_remove:
        instance.delete_dynamic_partition(SLEEVES_PARTITIONS_NAME, name)
    return to_add, to_remove


def partition_range_tags(instance: dg.DagsterInstance | None, registered: Sequence[str]) -> dict[str, str]:
    """Run tags selecting every registered sleeve as one range (Dagster orders by insertion)."""
    if not registered:
        return {}
    ordered = list(registered)
    if instance is not None:
        in_instance = instance.get_dynamic_partitions(SLEEVES_PARTITIONS_NAME)
        ordered = [n for n in in_instance if n in set(registered)] or ordered
    return {
        "dagster/asset_partition_range_start": ordered[0],
        "dagster/asset_partition_range_end": ordered[-1],
    }
