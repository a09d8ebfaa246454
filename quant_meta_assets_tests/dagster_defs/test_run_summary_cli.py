"""`make run` in a subprocess: its last lines are the run's summary (how it ended, each failed
sleeve and its cause, the headline numbers against the benchmark, the report's absolute path),
and its output carries none of the warnings about our own usage nor Dagster's DEBUG lines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quant_meta_assets_tests.conftest import REPO_ROOT, write_registry
from quant_meta_assets_tests.dagster_defs.test_graph import FAILING, GOOD

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420),
              pytest.mark.skipif(shutil.which("make") is None, reason="needs make")]

NOISE = ("SupersessionWarning", "BetaWarning", "Token authentication is enabled", " - DEBUG - ")


def make(target: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """`make <target>` with this test's venv and instance (`-o install`: the venv is not rebuilt)."""
    venv = Path(sys.executable).parent.parent
    return subprocess.run(
        ["make", "--no-print-directory", "-o", "install", f"VENV={venv}", target],
        cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
    )


def own_lines(done: subprocess.CompletedProcess) -> list[str]:
    """stdout + stderr in order of the summary's concern: make's own 'Error' line dropped."""
    return [line for line in done.stdout.splitlines() if line.strip() and not line.startswith("make: ***")]


def test_make_run_ends_with_the_summary_and_the_cause_last(tmp_path, isolated_env):
    storage = tmp_path / "storage"
    env = {"PYTHONPATH": str(REPO_ROOT), "QUANT_META_RAY_NUM_CPUS": "2",  # the bundled prices: with a benchmark
           "QUANT_META_SLEEVES": str(write_registry(tmp_path / "good.yaml", GOOD))}
    good = make("run", env)
    output = good.stdout + good.stderr
    assert good.returncode == 0, output[-3000:]
    lines = own_lines(good)
    succeeded = next(i for i, line in enumerate(lines) if " succeeded in " in line)
    tail = lines[succeeded:]
    assert tail[0].startswith("meta_full run ")
    assert tail[1] == "Published generation 1: prices as of 2022-12-28; this is what read_published() returns now."
    assert tail[3].lstrip().startswith("meta (netted book)") and "CAGR" in tail[3] and "Sharpe" in tail[3]
    assert tail[4].lstrip().startswith("benchmark S&P 500") and "max drawdown" in tail[4]
    report = Path(tail[-2].removeprefix("Report: "))
    latest = Path(tail[-1].removeprefix("Latest: ").split("  ")[0])
    assert report.is_absolute() and report.is_file() and report.name == "report.html"
    assert latest == (storage / "reports" / "latest" / "report.html").resolve()
    assert latest.read_bytes() == report.read_bytes()
    for noise in NOISE:
        assert noise not in output, noise
    assert make("report", env).stdout.splitlines()[-2:] == tail[-2:]  # the same summary again

    env["QUANT_META_SLEEVES"] = str(write_registry(tmp_path / "failing.yaml", FAILING))
    bad = make("run", env)
    assert bad.returncode != 0
    lines = own_lines(bad)
    assert " FAILED in " in lines[-5] and "no meta output was published" in lines[-5]
    assert lines[-4] == f"Previous report: {latest}"
    assert lines[-3] == "Failed step sleeves_all_sleeves_succeeded: see the sleeves below"
    assert lines[-2:] == ["1 failed sleeve:", "  broken_sleeve: ValueError: boom from the strategy"]
    assert latest.read_bytes() == report.read_bytes()  # the previous report stays the latest

    # a bad param value: the sleeves step fails at the registry load, and its cause is the last line
    env["QUANT_META_SLEEVES"] = str(write_registry(tmp_path / "bad_value.yaml", BAD_VALUE))
    bad = make("run", env)
    assert bad.returncode != 0
    assert own_lines(bad)[-1] == (
        f"Failed step sleeves: RegistryError: registry file '{tmp_path / 'bad_value.yaml'}', sleeve 'mom' (line 3): "
        "strategy 'momentum_12_1', param 'top_n' (line 6): must be an integer >= 1, got 0"
    )


BAD_VALUE = """
sleeves:
  - name: mom
    strategy: momentum_12_1
    params:
      top_n: 0
"""
