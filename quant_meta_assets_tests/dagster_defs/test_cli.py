"""`dagster job execute -m quant_meta_assets -j meta_full` in a subprocess: the real entry point."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from quant_meta_assets_tests.conftest import REPO_ROOT, run_cli, write_registry
from quant_meta_assets_tests.dagster_defs.test_graph import FAILING, GOOD
from quant_meta_assets_tests.dagster_support import META_DIRS, meta_digest, published_dirs
from quant_meta_assets_tests.faults.conftest import small_price_file  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

def meta_materializations(home: Path) -> int:
    with sqlite3.connect(home / "history" / "runs" / "index.db") as db:
        return db.execute(
            "select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION' "
            "and asset_key like '%meta%'"
        ).fetchone()[0]


def test_cli_job_runs_then_stops_the_line_and_keeps_last_good_outputs(tmp_path, isolated_env):
    storage = tmp_path / "storage"
    env = {"PYTHONPATH": str(REPO_ROOT), "QUANT_META_RAY_NUM_CPUS": "2"}
    env["QUANT_META_SLEEVES"] = str(write_registry(tmp_path / "good.yaml", GOOD))
    run_config = tmp_path / "run_config.yaml"  # the book-level cost from -c, as in the launchpad
    run_config.write_text("ops:\n  meta__report:\n    config:\n      cost_bps: 7.5\n")
    good = run_cli(["dagster", "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full",
                    "-c", str(run_config)], env)
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    assert set(published_dirs(storage)) == set(META_DIRS)
    (summary,) = (storage / "reports").glob("*/summary.json")
    assert json.loads(summary.read_text())["costs"]["cost_bps"] == 7.5
    before = meta_digest(storage)
    n_meta = meta_materializations(isolated_env)
    assert n_meta == 5  # the four stages and meta/published

    env["QUANT_META_SLEEVES"] = str(write_registry(tmp_path / "failing.yaml", FAILING))
    bad = run_cli(["dagster", "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full"], env)
    output = bad.stdout + bad.stderr
    assert bad.returncode != 0
    assert "broken_sleeve" in output and "ValueError: boom from the strategy" in output
    assert meta_materializations(isolated_env) == n_meta  # no meta/* materialization recorded
    assert meta_digest(storage) == before  # the published set is byte-for-byte unchanged


def test_dg_launch_meta_full_covers_the_registered_sleeves(tmp_path, isolated_env, small_price_file):
    """`dg launch --job meta_full` (the primary CLI) with no partition flag runs every registered sleeve."""
    import dagster as dg

    env = {"PYTHONPATH": str(REPO_ROOT), "QUANT_META_RAY_NUM_CPUS": "2", "QUANT_META_PRICES": str(small_price_file)}
    env["QUANT_META_SLEEVES"] = str(write_registry(tmp_path / "good.yaml", GOOD))
    done = run_cli(["dg", "launch", "--job", "meta_full"], env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = dg.DagsterInstance.get().get_run_records()
    records = dg.DagsterInstance.get().fetch_materializations(dg.AssetKey("sleeves"), limit=50).records
    assert {r.partition_key for r in records if r.run_id == run.dagster_run.run_id and r.partition_key} == {
        "equal_weight", "low_volatility", "min_variance"
    }
    assert meta_materializations(isolated_env) == 5  # the four stages and meta/published
