"""End-to-end wall time of the default job, against a hand-rolled script in the same run.

    .venv/bin/python bench/bench_pipeline.py [--repeats 3]

Three ways to produce the same meta-portfolio on the bundled S&P 500 data (6 sleeves):
  cli      `dagster job execute -m quant_meta_assets -j meta_full` in a fresh DAGSTER_HOME
           (process start, code-location load, Ray start, sleeves on Ray, check, 4 meta stages,
           Parquet + HTML writes, instance bookkeeping);
  sdk      `run_meta_pipeline()` in a fresh process (Ray start + the same stages, no Dagster);
  script   the hand-rolled peer: a fresh process that loops over the sleeves sequentially
           in-process and calls the same stage functions (no Ray, no Dagster).
Each is a fresh subprocess, so import time is counted. Medians of --repeats runs; ratios vs script.
These 2-core machines are shared and noisy: read the ratios, not the seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

SDK = """
import tempfile
from quant_meta_assets import run_meta_pipeline
ctx = run_meta_pipeline(report={"output_dir": tempfile.mkdtemp()})
assert ctx.report["reconciliations"]["passed"].all()
"""

SCRIPT = """
import tempfile
from quant_meta_assets import MetaContext, QuantSDK
from quant_meta_assets.benchmark import load_benchmark
from quant_meta_assets.prices import load_prices
from quant_meta_assets.sleeves.registry import load_registry
from quant_meta_assets.sleeves.engine import run_sleeve
prices = load_prices()
profiles = load_registry()
ctx = MetaContext(prices=prices, sleeve_profiles=profiles, sleeve_results=[run_sleeve(p, prices) for p in profiles])
ctx.extras["benchmark"] = load_benchmark()
for stage in ("meta.returns", "meta.optimize", "meta.flatten"):
    QuantSDK.run_stage(stage, ctx)
QuantSDK.run_stage("meta.report", ctx, output_dir=tempfile.mkdtemp())
"""


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed


def fresh_env() -> dict[str, str]:
    home = tempfile.mkdtemp(prefix="bench_dagster_home_")
    (Path(home) / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if k not in ("QUANT_META_SLEEVES", "QUANT_META_PRICES")}
    return {**env, "DAGSTER_HOME": home, "QUANT_META_STORAGE": str(Path(home) / "storage")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs = {
        "cli (dagster job execute)": [str(BIN / "dagster"), "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full"],
        "sdk (run_meta_pipeline, Ray)": [sys.executable, "-c", SDK],
        "script (sequential, no Ray/Dagster)": [sys.executable, "-c", SCRIPT],
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so machine noise hits every variant alike
        for name, cmd in runs.items():
            times[name].append(timed(cmd, fresh_env()))
    base = statistics.median(times["script (sequential, no Ray/Dagster)"])
    print(f"\nDefault job on the bundled S&P 500 data, {args.repeats} repeats, {os.cpu_count()} CPUs\n")
    print("| variant | median s | min s | max s | ratio vs script |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"| {name} | {med:.1f} | {min(values):.1f} | {max(values):.1f} | {med / base:.2f}x |")


if __name__ == "__main__":
    main()
