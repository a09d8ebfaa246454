"""Book-scale benchmark: `meta_full` through the CLI against a sequential script and the floor.

    .venv/bin/python bench/bench_scale.py [--grid 6x20,500x20,1000x500x2520] [--skip-script 1000x500x2520]
                                          [--repeats 3]

Each grid point is ``sleeves x tickers`` on the bundled S&P 500 data (20 tickers; 6 sleeves =
the default registry, otherwise a seeded registry from ``synthetic_book.book_registry``), or
``sleeves x tickers x days`` on seeded factor-model prices (``synthetic_book.factor_prices``).
``QUANT_META_PRICES`` / ``QUANT_META_SLEEVES`` given to this script override both.
For each point, in the same run and each in a fresh process:
  cli     `dagster job execute -m quant_meta_assets -j meta_full` in a fresh DAGSTER_HOME;
  script  the same work in one plain process: `run_sleeve` in a loop (each sleeve stored as it
          finishes, like the job), then meta.returns/optimize/flatten/report over the stored sleeves;
  floor   the same graph shape doing no work (bench/floor_defs.py: Dagster + a local Ray).
Printed: per-stage seconds (from the Dagster event log for cli/floor), driver peak RSS (VmHWM of
the process) and the largest Ray worker's, storage and report bytes, and the target ratios.
Timings are noisy on a shared 2-core machine: read the ratios. With --repeats N the variants run N
times, interleaved, and the table and the ratios use the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

SCRIPT = r"""
import json, os, sys, tempfile, time
from pathlib import Path
t_all = time.perf_counter()
from quant_meta_assets import MetaContext, QuantSDK, settings
from quant_meta_assets.ray.compute import SleeveOutcome
from quant_meta_assets.dagster_defs.meta_assets import OptimizeConfig
from quant_meta_assets.benchmark import load_benchmark
from quant_meta_assets.prices import load_prices
from quant_meta_assets.sleeves.registry import load_registry
from quant_meta_assets.sleeves.engine import error_record, run_sleeve
from quant_meta_assets.sleeves.store import SleeveStore
stages = {}
prices, profiles = load_prices(), load_registry()
store = SleeveStore(settings.storage_root() / "sleeves")
compute = write = 0.0
staged = {}
for p in profiles:
    t = time.perf_counter()
    record = run_sleeve(p, prices)
    t2 = time.perf_counter()
    compute += t2 - t
    staged[p.name] = store.stage(SleeveOutcome.from_record(record))
    del record
    write += time.perf_counter() - t2
t = time.perf_counter()
from quant_meta_assets.storage import commit_bundles
commit_bundles(staged[p.name] for p in profiles)
records = [store.load(p.name) for p in profiles]
stages["sleeves (compute)"], stages["sleeves (store)"] = compute, write + time.perf_counter() - t
ctx = MetaContext(prices=prices, sleeve_profiles=profiles, sleeve_results=records)
ctx.extras["benchmark"] = load_benchmark()
for stage_id in ("meta.returns", "meta.optimize", "meta.flatten", "meta.report"):
    t = time.perf_counter()
    method = {"method": os.environ["BENCH_OPTIMIZE_METHOD"]} if os.environ.get("BENCH_OPTIMIZE_METHOD") else {}
    params = OptimizeConfig(**method).optimizer_params([p.name for p in profiles]) if stage_id == "meta.optimize" else {}
    if stage_id == "meta.report":
        params["output_dir"] = settings.storage_root() / "reports" / "script"
    QuantSDK.run_stage(stage_id, ctx, **params)
    stages[stage_id] = time.perf_counter() - t
print("BENCH_JSON " + json.dumps({"stages": stages, "report": str(ctx.report["html"])}))
"""

EVENTS = r"""
import json, sys
import dagster as dg
instance = dg.DagsterInstance.get()
run = instance.get_runs(limit=1)[0]
starts, out = {}, {}
for entry in instance.all_logs(run.run_id):
    event = entry.dagster_event
    if event is None or event.step_key is None:
        continue
    if event.event_type_value == "STEP_START":
        starts[event.step_key] = entry.timestamp
    elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and event.step_key in starts:
        out[event.step_key] = entry.timestamp - starts[event.step_key]
