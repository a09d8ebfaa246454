"""A daily update of `meta_full` against the full run it extends (issue 21: "a trading day costs a day").

    .venv/bin/python bench/bench_incremental.py [--grid 150x100x2520] [--appends 1,5] [--repeats 1]
                                                [--verify | --skip-verify]
    .venv/bin/python bench/bench_incremental.py --grid 1000x500x2520 --skip-verify   # > 20 min

Each grid point is ``sleeves x tickers x days``: seeded factor-model prices
(``synthetic_book.factor_prices``, generated once for ``days + sum(appends)`` rows and sliced, so
every shorter file is an exact prefix) and a seeded registry (``synthetic_book.book_registry``).
In one fresh DAGSTER_HOME and storage, `dagster job execute -m quant_meta_assets -j meta_full` runs
on the first ``days`` rows (full), then again after the price file gained 1 day, then 5 more
(``--appends``; each run an update of the one before). For each run it prints the wall time of the
CLI process, each step's seconds from the Dagster event log, the rest of the wall time outside the
steps (imports, code-location load, run bookkeeping; starting the local Ray is part of the sleeves
step), the driver's peak RSS (VmHWM) and how each
stage says it was made (the sleeves' `mode` per partition; the meta stages' `update_mode`), then
the ratios update / full and the targets: an update <= 0.3x the full run at 150 x 100 x 2520,
<= 0.1x at 1000 x 500 x 2520. With --repeats N the whole sequence runs N times, each in a fresh
instance, and the table and the ratios use the medians.
With --verify (the default up to 200 sleeves x 200 tickers) a fresh full `meta_full` on the final
prices in a new DAGSTER_HOME is compared with the updated instance's published snapshot
(``read_published``): the largest |difference| of the asset weights must be <= 1e-10.
Timings are noisy on a shared 2-core machine: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench_scale import BIN, dir_bytes, fresh_env, run  # bench/ is on sys.path when run as a script

TOLERANCE = 1e-10


def _brief(measured: dict) -> dict:
    """One run's measurements for the log: the sleeves' modes counted, not listed one by one."""
    modes = dict(measured.get("modes") or {})
    if isinstance(modes.get("sleeves"), list):
        modes["sleeves"] = dict(Counter(m.split(" from run")[0] for m in modes["sleeves"]))
    return {**measured, "modes": modes}
TARGETS = {(150, 100, 2520): 0.3, (1000, 500, 2520): 0.1}
VERIFY_UP_TO = 200 * 200  # sleeves x tickers: above it --verify is off unless asked for

# the step keys of meta_full, in order, and their column names
STEPS = {
    "prices": "prices",
    "sleeves": "sleeves",
    "sleeves_all_sleeves_succeeded": "check",
    "meta__returns": "meta/returns",
    "meta__optimize": "meta/optimize",
    "meta__flatten": "meta/flatten",
    "meta__report": "meta/report",
    "meta__published": "publish",
}
OUTSIDE = "outside steps"  # wall - the steps: imports, code-location load, run bookkeeping (Ray starts in `sleeves`)

EVENTS = r"""
import json
import dagster as dg
instance = dg.DagsterInstance.get()
run = instance.get_runs(limit=1)[0]
starts, stages, modes, updates = {}, {}, {}, {}
for entry in instance.all_logs(run.run_id):
    event = entry.dagster_event
    if event is None:
        continue
    if event.step_key is not None and event.event_type_value == "STEP_START":
        starts[event.step_key] = entry.timestamp
    elif event.step_key in starts and event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
        stages[event.step_key] = entry.timestamp - starts[event.step_key]
    elif event.event_type_value == "ASSET_MATERIALIZATION":
        m = event.event_specific_data.materialization
        key, meta = m.asset_key.to_user_string(), m.metadata
        if key == "sleeves":
            if m.partition is None:  # the step's own Output; each partition's record says how it was made
                continue
            modes.setdefault(key, []).append(str(meta["mode"].value) if "mode" in meta else "")
        elif "update_mode" in meta:
            modes[key] = str(meta["update_mode"].value)
            updates[key] = str(meta["update"].value) if "update" in meta else ""
        elif "published" in meta:
            modes[key] = "published" if meta["published"].value else "not published"
