"""sleeves.status: the one answer (missing / failed / stale / current) every Dagster caller uses."""

from __future__ import annotations

from quant_meta_assets.sleeves.registry import SleeveProfile
from quant_meta_assets.sleeves.status import (
    CURRENT,
    MISSING,
    STALE,
    StoredSleeve,
    assess_sleeves,
    code_hash,
    config_hash,
    identity,
)

PROFILE = SleeveProfile(name="a", strategy="equal_weight")


def test_the_risk_free_rate_is_part_of_the_config_hash(monkeypatch):
    """Sleeve cash earns the project's rate, so changing it changes the sleeve's output: the
    stored sleeve must be called stale, naming the config hash."""
    monkeypatch.delenv("QUANT_META_RISK_FREE_RATE", raising=False)
    at_zero = config_hash(PROFILE)
    assert config_hash(PROFILE, risk_free_rate=0.0) == at_zero
    stored = {"a": StoredSleeve(status="success", config_hash=at_zero, prices_hash="p", code_hash=code_hash(PROFILE))}
    assert assess_sleeves({"a": identity(PROFILE)}, "p", stored)[0].state == CURRENT

    monkeypatch.setenv("QUANT_META_RISK_FREE_RATE", "0.02")
    assert config_hash(PROFILE) == config_hash(PROFILE, risk_free_rate=0.02) != at_zero
    (status,) = assess_sleeves({"a": identity(PROFILE)}, "p", stored)
    assert status.state == STALE and "risk-free rate" in status.reason and at_zero in status.reason


def test_run_limits_do_not_change_the_hash_and_missing_is_named():
    import dataclasses

    assert config_hash(dataclasses.replace(PROFILE, timeout_s=5.0, max_retries=3)) == config_hash(PROFILE)
    assert config_hash(dataclasses.replace(PROFILE, cost_bps=7.0)) != config_hash(PROFILE)
    (status,) = assess_sleeves({"a": identity(PROFILE)}, "p", {})
    assert status.state == MISSING and status.reason == "never materialized"


def test_strategy_code_is_part_of_a_sleeves_identity(tmp_path, monkeypatch):
    """Editing a plug-in strategy's function body makes its sleeve stale, named "strategy code
    changed"; the file is read from disk, so a process that imported the old code sees the edit."""
    import importlib
    import os

    package = tmp_path / "plugin_code_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    module = package / "strat.py"
    module.write_text("def weights(prices):\n    return prices * 0 + 1.0 / prices.shape[1]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    plugin = SleeveProfile(name="p", strategy="plugin_code_pkg.strat:weights")
    before = identity(plugin)
    stored = {"p": StoredSleeve(status="success", config_hash=before[0], code_hash=before[1], prices_hash="x")}
    assert assess_sleeves({"p": before}, "x", stored)[0].state == CURRENT
    assert code_hash(plugin) != code_hash(PROFILE)  # the built-ins hash strategies.py instead

    module.write_text("def weights(prices):\n    return (prices * 0 + 1.0 / prices.shape[1]).shift(1)\n")
    os.utime(module, ns=(os.stat(module).st_atime_ns, os.stat(module).st_mtime_ns + 10**9))
    after = identity(plugin)
    assert after[0] == before[0] and after[1] != before[1]  # config unchanged, code changed
    (status,) = assess_sleeves({"p": after}, "x", stored)
    assert status.state == STALE and "strategy code changed" in status.reason and before[1] in status.reason


def test_asset_code_versions_follow_their_sources():
    from quant_meta_assets import code_versions

    versions = {asset: code_versions.asset_code_version(asset) for asset in code_versions.ASSET_SOURCES}
    assert len(set(versions.values())) == len(versions)  # each asset has its own sources
    assert all(len(v) == 16 for v in versions.values())
    import quant_meta_assets.dagster_defs.meta_assets as meta_assets

    assert meta_assets.meta_weights.code_versions_by_key[meta_assets.OPTIMIZE_KEY] == versions["meta/optimize"]


def test_holding_costs_are_part_of_the_config_hash_only_when_there_are_some(monkeypatch, tmp_path):
    """Borrow fees and the funding spread change a sleeve's costs: a change makes it stale. Without
    any the hash is what it was before they existed."""
    for env in ("QUANT_META_COSTS", "QUANT_META_BORROW_BPS", "QUANT_META_FUNDING_SPREAD_BPS",
                "QUANT_META_RISK_FREE_RATE"):
        monkeypatch.delenv(env, raising=False)
    plain = config_hash(PROFILE)
    assert config_hash(PROFILE, holding_costs={}) == plain
    monkeypatch.setenv("QUANT_META_BORROW_BPS", "50")
    with_borrow = config_hash(PROFILE)
    assert with_borrow != plain
    path = tmp_path / "costs.csv"
    path.write_text("ticker,borrow_bps\nAAPL,300\n")
    monkeypatch.setenv("QUANT_META_COSTS", str(path))
    assert config_hash(PROFILE) not in (plain, with_borrow)


def test_the_cost_files_half_spreads_make_only_sleeves_without_cost_bps_stale(monkeypatch, tmp_path):
    import dataclasses

    for env in ("QUANT_META_COSTS", "QUANT_META_BORROW_BPS", "QUANT_META_FUNDING_SPREAD_BPS"):
        monkeypatch.delenv(env, raising=False)
    own_rate = dataclasses.replace(PROFILE, cost_bps=5.0)
    before = config_hash(PROFILE), config_hash(own_rate)
    path = tmp_path / "costs.csv"
    path.write_text("ticker,half_spread_bps\nAAPL,2\n")
    monkeypatch.setenv("QUANT_META_COSTS", str(path))
    assert config_hash(PROFILE) != before[0]  # trades at the file's half-spreads
    assert config_hash(own_rate) == before[1]  # its registry rate, whatever the file says
