"""Shared fixtures. Every test gets its own DAGSTER_HOME and storage root, so nothing a test
writes can land in the repository or leak into another test."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("QUANT_META_STORAGE", str(tmp_path / "storage"))
    monkeypatch.delenv("QUANT_META_SLEEVES", raising=False)
    monkeypatch.delenv("QUANT_META_PRICES", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield home


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray per test module (2 CPUs), shut down afterwards."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    yield ray
    if started:
        ray.shutdown()


HANGING_REGISTRY = """
sleeves:
  - name: equal_weight
    strategy: equal_weight
  - name: stuck
    strategy: quant_meta_assets_tests.strategies_for_tests:hangs
    timeout_s: 600
"""  # one good sleeve and one that hangs until its run is interrupted or killed


def write_registry(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body))
    return path


def run_cli(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    """Run a console entry point of this venv in a subprocess, bounded in time."""
    exe = Path(sys.executable).with_name(args[0])
    return subprocess.run(
        [str(exe), *args[1:]], cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True,
        timeout=timeout,
    )