print("BENCH_JSON " + json.dumps({"run_id": run.run_id, "status": str(run.status), "stages": stages,
                                  "modes": modes, "updates": updates}))
"""


def parse_point(spec: str) -> tuple[int, int, int]:
    parts = [int(x) for x in spec.lower().split("x")]
    if len(parts) != 3:
        raise SystemExit(f"--grid takes sleeves x tickers x days points (e.g. 150x100x2520), got {spec!r}")
    return parts[0], parts[1], parts[2]


def write_inputs(point: tuple[int, int, int], total_days: int, work: Path):
    """The whole seeded price panel (``total_days`` rows; prefixes are written) and the registry path."""
    from quant_meta_assets.synthetic_book import book_registry, factor_prices

    n, a, _ = point
    panel = factor_prices(a, total_days, seed=1)  # once: factor_prices' draws depend on its length
    registry = work / f"registry_{n}.yaml"
    registry.write_text(book_registry(n, [str(c) for c in panel.columns], seed=1))
    return panel, str(registry)


def write_prefix(panel, rows: int, path: Path) -> None:
    import pandas as pd
    from pandas.testing import assert_frame_equal

    prefix = panel.iloc[:rows]
    prefix.to_parquet(path)
    assert_frame_equal(pd.read_parquet(path), prefix, check_exact=True, check_freq=False)


def sleeve_mode(modes: list[str]) -> str:
    """``update 150/150``, or the full recomputes by reason (``full 150 (no previous result)``)."""
    counts = Counter("update" if m.startswith("update") else m.removeprefix("full recompute: ") or "?" for m in modes)
    parts = [f"update {counts.pop('update')}/{len(modes)}"] if "update" in counts else []
    parts += [f"full {k} ({why[:40]})" for why, k in counts.most_common()]
    return ", ".join(parts) or "-"


def modes_cell(measured: dict) -> str:
    modes = measured.get("modes", {})
    cells = [f"sleeves {sleeve_mode(modes.get('sleeves', []))}"]
    for key in ("meta/returns", "meta/optimize", "meta/flatten", "meta/report"):
        cells.append(f"{key.split('/')[1]} {modes.get(key, '-')}")
    if "meta/published" in modes:
        cells.append(modes["meta/published"])
    return "; ".join(cells)


def meta_run(env: dict[str, str], timeout: float) -> dict:
    cmd = [str(BIN / "dagster"), "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full"]
    measured = run(cmd, env, timeout)
    events = run([sys.executable, "-c", EVENTS], env, 600)
    if events["status"] != "DagsterRunStatus.SUCCESS":
        raise SystemExit(f"meta_full run {events['run_id']} ended {events['status']}")
    measured.update(run_id=events["run_id"], stages=events["stages"], modes=events["modes"], updates=events["updates"])
    measured["stages"][OUTSIDE] = measured["wall"] - sum(events["stages"].values())
    measured["storage_mb"] = dir_bytes(Path(env["QUANT_META_STORAGE"])) / 1e6
    return measured


def compare_published(updated_root: str, fresh_root: str) -> dict[str, float]:
    """Largest |difference| between two instances' published outputs (same dates, tickers, NaNs)."""
    import numpy as np

    from quant_meta_assets.publishing.snapshot import read_published

    a, b = read_published(updated_root), read_published(fresh_root)
    if a.as_of != b.as_of or a.prices_hash != b.prices_hash:
        raise AssertionError(f"published sets differ in as_of/prices: {a.as_of} {a.prices_hash} vs {b.as_of} {b.prices_hash}")
    frames = {
        "asset weights": (a.asset_weights, b.asset_weights),
        "meta weights": (a.outputs["meta/optimize"]["weights"], b.outputs["meta/optimize"]["weights"]),
        "meta returns": (a.outputs["meta/returns"], b.outputs["meta/returns"]),
    }
    out = {}
    for name, (x, y) in frames.items():
        if not (x.index.equals(y.index) and [str(c) for c in x.columns] == [str(c) for c in y.columns]):
            raise AssertionError(f"{name}: the updated and the fresh frames have different dates or columns")
        u, v = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
        if not np.array_equal(np.isnan(u), np.isnan(v)):
            raise AssertionError(f"{name}: NaN at different cells")
        out[name] = float(np.nanmax(np.abs(u - v), initial=0.0))
    out["generation"] = a.generation
    return out


