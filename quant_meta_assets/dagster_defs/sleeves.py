"""The `sleeves` asset (one dynamic partition per sleeve, all computed on Ray in one step)
and the blocking check that stops the line when any registered sleeve is not good."""

import dataclasses
import hashlib
import json

import dagster as dg
import pandas as pd
from dagster_ray import RayResource

from quant_meta_assets.dagster_defs.instance_queries import latest_sleeve_states
from quant_meta_assets.dagster_defs.partitions import sleeve_partitions

CODE_VERSION = "1"


def frame_hash(*frames: pd.DataFrame | pd.Series) -> str:
    """Content hash of pandas objects (values and index): the data version of a stored output."""
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def config_hash(profile) -> str:
    """Hash of everything in a sleeve's registry entry that changes its output."""
    fields = {k: v for k, v in dataclasses.asdict(profile).items() if k not in ("timeout_s", "max_retries")}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _sleeve_metadata(record: dict, profile, prices_hash: str) -> dict:
    metadata = {
        "status": record["status"],
        "config_hash": config_hash(profile),
        "prices_hash": prices_hash,
        "error": record.get("error") or "",
        "runtime_s": dg.FloatMetadataValue(float(record.get("runtime_s") or 0.0)),
        "start": record.get("start") or "",
        "end": record.get("end") or "",
    }
    returns = record.get("returns")
    if record["status"] == "success" and returns is not None:
        live = returns.dropna()
        metadata["n_days"] = dg.IntMetadataValue(int(live.size))
        metadata["total_return"] = dg.FloatMetadataValue(float((1.0 + live).prod() - 1.0))
        metadata["data_hash"] = frame_hash(returns, record["weights"])
    return metadata


@dg.asset(
    partitions_def=sleeve_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    code_version=CODE_VERSION,
    group_name="sleeves",
    kinds={"ray", "pandas"},
    description="Daily returns and weights of each strategy sleeve, computed in parallel on Ray. "
    "A failed sleeve is stored with its status and error (and no data); the check below stops the line.",
)
def sleeves(context: dg.AssetExecutionContext, ray_cluster: RayResource) -> dict:
    from quant_meta_assets.compute import RayComputeEngine
    from quant_meta_assets.dagster_defs.resources import connect_ray
    from quant_meta_assets.prices import load_prices
    from quant_meta_assets.registry import load_registry

    profiles = {p.name: p for p in load_registry()}
    keys = list(context.partition_keys)
    unknown = [k for k in keys if k not in profiles]
    if unknown:
        raise dg.Failure(
            description=f"partitions {unknown} are not in the sleeve registry (known: {list(profiles)}); "
            "the registry sensor removes stale partitions"
        )
    prices = load_prices()
    prices_hash = frame_hash(prices)
    engine = RayComputeEngine()
    connect_ray(ray_cluster, context, engine)
    records = engine.execute_sleeves([profiles[k] for k in keys], prices)
    for record in records:
        metadata = _sleeve_metadata(record, profiles[record["sleeve"]], prices_hash)
        context.add_asset_metadata(metadata, partition_key=record["sleeve"])
        if record["status"] != "success":
            context.log.error(f"sleeve {record['sleeve']} failed: {record.get('error')}")
    ok = sum(r["status"] == "success" for r in records)
    context.log.info(f"{ok}/{len(records)} sleeves succeeded on Ray")
    return {r["sleeve"]: r for r in records}


@dg.asset_check(
    asset=sleeves,
    name="all_sleeves_succeeded",
    blocking=True,
    description="Stop the line: fails (ERROR, blocking) if any registered sleeve failed, errored or was "
    "never materialized, naming each one with its error.",
)
def all_sleeves_succeeded(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    from quant_meta_assets.registry import load_registry

    names = [p.name for p in load_registry()]
    states = latest_sleeve_states(context.instance, names)
    bad = [s for s in states if not s.ok]
    lines = [f"- {s.sleeve}: {s.failure_reason()}" for s in bad]
    description = (
        f"{len(bad)} of {len(states)} sleeves are not good; meta stages blocked:\n" + "\n".join(lines)
        if bad
        else f"all {len(states)} sleeves succeeded"
    )
    if bad:
        context.log.error(description)
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "failed_sleeves": dg.MarkdownMetadataValue(
                "| sleeve | error |\n|---|---|\n"
                + "\n".join(f"| {s.sleeve} | {s.failure_reason().replace('|', '/')} |" for s in bad)
                if bad
                else "none"
            ),
            "n_failed": dg.IntMetadataValue(len(bad)),
            "n_sleeves": dg.IntMetadataValue(len(states)),
            **{f"error/{s.sleeve}": s.failure_reason() for s in bad},
        },
    )
