"""Fair use of a shared Ray cluster (issue 20): a 1-CPU `ray start` cluster, two drivers.

Driver A runs a 40 s sleeve. Driver B starts while it runs:
* a 1 s sleeve with ``timeout_s: 8`` waits for A's CPU and then succeeds: its budget counts from
  when its task starts running, not from when it was submitted (it used to fail with
  ``SleeveTimeout ... after 8 s`` while A's sleeve succeeded);
* with ``queue_timeout_s=4`` the same sleeve fails with ``SleeveQueueTimeout``, naming the queue
  deadline, while A is still running.
The in-flight window comes from the CPUs that are free, not from the cluster's total.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from quant_meta_assets_tests.conftest import REPO_ROOT
from quant_meta_assets_tests.integration.cluster.ray_test_cluster import RayTestCluster, can_run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400),
              pytest.mark.skipif(can_run() is not None, reason=str(can_run()))]

DRIVER = """
import json, sys, time
from quant_meta_assets.ray.compute import RayComputeEngine
from quant_meta_assets.sleeves.registry import SleeveProfile
from quant_meta_assets_tests.strategies_for_tests import make_prices, spec

def sleeve(name, seconds, timeout_s, marker):
    return SleeveProfile(name=name, strategy=spec("slow_good_marked"), rebalance="monthly",
                         params={"seconds": seconds, "marker": marker}, timeout_s=timeout_s,
                         check_lookahead=False)  # timed: no second call for the look-ahead check

calls = json.loads(sys.argv[1])
prices = make_prices()
with RayComputeEngine(connect_timeout_s=60) as keep:  # one connection for every call
    keep.connect(["quant_meta_assets_tests.strategies_for_tests:slow_good_marked"])
    for call in calls:
        engine = RayComputeEngine(queue_timeout_s=call.get("queue_timeout_s"))
        t0 = time.monotonic()
        window = engine._window()
        (record,) = engine.execute_sleeves([sleeve(**call["sleeve"])], prices)
        print("RESULT " + json.dumps({"status": record["status"], "error": record["error"], "window": window,
                                      "elapsed_s": time.monotonic() - t0, "ended": time.time()}), flush=True)
"""


def _driver(calls: list[dict], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(DRIVER), json.dumps(calls)], cwd=REPO_ROOT,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def _results(log: Path) -> list[dict]:
    return [json.loads(line[len("RESULT "):]) for line in log.read_text().splitlines() if line.startswith("RESULT ")]


def test_two_drivers_on_one_cpu_a_queued_sleeve_is_not_charged_for_the_wait(tmp_path):
    cluster = RayTestCluster(venv=Path(sys.prefix), hidden=[], workers=0, cpus_per_node=1).start()
    a = b = None
    try:
        env = {**cluster.driver_env(), "HOME": str(tmp_path)}
        a_started = tmp_path / "a.started"
        a = _driver([{"sleeve": {"name": "long", "seconds": 40, "timeout_s": 120, "marker": str(a_started)}}],
                    env, tmp_path / "a.log")
        deadline = time.monotonic() + 180
        while not a_started.exists():
            assert a.poll() is None and time.monotonic() < deadline, (tmp_path / "a.log").read_text()[-3000:]
            time.sleep(0.2)
        b = _driver([
            {"sleeve": {"name": "starved", "seconds": 1, "timeout_s": 8, "marker": str(tmp_path / "b1")},
             "queue_timeout_s": 4},
            {"sleeve": {"name": "patient", "seconds": 1, "timeout_s": 8, "marker": str(tmp_path / "b2")}},
        ], env, tmp_path / "b.log")
        a.wait(timeout=240)
        b.wait(timeout=240)
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        cluster.stop()
    (long,) = _results(tmp_path / "a.log")
    starved, patient = _results(tmp_path / "b.log")
    assert long["status"] == "success", (tmp_path / "a.log").read_text()[-3000:]
    # the queue deadline: B got no CPU for 4 s while A ran, and says so
    assert starved["status"] == "error" and starved["error"].startswith("SleeveQueueTimeout: sleeve 'starved' never started")
    assert "queue deadline queue_timeout_s=4 s" in starved["error"]
    assert starved["ended"] < long["ended"] and not (tmp_path / "b1").exists()
    # the same 8 s budget, counted from the start: B waited for A's CPU, then ran its 1 s
    assert patient["status"] == "success", patient["error"]
    assert patient["elapsed_s"] > 8 + 1, patient  # it waited longer than its whole budget
    assert float((tmp_path / "b2").read_text()) >= long["ended"] - 1.0  # it started once A's sleeve was done
    assert starved["window"] == patient["window"] == 1  # no CPU free: one task in flight, not the total
    print(f"\npatient sleeve: {patient['elapsed_s']:.1f} s end to end with timeout_s 8; "
          f"starved sleeve refused after {starved['elapsed_s']:.1f} s")


def test_the_window_is_the_free_cpus_or_the_setting(local_ray, monkeypatch):
    from quant_meta_assets.ray.compute import RayComputeEngine

    @local_ray.remote(num_cpus=1)
    def hold(seconds):
        time.sleep(seconds)

    assert RayComputeEngine()._window() == 2  # 2 CPUs, both free
    busy = hold.remote(30)
    deadline = time.monotonic() + 60
    while local_ray.available_resources().get("CPU", 0) > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        assert RayComputeEngine()._window() == 1  # one CPU is someone else's: one task in flight
        monkeypatch.setenv("QUANT_META_RAY_MAX_IN_FLIGHT", "3")
        assert RayComputeEngine()._window() == 3
        assert RayComputeEngine(max_in_flight=2)._window() == 2
    finally:
        local_ray.cancel(busy, force=True)