def bench_point(spec: str, appends: list[int], verify: bool | None, repeats: int, timeout: float, work: Path) -> dict:
    point = parse_point(spec)
    n, a, days = point
    label = f"{n} x {a} x {days}"
    verify = (n * a <= VERIFY_UP_TO) if verify is None else verify
    print(f"\n## {label} (synthetic), then +{', +'.join(map(str, appends))} day(s); verify: {verify}", flush=True)
    panel, registry = write_inputs(point, days + sum(appends), work)
    price_file = work / f"prices_{a}.parquet"
    sequences, result = [], {"label": label, "point": point, "repeats": repeats}
    for repeat in range(repeats):  # each sequence (full, then the updates) in a fresh DAGSTER_HOME
        env = fresh_env(dict(os.environ), str(price_file), registry)
        try:
            sequences.append(run_sequence(panel, price_file, env, days, appends, timeout))
            if verify and repeat == 0:
                result.update(verify_against_fresh(price_file, registry, env, days + sum(appends), timeout))
        finally:
            shutil.rmtree(env["DAGSTER_HOME"], ignore_errors=True)  # a 1000 x 500 book stores gigabytes
    result["runs"] = [median_run([seq[i] for seq in sequences]) for i in range(len(sequences[0]))]
    result["wall_ratios"] = [[seq[i]["wall"] / seq[0]["wall"] for seq in sequences] for i in range(len(sequences[0]))]
    return result


def run_sequence(panel, price_file: Path, env: dict[str, str], days: int, appends: list[int], timeout: float) -> list[dict]:
    """The full run on ``days`` rows, then one update per append, all in ``env``'s instance."""
    runs, rows = [], days
    for i, step in enumerate([0, *appends]):
        rows += step
        write_prefix(panel, rows, price_file)
        name = "full" if i == 0 else f"update +{step} day{'s' if step > 1 else ''}"
        measured = meta_run(env, timeout)
        measured.update(name=name, rows=rows)
        runs.append(measured)
        print(f"{name} ({rows} rows): {json.dumps(_brief(measured), default=str)}", flush=True)
    return runs


def verify_against_fresh(price_file: Path, registry: str, env: dict[str, str], rows: int, timeout: float) -> dict:
    """A full run on the same (final) prices in a new instance, and the published outputs compared."""
    fresh = fresh_env(dict(os.environ), str(price_file), registry)
    try:
        measured = meta_run(fresh, timeout)
        measured.update(name=f"fresh full ({rows} rows)", rows=rows)
        print(f"verify, fresh full ({rows} rows): {json.dumps(_brief(measured), default=str)}", flush=True)
        return {"fresh": measured, "diff": compare_published(env["QUANT_META_STORAGE"], fresh["QUANT_META_STORAGE"])}
    finally:
        shutil.rmtree(fresh["DAGSTER_HOME"], ignore_errors=True)


def median_run(measured: list[dict]) -> dict:
    """The per-field median of one run of the sequence over the repeats; the modes of every repeat."""
    out = dict(measured[0])
    for key in ("wall", "driver_mb", "worker_mb", "storage_mb"):
        out[key] = statistics.median(m[key] for m in measured)
    stages = {k for m in measured for k in m["stages"]}
    out["stages"] = {k: statistics.median(m["stages"].get(k, float("nan")) for m in measured) for k in stages}
    out["mode_cells"] = list(dict.fromkeys(modes_cell(m) for m in measured))  # one unless a repeat differed
    return out


def _cell(value: float) -> str:
    return f"{value:.1f}" if value == value else "-"


