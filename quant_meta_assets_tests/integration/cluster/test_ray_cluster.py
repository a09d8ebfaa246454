"""The code location on a real 2-node Ray cluster that cannot see the driver's files.

The cluster (``ray start`` head + worker, token auth, loopback addresses) runs from its own venv
without the project, inside a mount namespace that hides the checkout, the driver's venv and
the temp dir holding the driver-only plug-in ``driver_only_alpha``. Whatever runs there was
shipped by ``ray_cluster`` (runtime_env ``py_modules``); frames come back through the object
store and the driver writes every bundle.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
import subprocess
import sys
from pathlib import Path

import pytest

from quant_meta_assets_tests.conftest import REPO_ROOT, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

JOB = ["dagster", "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full"]
BUNDLED = (REPO_ROOT / "quant_meta_assets" / "data" / "sleeves.yaml").read_text()
PLUGIN_SLEEVE = """
  - name: driver_only
    strategy: driver_only_alpha.signals:top_names_equal
    rebalance: monthly
"""
DATA_SLEEVE = """
  - name: package_data
    strategy: driver_only_alpha.signals:from_package_data
    rebalance: monthly
"""
BROKEN_SLEEVE = """
  - name: broken_alpha
    strategy: driver_only_alpha.signals:broken
    rebalance: monthly
"""
SDK_SCRIPT = """
import json, sys
from quant_meta_assets import run_meta_pipeline
from quant_meta_assets.sleeves.registry import load_registry
try:
    ctx = run_meta_pipeline(load_registry(sys.argv[1]))
    out = {"ok": True, "sleeves": sorted(r["sleeve"] for r in ctx.sleeve_results if r["status"] == "success"),
           "weights_columns": sorted(ctx.meta_weights.columns), "report": str(ctx.report["html"])}
except Exception as exc:
    out = {"ok": False, "type": type(exc).__name__, "error": str(exc)}
print("RESULT " + json.dumps(out))
"""


def registry(tmp_path: Path, *extra: str) -> Path:
    path = tmp_path / "sleeves.yaml"
    path.write_text(BUNDLED.rstrip() + "\n" + "".join(extra))
    return path


def materialized_keys(home: Path) -> set[str]:
    with sqlite3.connect(home / "history" / "runs" / "index.db") as db:
        rows = db.execute("select distinct asset_key from event_logs "
                          "where dagster_event_type = 'ASSET_MATERIALIZATION'").fetchall()
    return {"/".join(json.loads(key)) for (key,) in rows}  # asset_key is stored as a JSON list


def run_sdk(path: Path, env: dict[str, str]) -> dict:
    """run_meta_pipeline in a fresh driver process (its own ray.init), bounded in time."""
    out = subprocess.run([sys.executable, "-c", SDK_SCRIPT, str(path)], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def driver_env(cluster, plugin_root: Path, **extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(PYTHONPATH=str(plugin_root), **(cluster.driver_env() if cluster else {}))
    env.update(extra)
    return env


def test_the_cluster_cannot_see_the_driver_files(ray_cluster_2_nodes, driver_only_plugin):
    """The premise of every other test here: checked from inside the cluster's namespace."""
    text = ray_cluster_2_nodes.log_text()
    assert "NODES 2" in text, text[-2000:]
    py = ray_cluster_2_nodes.venv / "bin" / "python"
    probe = subprocess.run(
        ["nsenter", "-t", str(_namespace_init(ray_cluster_2_nodes)), "-m", str(py), "-c",
         "import importlib.util, json, os, sys; print(json.dumps(["
         "str(importlib.util.find_spec('quant_meta_assets')), str(importlib.util.find_spec('driver_only_alpha')), "
         "os.listdir(sys.argv[1]), os.path.exists(sys.argv[2]), os.path.exists(sys.argv[3])]))",
         str(REPO_ROOT), str(driver_only_plugin), sys.executable],
        capture_output=True, text=True, timeout=60, env={"PYTHONPATH": f"{REPO_ROOT}:{driver_only_plugin}"},
    )
    assert json.loads(probe.stdout) == ["None", "None", [], False, False], probe.stdout + probe.stderr


def _namespace_init(cluster) -> int:
    """The PID (in our namespace) of the cluster's PID 1: the child of the ``unshare`` process."""
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if stat and int(stat.rsplit(")", 1)[1].split()[1]) == cluster.process.pid:
            return int(entry.name)
    raise AssertionError("the cluster namespace has no PID 1")


