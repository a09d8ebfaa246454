"""Optimizer and report settings from a run config file on the CLI:
`dagster job execute -m quant_meta_assets -j meta_full -c deploy/run.yaml` (the example file in the repo)."""

from __future__ import annotations

import json

import pytest
import yaml
from skfolio.datasets import load_sp500_dataset

from quant_meta_assets_tests.conftest import REPO_ROOT, run_cli, write_registry
from quant_meta_assets_tests.dagster_defs.test_graph import GOOD

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

RUN_YAML = REPO_ROOT / "deploy" / "run.yaml"


def _env(tmp_path) -> dict[str, str]:
    prices = load_sp500_dataset().iloc[-800:].rename_axis("date").reset_index()
    prices.to_csv(tmp_path / "prices.csv", index=False)
    return {
        "PYTHONPATH": str(REPO_ROOT),
        "QUANT_META_RAY_NUM_CPUS": "2",
        "QUANT_META_SLEEVES": str(write_registry(tmp_path / "s.yaml", GOOD)),
        "QUANT_META_PRICES": str(tmp_path / "prices.csv"),
    }


def test_example_run_yaml_sets_optimizer_and_report(tmp_path):
    from quant_meta_assets import settings
    from quant_meta_assets.publishing.snapshot import read_published

    config = yaml.safe_load(RUN_YAML.read_text())["ops"]
    optimize, report = config["meta__optimize"]["config"], config["meta__report"]["config"]
    result = run_cli(["dagster", "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full", "-c", str(RUN_YAML)],
                     _env(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    snap = read_published(settings.storage_root())
    diagnostics = snap.outputs["meta/optimize"]["diagnostics"]
    weights = snap.outputs["meta/optimize"]["weights"]
    assert set(diagnostics["method"]) == {optimize["method"]} != {"risk_parity"}  # not the default
    assert weights.max().max() <= optimize["max_weight"] + 1e-8
    grid = snap.outputs["meta/returns"].index[optimize["lookback"] - 1::optimize["rebalance_every"]]
    # the book starts at the first rebalance its live sleeves can fill under max_weight; every one after is held
    assert weights.index.isin(grid).all() and (grid[grid >= weights.index[0]] == weights.index).all()
    assert (diagnostics["lookback"] == optimize["lookback"]).all()
    if weights.index[0] != grid[0]:
        assert "the book starts here" in diagnostics["notes"].iloc[0]
    summary = json.loads((settings.storage_root() / "reports" / snap.run_id / "summary.json").read_text())
    assert summary["costs"]["cost_bps"] == report["cost_bps"] != 0
    assert f"MAR = {report['mar']:.4%} per year" in snap.outputs["meta/report"]["conventions"]["risk_free_rate_used"]
    html = (settings.storage_root() / "reports" / snap.run_id / "report.html").read_text()
    assert report["title"] in html


def test_bad_run_config_fails_naming_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ops:\n  meta__optimize:\n    config:\n      method: magic\n")
    result = run_cli(["dagster", "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full", "-c", str(bad)],
                     _env(tmp_path), timeout=180)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "method" in output and "magic" in output