def print_table(results: list[dict]) -> None:
    columns = [*STEPS.values(), OUTSIDE]
    if any(r["repeats"] > 1 for r in results):
        print(f"\nMedians of {max(r['repeats'] for r in results)} sequences per book, each in a fresh instance "
              "(the fresh full run of --verify: one run).")
    print("\n| book | run | wall s | " + " | ".join(f"{c} s" for c in columns) + " | driver peak MB | how each stage was made |")
    print("|---|---|---:|" + "---:|" * len(columns) + "---:|---|")
    for result in results:
        for m in [*result["runs"], *([result["fresh"]] if "fresh" in result else [])]:
            stages = {STEPS.get(k, k): v for k, v in m["stages"].items()}
            print(f"| {result['label']} | {m['name']} | {m['wall']:.1f} | "
                  + " | ".join(_cell(stages.get(c, float("nan"))) for c in columns)
                  + f" | {m['driver_mb']:.0f} | {' / '.join(m.get('mode_cells') or [modes_cell(m)])} |")
    print("\n| book | ratio | wall | " + " | ".join(columns) + " | driver peak |")
    print("|---|---|---:|" + "---:|" * len(columns) + "---:|")
    for result in results:
        full = result["runs"][0]
        full_stages = {STEPS.get(k, k): v for k, v in full["stages"].items()}
        for m in result["runs"][1:]:
            stages = {STEPS.get(k, k): v for k, v in m["stages"].items()}
            ratios = [stages.get(c, float("nan")) / full_stages[c] if full_stages.get(c) else float("nan") for c in columns]
            print(f"| {result['label']} | {m['name']} / full | {m['wall'] / full['wall']:.2f} | "
                  + " | ".join(f"{r:.2f}" if r == r else "-" for r in ratios)
                  + f" | {m['driver_mb'] / full['driver_mb']:.2f} |")
    print()
    for result in results:
        full = result["runs"][0]
        target = TARGETS.get(result["point"])
        for m, each in zip(result["runs"][1:], result["wall_ratios"][1:]):
            ratio = m["wall"] / full["wall"]
            stages = {STEPS.get(k, k): v for k, v in m["stages"].items()}
            top = sorted(stages.items(), key=lambda kv: -kv[1])[:3]
            holds = ", ".join(f"{k} {v:.1f} s ({v / m['wall']:.0%})" for k, v in top)
            verdict = "no target at this size" if target is None else (
                f"target <= {target}x {'met' if ratio <= target else 'missed'}")
            spread = f" (each sequence: {', '.join(f'{r:.2f}x' for r in each)})" if len(each) > 1 else ""
            print(f"{result['label']}: {m['name']} / full = {ratio:.2f}x{spread}: {verdict}; the time is in {holds}")
        if "diff" in result:
            d = result["diff"]
            ok = d["asset weights"] <= TOLERANCE
            print(f"{result['label']}: published after the updates (generation {d['generation']}) vs a fresh full run: "
                  f"max |diff| asset weights {d['asset weights']:.3g}, meta weights {d['meta weights']:.3g}, "
                  f"meta returns {d['meta returns']:.3g} (asset weights <= {TOLERANCE:g}: {'ok' if ok else 'FAILED'})")
        else:
            print(f"{result['label']}: not verified against a fresh full run (--verify to do it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="150x100x2520", help="sleeves x tickers x days points, comma-separated")
    parser.add_argument("--appends", default="1,5", help="days appended before each update run, in order")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--verify", dest="verify", action="store_true", default=None,
                       help=f"compare with a fresh full run (default: on up to {VERIFY_UP_TO} sleeves x tickers)")
    group.add_argument("--skip-verify", dest="verify", action="store_false", help="no fresh full run")
    parser.add_argument("--repeats", type=int, default=1,
                        help="sequences (full, then the updates) per book, each in a fresh instance; the table "
                        "shows medians")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per meta_full run")
    args = parser.parse_args()
    appends = [int(x) for x in args.appends.split(",")]
    if not appends or min(appends) < 1 or args.repeats < 1:
        raise SystemExit("--appends takes positive numbers of days, --repeats a positive number")
    work = Path(tempfile.mkdtemp(prefix="bench_incremental_"))
    try:
        results = [bench_point(spec, appends, args.verify, args.repeats, args.timeout, work) for spec in args.grid.split(",")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(results)
    bad = [r["label"] for r in results if "diff" in r and not r["diff"]["asset weights"] <= TOLERANCE]
    if bad:
        raise SystemExit(f"the updated published asset weights differ from a fresh full run by more than {TOLERANCE:g}: {bad}")


if __name__ == "__main__":
    main()
