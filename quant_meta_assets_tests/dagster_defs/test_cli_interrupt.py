"""Ctrl-C on `dagster job execute -j meta_full`: the run ends CANCELED (not FAILURE), the local Ray
it started is gone, and nothing half-done is published."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from quant_meta_assets_tests.conftest import HANGING_REGISTRY, REPO_ROOT, write_registry
from quant_meta_assets_tests.dagster_support import published_dirs
from quant_meta_assets_tests.faults.conftest import small_price_file  # noqa: F401 (fixture)
from quant_meta_assets_tests.faults.test_soak import _descendants, ray_processes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]



def _busy_worker(root: int) -> bool:
    """A Ray worker of this run is executing a task (its process title names the task)."""
    for pid in _descendants(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::") and not cmdline.startswith(b"ray::IDLE"):
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _step_started(instance, step_key: str) -> bool:
    import dagster as dg

    records = instance.get_run_records(limit=1)
    if not records:
        return False
    run_id = records[0].dagster_run.run_id
    return any(
        e.dagster_event is not None and e.dagster_event.event_type == dg.DagsterEventType.STEP_START
        and e.dagster_event.step_key == step_key
        for e in instance.all_logs(run_id)
    )


def test_ctrl_c_cancels_the_cli_run_and_stops_its_ray(tmp_path, isolated_env, small_price_file):
    import dagster as dg

    storage = tmp_path / "storage"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "QUANT_META_RAY_NUM_CPUS": "2",
           "QUANT_META_PRICES": str(small_price_file),
           "QUANT_META_SLEEVES": str(write_registry(tmp_path / "registry.yaml", HANGING_REGISTRY))}
    exe = Path(sys.executable).with_name("dagster")
    # its own process group, like a shell's foreground job: Ctrl-C signals the whole group
    proc = subprocess.Popen([str(exe), "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full"],
                            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        instance = dg.DagsterInstance.get()
        deadline = time.monotonic() + 240
        ray_pids: set[int] = set()
        while time.monotonic() < deadline and proc.poll() is None:
            ray_pids |= set(ray_processes(proc.pid))
            if _step_started(instance, "sleeves") and _busy_worker(proc.pid):
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert ray_pids, "the run never started its local Ray"
        time.sleep(2.0)  # the good sleeve is done, the stuck one is running on a worker
        ray_pids |= set(ray_processes(proc.pid))
        os.killpg(proc.pid, signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    (record,) = instance.get_run_records()
    assert record.dagster_run.status == dg.DagsterRunStatus.CANCELED, output[-4000:]
    assert "SystemError" not in output
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p) for p in ray_pids):
        time.sleep(0.5)
    assert not [p for p in ray_pids if _alive(p)], "Ray processes outlived the canceled run"
    assert published_dirs(storage) == {}  # nothing half-done is published