def test_meta_full_cli_materializes_every_stage_on_the_cluster(ray_cluster_2_nodes, driver_only_plugin,
                                                                tmp_path, isolated_env):
    env = driver_env(ray_cluster_2_nodes, driver_only_plugin,
                     QUANT_META_SLEEVES=str(registry(tmp_path, PLUGIN_SLEEVE)))
    result = run_cli(JOB, env, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert materialized_keys(isolated_env) == {"prices", "sleeves", "meta/returns", "meta/optimize",
                                               "meta/flatten", "meta/report", "meta/published"}
    storage = tmp_path / "storage"
    (run_dir,) = (storage / "runs").iterdir()  # every output of the run under runs/<run id>/
    sleeves_dir = run_dir / "sleeves"
    assert (sleeves_dir / "driver_only").is_dir() and (sleeves_dir / "min_variance").is_dir()
    assert len(list(sleeves_dir.iterdir())) == 7


def test_a_raising_sleeve_stops_the_line_on_the_cluster(ray_cluster_2_nodes, driver_only_plugin, tmp_path,
                                                        isolated_env):
    env = driver_env(ray_cluster_2_nodes, driver_only_plugin,
                     QUANT_META_SLEEVES=str(registry(tmp_path, PLUGIN_SLEEVE, BROKEN_SLEEVE)))
    result = run_cli(JOB, env, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "broken_alpha" in output and "ValueError: driver-only alpha is broken on purpose" in output
    # the run's prices snapshot is taken before the sleeves step; no meta/* materialization
    assert materialized_keys(isolated_env) == {"prices", "sleeves"}


def test_run_meta_pipeline_on_the_cluster_and_its_failure_is_the_local_one(ray_cluster_2_nodes,
                                                                           driver_only_plugin, tmp_path):
    good = run_sdk(registry(tmp_path, PLUGIN_SLEEVE), driver_env(ray_cluster_2_nodes, driver_only_plugin))
    assert good["ok"], good
    assert "driver_only" in good["sleeves"] and len(good["sleeves"]) == 7
    assert good["weights_columns"] == good["sleeves"] and Path(good["report"]).is_file()

    bad_registry = registry(tmp_path, PLUGIN_SLEEVE, BROKEN_SLEEVE)
    on_cluster = run_sdk(bad_registry, driver_env(ray_cluster_2_nodes, driver_only_plugin))
    local = run_sdk(bad_registry, driver_env(None, driver_only_plugin, QUANT_META_RAY_NUM_CPUS="2"))
    assert on_cluster["type"] == local["type"] == "SleeveFailureError"
    assert on_cluster["error"] == local["error"]
    assert "broken_alpha: ValueError: driver-only alpha is broken on purpose" in on_cluster["error"]


def test_package_data_behind_gitignore_and_rayignore_ships_and_is_hashed(ray_cluster_2_nodes, driver_only_plugin,
                                                                         tmp_path):
    """driver_only_alpha/data/params.json is listed by the package's .gitignore and .rayignore:
    Ray's upload used to leave it out (FileNotFoundError on the workers, after a passing
    preflight). The staged copy ships it, and the preflight compares each shipped package's
    content hash on both nodes with the driver's."""
    result = run_sdk(registry(tmp_path, DATA_SLEEVE), driver_env(ray_cluster_2_nodes, driver_only_plugin))
    assert result["ok"], result
    assert "package_data" in result["sleeves"]


def test_ray_client_address_works(ray_cluster_2_nodes, driver_only_plugin, tmp_path):
    env = driver_env(ray_cluster_2_nodes, driver_only_plugin, RAY_ADDRESS=ray_cluster_2_nodes.client_address)
    result = run_sdk(registry(tmp_path, PLUGIN_SLEEVE), env)
    assert result["ok"], result
    assert "driver_only" in result["sleeves"] and len(result["sleeves"]) == 7


def test_a_cluster_without_scikit_learn_fails_the_preflight_once_naming_it(ray_cluster_without_sklearn,
                                                                          driver_only_plugin, tmp_path,
                                                                          isolated_env):
    py = ray_cluster_without_sklearn.venv / "bin" / "python"
    honest = subprocess.run([str(py), "-c", "import sklearn"], capture_output=True, text=True, timeout=60)
    assert honest.returncode != 0 and "No module named 'sklearn'" in honest.stderr  # really absent

    env = driver_env(ray_cluster_without_sklearn, driver_only_plugin,
                     QUANT_META_SLEEVES=str(registry(tmp_path, PLUGIN_SLEEVE)))
    result = run_cli(JOB, env, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "ClusterPreflightError" in output
    assert "scikit-learn: missing" in output and "pip install 'scikit-learn==" in output
    assert "QUANT_META_RAY_RUNTIME_ENV" in output and 'pip: ["scikit-learn==' in output
    assert "sleeve min_variance failed" not in output and "- min_variance:" not in output  # not N failures
    assert not (tmp_path / "storage" / "sleeves").exists()  # no sleeve ran, none was stored
    assert materialized_keys(isolated_env) == {"prices"}  # only the run's prices snapshot, taken first


def test_the_user_runtime_env_file_reaches_the_workers(ray_cluster_2_nodes, driver_only_plugin, tmp_path):
    """QUANT_META_RAY_RUNTIME_ENV is merged into what the cluster gets (here: env_vars), next to
    the shipped code; without it the plug-in cannot know its parameter."""
    runtime_env = tmp_path / "runtime_env.yaml"
    runtime_env.write_text("env_vars: {DRIVER_ONLY_N_NAMES: '3'}\n")
    path = tmp_path / "small.yaml"
    path.write_text(textwrap.dedent("""\
        sleeves:
          - {name: equal_weight, strategy: equal_weight, rebalance: monthly}
          - {name: from_env, strategy: "driver_only_alpha.signals:from_runtime_env", rebalance: monthly}
    """))
    env = driver_env(ray_cluster_2_nodes, driver_only_plugin, QUANT_META_RAY_RUNTIME_ENV=str(runtime_env))
    script = ("import sys; from quant_meta_assets.ray.compute import RayComputeEngine; "
              "from quant_meta_assets.prices import load_prices; from quant_meta_assets.sleeves.registry import load_registry; "
              "r = RayComputeEngine().execute_sleeves(load_registry(sys.argv[1]), load_prices())[1]; "
              "print('RESULT', r['status'], r['error'], int((r['weights'] != 0).any().sum()) "
              "if r['status'] == 'success' else '')")
    out = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT")), out.stdout[-2000:] + out.stderr[-2000:])
    assert line == "RESULT success None 3", line  # three names held, as the runtime_env said
