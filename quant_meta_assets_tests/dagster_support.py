"""Helpers for tests that drive real Dagster: whole-graph materialization, registries, digests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg

from quant_meta_assets.dagster_defs.definitions import defs
from quant_meta_assets.dagster_defs.meta_assets import META_KEYS
from quant_meta_assets.dagster_defs.partitions import SLEEVES_PARTITIONS_NAME

META_DIRS = ("meta/returns", "meta/optimize", "meta/flatten", "meta/report")  # the published set's asset keys


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest); {} when ``root`` is absent."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def published_dirs(storage: Path) -> dict[str, Path]:
    """Asset key -> the bundle directory the published snapshot points to ({} if nothing is published)."""
    from quant_meta_assets.publishing.snapshot import published_manifest

    manifest = published_manifest(storage)
    return {key: storage / rel for key, rel in manifest["outputs"].items()} if manifest else {}


def meta_digest(storage: Path) -> dict[str, dict[str, str]]:
    """What readers of the meta outputs see: the published pointer and the four bundles it names."""
    dirs = published_dirs(storage)
    pointer = storage / "published.json"
    return {
        "published.json": {"sha256": hashlib.sha256(pointer.read_bytes()).hexdigest()} if pointer.is_file() else {},
        **{sub: tree_digest(dirs[sub]) if sub in dirs else {} for sub in META_DIRS},
    }


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

    from quant_meta_assets.sleeves.registry import load_registry

    path.write_text(textwrap.dedent(body))
    monkeypatch.setenv("QUANT_META_SLEEVES", str(path))
    names = [p.name for p in load_registry()]
    existing = set(instance.get_dynamic_partitions(SLEEVES_PARTITIONS_NAME))
    new = [n for n in names if n not in existing]
    if new:
        instance.add_dynamic_partitions(SLEEVES_PARTITIONS_NAME, new)
    return names


def materialize_all(instance: dg.DagsterInstance, names: list[str]) -> dg.ExecuteInProcessResult:
    """The whole graph like meta_full: no partition tags, so the sleeves step runs every registered sleeve."""
    return dg.materialize(
        defs.resolve_asset_graph().assets_defs,
        instance=instance,
        selection=dg.AssetSelection.all(),
        raise_on_error=False,
    )


def check_evaluation(result: dg.ExecuteInProcessResult):
    evaluations = result.get_asset_check_evaluations()
    assert len(evaluations) == 1, evaluations
    return evaluations[0]


def report_sleeve(instance: dg.DagsterInstance, name: str, status: str = "success", **overrides) -> None:
    """Record a runless materialization of one sleeve partition as the sleeves asset would: with the
    config hash of its current registry entry and the current prices hash, unless overridden."""
    from quant_meta_assets.dagster_defs.instance_queries import current_prices_hash
    from quant_meta_assets.sleeves.registry import load_registry
    from quant_meta_assets.sleeves.status import code_hash, config_hash

    profile = {p.name: p for p in load_registry()}[name]
    metadata = {"status": status, "error": "" if status == "success" else "boom",
                "config_hash": config_hash(profile), "code_hash": code_hash(profile),
                "prices_hash": current_prices_hash(), **overrides}
    instance.report_runless_asset_event(dg.AssetMaterialization("sleeves", partition=name, metadata=metadata))


def step_failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """step key -> failure text (the error and, for a dg.Failure, its description)."""
    out = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            data = event.step_failure_data
            user = data.user_failure_data.description if data.user_failure_data else ""
            out[event.step_key] = f"{data.error}\n{user or ''}"
    return out


def gate_message(result: dg.ExecuteInProcessResult) -> str:
    """The stop-the-line gate's message: meta/returns failed before storing anything."""
    failures = step_failures(result)
    assert "meta__returns" in failures, failures
    return failures["meta__returns"]
