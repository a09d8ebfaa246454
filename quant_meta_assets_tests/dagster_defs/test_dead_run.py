"""A killed run frees the Ray pool (issue 20). Real `dagster job execute` processes on the embedded
instance, no daemon:

* run A holds the `quant_meta_ray` slot in its sleeves step (a sleeve that hangs);
* run B, started meanwhile, waits for the pool in its `prices` step, logs that A holds it, and
  SIGTERM ends it CANCELED at once (Dagster's own wait spun and ignored SIGTERM);
* A's whole process group is SIGKILLed: A stays STARTED and its slot stays claimed;
* run C marks A FAILED with the reason (its worker process is gone), frees the slot and succeeds,
  without waiting for anything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from quant_meta_assets.dagster_defs.sleeves import RAY_POOL
from quant_meta_assets_tests.conftest import HANGING_REGISTRY, REPO_ROOT, write_registry
from quant_meta_assets_tests.faults.conftest import small_price_file  # noqa: F401 (fixture)
from quant_meta_assets_tests.faults.test_soak import ray_processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ONE_GOOD = """
sleeves:
  - name: equal_weight
    strategy: equal_weight
"""


def _launch(env: dict, log: Path) -> subprocess.Popen:
    """`dagster job execute -j meta_full` in its own process group, output to ``log``."""
    exe = Path(sys.executable).with_name("dagster")
    return subprocess.Popen([str(exe), "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full"],
                            cwd=REPO_ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _wait(predicate, timeout: float, what: str, procs=()):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        for proc, log in procs:
            assert proc.poll() is None, f"{what}: the process ended early:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _claims(instance: dg.DagsterInstance) -> set[str]:
    return {s.run_id for s in instance.event_log_storage.get_concurrency_info(RAY_POOL).claimed_slots}


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_a_sigkilled_run_frees_the_pool_for_the_next_run(tmp_path, small_price_file):
    instance = dg.DagsterInstance.get()
    base = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "QUANT_META_RAY_NUM_CPUS": "2",
            "QUANT_META_PRICES": str(small_price_file)}
    env_a = {**base, "QUANT_META_SLEEVES": str(write_registry(tmp_path / "hanging.yaml", HANGING_REGISTRY))}
    env_c = {**base, "QUANT_META_SLEEVES": str(write_registry(tmp_path / "one.yaml", ONE_GOOD))}
    log_a, log_b, log_c = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "c.log"
    a = _launch(env_a, log_a)
    b = c = None
    ray_pids: set[int] = set()
    try:
        run_a = _wait(lambda: next(iter(_claims(instance)), None), 240, "run A to claim the Ray pool", [(a, log_a)])
        ray_pids |= set(ray_processes(a.pid))

        # B waits in its prices step, naming A, and SIGTERM ends it promptly
        b = _launch(env_a, log_b)
        _wait(lambda: f"held by run {run_a}" in log_b.read_text(), 240, "run B to report the holder", [(b, log_b)])
        sent = time.monotonic()
        os.killpg(b.pid, signal.SIGTERM)
        b.wait(timeout=120)
        b_exit_s = time.monotonic() - sent
        (run_b,) = [r for r in instance.get_run_records() if r.dagster_run.run_id != run_a]
        assert run_b.dagster_run.status == dg.DagsterRunStatus.CANCELED, log_b.read_text()[-3000:]
        assert "Step blocked by limit for pool" not in log_b.read_text()
        assert b_exit_s < 60, b_exit_s

        # A dies as the OOM killer would kill it: everything in its process group, at once
        ray_pids |= set(ray_processes(a.pid))
        os.killpg(a.pid, signal.SIGKILL)
        a.wait(timeout=30)
        assert instance.get_run_by_id(run_a).status == dg.DagsterRunStatus.STARTED
        assert _claims(instance) == {run_a}  # the dead run still holds the slot

        start = time.monotonic()
        c = _launch(env_c, log_c)
        c.wait(timeout=400)
        c_s = time.monotonic() - start
    finally:
        for proc in (a, b, c):
            if proc is not None:
                _kill_group(proc)
        for pid in ray_pids | set(ray_processes(a.pid)):  # Ray processes A's kill left orphaned, if any
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    output_c = log_c.read_text()
    assert c.returncode == 0, output_c[-4000:]
    assert "Step blocked by limit for pool" not in output_c
    failed_a = instance.get_run_by_id(run_a)
    assert failed_a.status == dg.DagsterRunStatus.FAILURE
    (failure,) = instance.all_logs(run_a, of_type=dg.DagsterEventType.RUN_FAILURE)
    assert "its run worker process" in failure.dagster_event.message and "is gone" in failure.dagster_event.message
    assert f"{RAY_POOL} slot freed by run" in failure.dagster_event.message
    assert _claims(instance) == set()
    print(f"\nrun C after the SIGKILL of run A: {c_s:.1f} s end to end; SIGTERM ended waiting run B in {b_exit_s:.1f} s")
    assert c_s < 300
