"""What the gate and the publication step cost at book size: the bulk sleeve-state read, the
lineage of the four meta outputs (derived and checked against today's sleeve bundles), and the
pointer write, for N registered sleeves. Medians of --repeats runs, one table.

    .venv/bin/python bench/bench_publication.py [--sleeves 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg


def main(n: int, repeats: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_publication_"))
    registry = tmp / "sleeves.yaml"
    registry.write_text("sleeves:\n" + "".join(f"  - name: s{i:05d}\n    strategy: equal_weight\n" for i in range(n)))
    os.environ["QUANT_META_SLEEVES"] = str(registry)
    from quant_meta_assets.dagster_defs.instance_queries import current_prices_hash, sleeve_statuses
    from quant_meta_assets.publishing import lineage, snapshot
    from quant_meta_assets.publishing.snapshot import META_OUTPUTS
    from quant_meta_assets.sleeves.registry import load_registry
    from quant_meta_assets.sleeves.status import code_hash, config_hash
    from quant_meta_assets.storage import BUNDLE_MANIFEST

    profiles = load_registry()
    prices_hash = current_prices_hash()
    timings: dict[str, list[float]] = {"sleeve states (2 bulk queries)": [], "lineage: derive + check x4": [],
                                      "publish (checks + pointer)": []}
    with dg.DagsterInstance.ephemeral() as instance:
        for p in profiles:
            instance.report_runless_asset_event(dg.AssetMaterialization("sleeves", partition=p.name, metadata={
                "status": "success", "config_hash": config_hash(p), "code_hash": code_hash(p),
                "prices_hash": prices_hash, "data_hash": f"d{p.name}", "as_of": "2022-12-28"}))
        current = {p.name: lineage.sleeve_ref("r0", f"d{p.name}") for p in profiles}
        records = [{"sleeve": p.name, "run_id": "r0", "data_hash": f"d{p.name}", "prices_hash": prices_hash,
                    "as_of": "2022-12-28"} for p in profiles]
        for k in range(repeats):
            started = time.perf_counter()
            statuses = sleeve_statuses(instance, prices_hash=prices_hash)
            timings["sleeve states (2 bulk queries)"].append(time.perf_counter() - started)
            assert all(s.ok for s in statuses)

            run = f"m{k}"
            started = time.perf_counter()
            returns = lineage.for_sleeves("meta/returns", run, records)
            optimize = lineage.derive("meta/optimize", run, {"meta/returns": returns})
            flatten = lineage.derive("meta/flatten", run, {"meta/optimize": optimize, "meta/returns": returns})
            report = lineage.derive("meta/report", run, {"meta/returns": returns, "meta/optimize": optimize,
                                                          "meta/flatten": flatten})
            members = {"meta/returns": returns, "meta/optimize": optimize, "meta/flatten": flatten, "meta/report": report}
            for key, found in members.items():
                lineage.check_current(found, key, current, prices_hash)
            timings["lineage: derive + check x4"].append(time.perf_counter() - started)

            bundles = {}
            for key in META_OUTPUTS:
                directory = snapshot.run_scoped_dir(tmp / "store", run, key.split("/"))
                directory.mkdir(parents=True)
                (directory / BUNDLE_MANIFEST).write_text("{}")
                bundles[key] = directory
            started = time.perf_counter()
            manifest, refused = snapshot.publish(tmp / "store", run, bundles, members)
            timings["publish (checks + pointer)"].append(time.perf_counter() - started)
            assert refused is None and manifest["generation"] == k + 1
    size = snapshot.published_path(tmp / "store").stat().st_size
    print(f"{n} registered sleeves, median of {repeats} runs; published.json {size / 1e3:.0f} kB")
    print(f"{'step':<34} {'median ms':>10} {'max ms':>8}")
    for label, values in timings.items():
        print(f"{label:<34} {statistics.median(values) * 1e3:>10.1f} {max(values) * 1e3:>8.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sleeves", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    main(args.sleeves, args.repeats)
