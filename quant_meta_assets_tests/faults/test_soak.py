"""Soak: 20 whole-graph materializations on one instance and one storage, a random sleeve failing
in about half of them. Every run is all-or-nothing for the meta assets, and nothing leaks
(file descriptors, Ray processes) across runs or after Ray shuts down."""

from __future__ import annotations

import os
import random
import time

import dagster as dg
import pytest

from quant_meta_assets import settings
from quant_meta_assets_tests.conftest import REPO_ROOT
from quant_meta_assets_tests.faults.conftest import (
    check_evaluation,
    materialize_all,
    meta_digest,
    meta_materialization_count,
    meta_materialization_ids,
    use_registry,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

RUNS = 20
SEED = 20240611
SLEEVES = {"equal_weight": "equal_weight", "low_volatility": "low_volatility",
           "min_variance": "min_variance", "trend": "trend_vol_target"}
RAISES = "quant_meta_assets_tests.strategies_for_tests:raises"
FD_SLACK = 10
RAY_DRIVER_RESIDUE = 13


def registry(failing: str | None) -> str:
    lines = ["sleeves:"]
    for name, strategy in SLEEVES.items():
        lines += [f"  - name: {name}", f"    strategy: {RAISES if name == failing else strategy}", "    cost_bps: 5"]
    return "\n".join(lines) + "\n"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_targets() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return sorted(out)


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def ray_processes(root: int | None = None) -> list[int]:
    """Live processes started by ``root`` (default: this test process), directly or not, that
    belong to Ray. Only its descendants: other Ray clusters on the machine are not counted."""
    found = []
    for pid in _descendants(os.getpid() if root is None else root):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ")
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (b"ray::" in cmdline or b"raylet" in cmdline or b"gcs_server" in cmdline
                             or b"ray/_private" in cmdline or b"default_worker.py" in cmdline):
            found.append(pid)
    return found


def test_soak_every_run_is_all_or_nothing_and_nothing_leaks(tmp_path, monkeypatch, small_prices):
    import ray

    assert not ray.is_initialized(), "the soak starts and stops its own Ray"
    instance = dg.DagsterInstance.get()
    meta_materialization_count(instance)  # open the instance's storage before the baseline
    fds_before_ray, targets_before_ray = open_fds(), fd_targets()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    stats: dict = {"succeeded": 0, "unchanged": 0, "run_s": []}
    try:
        storage = settings.storage_root()
        rng = random.Random(SEED)
        fds_after_first = None
        for i in range(RUNS):
            failing = rng.choice(sorted(SLEEVES)) if rng.random() < 0.5 else None
            names = use_registry(tmp_path / f"run{i}.yaml", registry(failing), monkeypatch, instance)
            ids, digest, count = meta_materialization_ids(instance), meta_digest(storage), meta_materialization_count(instance)
            t0 = time.monotonic()
            result = materialize_all(instance, names)
            stats["run_s"].append(round(time.monotonic() - t0, 1))
            evaluation = check_evaluation(result)
            if failing is None:
                assert result.success, f"run {i}"
                assert evaluation.passed
                new = meta_materialization_ids(instance)
                assert all(new[k] is not None and (ids[k] is None or new[k] > ids[k]) for k in new), (i, ids, new)
                assert meta_materialization_count(instance) == count + 4
                assert (storage / "reports" / result.run_id / "report.html").is_file()
                stats["succeeded"] += 1
            else:
                assert not result.success, f"run {i}"
                assert not evaluation.passed
                assert f"{failing}: ValueError: boom from the strategy" in evaluation.description
                assert evaluation.description.count("ValueError") == 1
                assert meta_materialization_ids(instance) == ids
                assert meta_materialization_count(instance) == count
                assert meta_digest(storage) == digest, f"run {i} changed stored meta outputs"
                assert not (storage / "reports" / result.run_id).exists()
                stats["unchanged"] += 1
            if i == 0:
                fds_after_first = open_fds()
        stats["fds_after_first_run"] = fds_after_first
        stats["fds_after_last_run"] = open_fds()
        stats["ray_processes_while_up"] = len(ray_processes())
    finally:
        ray.shutdown()
    deadline = time.monotonic() + 20
    while ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    stats["ray_processes_after_shutdown"] = len(ray_processes())
    stats["fds_before_ray"] = fds_before_ray
    stats["fds_after_shutdown"] = open_fds()
    new_targets = sorted(set(fd_targets()) - set(targets_before_ray))
    print(f"\nSOAK {stats}\nfds opened since the baseline and still open: {new_targets}")

    assert stats["succeeded"] + stats["unchanged"] == RUNS
    assert stats["succeeded"] >= 5 and stats["unchanged"] >= 5, stats  # the seed exercises both paths
    assert stats["fds_after_last_run"] <= stats["fds_after_first_run"] + FD_SLACK, stats
    # after ray.shutdown() Ray's driver-side core worker keeps its session log files, a few event
    # fds and a socket open (a one-time residue of ray.init in this process, ~11-13 fds; Ray's
    # behaviour, not ours): nothing else opened during the runs may remain
    ours = [t for t in new_targets if "/ray/session_" not in t and not t.startswith(("anon_inode:", "socket:"))]
    assert ours == [], ours
    assert stats["fds_after_shutdown"] <= stats["fds_before_ray"] + RAY_DRIVER_RESIDUE + FD_SLACK, (stats, new_targets)
    assert stats["ray_processes_after_shutdown"] == 0, stats
