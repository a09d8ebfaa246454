"""Reading every sleeve's latest record from the Dagster instance: the bulk read the check, the
gate and the sensors use (two queries) vs one query per sleeve (the previous design), same run.

    .venv/bin/python bench/bench_sleeve_status.py [N_SLEEVES]
"""

from __future__ import annotations

import sys
import time

import dagster as dg

from quant_meta_assets.dagster_defs.instance_queries import SLEEVES_KEY, latest_stored_sleeves


def per_sleeve(instance: dg.DagsterInstance, names: list[str]) -> int:
    found = 0
    for name in names:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SLEEVES_KEY, asset_partitions=[name]), limit=1
        ).records
        found += bool(records)
    return found


def main(n: int) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        names = [f"s{i:05d}" for i in range(n)]
        for name in names + names[: n // 10]:  # some sleeves materialized twice
            instance.report_runless_asset_event(dg.AssetMaterialization(
                "sleeves", partition=name, metadata={"status": "success", "config_hash": "c", "prices_hash": "p"}
            ))
        rows = []
        for label, fn in (("bulk (2 queries)", lambda: len(latest_stored_sleeves(instance, names))),
                          ("one query per sleeve", lambda: per_sleeve(instance, names))):
            started = time.perf_counter()
            found = fn()
            rows.append((label, time.perf_counter() - started, found))
        base = rows[0][1]
        print(f"{n} sleeves, {n + n // 10} materializations (in-memory SQLite instance)")
        print(f"{'read':<22}{'seconds':>10}{'found':>8}{'x bulk':>9}")
        for label, seconds, found in rows:
            print(f"{label:<22}{seconds:>10.3f}{found:>8}{seconds / base:>9.1f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