print("BENCH_JSON " + json.dumps({"run_id": run.run_id, "status": str(run.status), "stages": out}))
"""


def _hwm_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


class PeakRss:
    """Polls the VmHWM (peak RSS) of a process and of its Ray worker descendants."""

    def __init__(self, pid: int) -> None:
        self.pid, self.driver_kb, self.worker_kb = pid, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.driver_kb = max(self.driver_kb, _hwm_kb(self.pid))
            todo, seen = [self.pid], set()
            while todo:
                pid = todo.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                todo += _children(pid)
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if pid != self.pid and (b"default_worker" in cmd or cmd.startswith(b"ray::")):
                    self.worker_kb = max(self.worker_kb, _hwm_kb(pid))
            self._stop.wait(0.25)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run(cmd: list[str], env: dict[str, str], timeout: float) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = PeakRss(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        peak.stop()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}):\n{out[-3000:]}\n{err[-3000:]}")
    data = next((json.loads(line[11:]) for line in out.splitlines() if line.startswith("BENCH_JSON ")), {})
    return {"wall": wall, "driver_mb": peak.driver_kb / 1024, "worker_mb": peak.worker_kb / 1024, **data}


def fresh_env(base: dict[str, str], prices: str | None, sleeves: str | None) -> dict[str, str]:
    home = Path(tempfile.mkdtemp(prefix="bench_scale_home_"))
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    env = {k: v for k, v in base.items() if k not in ("QUANT_META_PRICES", "QUANT_META_SLEEVES", "RAY_ADDRESS")}
    env.update(DAGSTER_HOME=str(home), QUANT_META_STORAGE=str(home / "storage"), PYTHONPATH=str(REPO))
    if prices:
        env["QUANT_META_PRICES"] = prices
    if sleeves:
        env["QUANT_META_SLEEVES"] = sleeves
    return env


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def point_inputs(spec: str, work: Path) -> tuple[str, str | None, str | None]:
    """(label, prices path or None = bundled, registry path or None = default)."""
    from quant_meta_assets.prices import load_prices
    from quant_meta_assets.synthetic_book import book_registry, factor_prices

    parts = [int(x) for x in spec.split("x")]
    prices_env, sleeves_env = os.environ.get("QUANT_META_PRICES"), os.environ.get("QUANT_META_SLEEVES")
    if len(parts) == 3:
        n, a, t = parts
        prices_path = prices_env or str(work / f"prices_{a}x{t}.parquet")
        if not prices_env:
            factor_prices(a, t, seed=1).to_parquet(prices_path)
        label = f"{n} x {a} x {t} (synthetic)"
    else:
        n, a = parts
        prices_path = prices_env
        label = f"{n} x {a} x bundled"
    tickers = [str(c) for c in load_prices(prices_path).columns]
    registry = sleeves_env
    if registry is None and not (n == 6 and len(parts) == 2):
        registry = str(work / f"registry_{n}.yaml")
        Path(registry).write_text(book_registry(n, tickers, seed=1))
    return label, prices_path, registry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grid", default="6x20,500x20,1000x500x2520")
    parser.add_argument("--skip-script", default="", help="grid points (comma-separated) run without the sequential script")
    parser.add_argument("--timeout", type=float, default=7200)
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each variant per grid point, interleaved (floor, cli, script, floor, ...); "
                        "the table shows medians")
    parser.add_argument("--optimize-method", default=None,
                        help="meta/optimize method for cli and script (default: the job's default)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    rows = []
    for spec in args.grid.split(","):
        label, prices, sleeves = point_inputs(spec, work)
        print(f"\n## {label}", flush=True)
        result = {"label": label}
        config: list[str] = []
        if args.optimize_method:
            (work / "run.yaml").write_text(f"ops:\n  meta__optimize:\n    config:\n      method: {args.optimize_method}\n")
            config = ["-c", str(work / "run.yaml")]
        variants = {
            "floor": [str(BIN / "dagster"), "job", "execute", "-f", str(REPO / "bench" / "floor_defs.py"), "-j", "meta_full"],
            "cli": [str(BIN / "dagster"), "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full", *config],
            "script": [sys.executable, "-c", SCRIPT],
        }
        runs: dict[str, list[dict]] = {}
        for _ in range(args.repeats):  # interleaved, so each variant sees the same machine
            for name, cmd in variants.items():
                if name == "script" and spec in args.skip_script.split(","):
                    continue
                env = fresh_env(dict(os.environ), prices, sleeves)
                if args.optimize_method:
                    env["BENCH_OPTIMIZE_METHOD"] = args.optimize_method
                measured = run(cmd, env, args.timeout)
                if name != "script":
                    events = run([sys.executable, "-c", EVENTS], env, 600)
                    measured["stages"] = events["stages"]
                    measured["run_id"] = events["run_id"]
                storage = Path(env["QUANT_META_STORAGE"])
                measured["storage_mb"] = dir_bytes(storage) / 1e6
                reports = list((storage / "reports").rglob("report.html")) if storage.exists() else []
                measured["report_mb"] = max((p.stat().st_size for p in reports), default=0) / 1e6
                runs.setdefault(name, []).append(measured)
                print(f"{name}: {json.dumps(measured, default=str)}", flush=True)
                shutil.rmtree(env["DAGSTER_HOME"], ignore_errors=True)  # a 1000 x 500 book stores gigabytes
        result.update({name: median_run(measured) for name, measured in runs.items()})
        result["repeats"] = args.repeats
        rows.append(result)
    print_table(rows)


def median_run(measured: list[dict]) -> dict:
    """The per-field median of repeated runs of one variant (wall, every stage, peaks, bytes)."""
    import statistics

    out = dict(measured[0])
    for key in ("wall", "driver_mb", "worker_mb", "storage_mb", "report_mb"):
        out[key] = statistics.median(m[key] for m in measured)
    stages = {k for m in measured for k in m.get("stages", {})}
    out["stages"] = {k: statistics.median(m["stages"].get(k, float("nan")) for m in measured) for k in stages}
    return out


STEP_KEYS = ("sleeves", "sleeves_all_sleeves_succeeded", "meta__returns", "meta__optimize", "meta__flatten", "meta__report")


def _stage(measured: dict, key: str) -> float:
    return float(measured.get("stages", {}).get(key, float("nan")))


def print_table(rows: list[dict]) -> None:
    if any(row.get("repeats", 1) > 1 for row in rows):
        print(f"\nMedians of {max(row.get('repeats', 1) for row in rows)} interleaved runs per variant.")
    print("\n| book | variant | wall s | sleeves s | check s | returns s | optimize s | flatten s | report s "
          "| driver peak MB | largest worker MB | storage MB | report MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        for name in ("cli", "script", "floor"):
            m = row.get(name)
            if m is None:
                continue
            if name == "script":
                cells = [m["stages"].get("sleeves (compute)", 0) + m["stages"].get("sleeves (store)", 0), float("nan"),
                         *(m["stages"].get(s, float("nan")) for s in ("meta.returns", "meta.optimize", "meta.flatten", "meta.report"))]
            else:
                cells = [_stage(m, key) for key in STEP_KEYS]
            print(f"| {row['label']} | {name} | {m['wall']:.1f} | " + " | ".join(f"{c:.1f}" for c in cells)
                  + f" | {m['driver_mb']:.0f} | {m['worker_mb']:.0f} | {m['storage_mb']:.0f} | {m['report_mb']:.1f} |")
    print("\n| book | sleeves step / sequential compute (target <= 0.65) | cli / script (target <= 1.0) "
          "| cli / floor (target <= 1.4 at 6 sleeves) | driver peak GB (target <= 2 at 1000x500) |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        cli, script, floor = row.get("cli"), row.get("script"), row.get("floor")
        sleeves_ratio = _stage(cli, "sleeves")
        seq = script["stages"].get("sleeves (compute)") if script else None
        r1 = f"{sleeves_ratio / seq:.2f}" if seq else "-"
        r2 = f"{cli['wall'] / script['wall']:.2f}" if script else "-"
        r3 = f"{cli['wall'] / floor['wall']:.2f}" if floor else "-"
        print(f"| {row['label']} | {r1} | {r2} | {r3} | {cli['driver_mb'] / 1024:.2f} |")


if __name__ == "__main__":
    main()
