"""The `sleeves` dynamic partitions. The registry is the source of truth; the instance's
partitions follow it, changed only by the registry sensor (adds and deletes) and by a run
without partition tags (it adds the registered sleeves it is about to materialize). Loading
the code location never touches them."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

SLEEVES_PARTITIONS_NAME = "sleeves"
sleeve_partitions = dg.DynamicPartitionsDefinition(name=SLEEVES_PARTITIONS_NAME)


def partition_changes(registered: Sequence[str], existing: Sequence[str]) -> tuple[list[str], list[str]]:
    """(to_add, to_remove) that make the instance's partitions equal the registry's sleeves."""
    existing_set, registered_set = set(existing), set(registered)
    return [n for n in registered if n not in existing_set], [n for n in existing if n not in registered_set]
