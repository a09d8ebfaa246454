"""sleeve_status: the one answer (missing / failed / stale / current) every Dagster caller uses."""

from __future__ import annotations

from quant_meta_assets.registry import SleeveProfile
from quant_meta_assets.sleeve_status import CURRENT, MISSING, STALE, StoredSleeve, assess_sleeves, config_hash

PROFILE = SleeveProfile(name="a", strategy="equal_weight")


def test_the_risk_free_rate_is_part_of_the_config_hash(monkeypatch):
    """Sleeve cash earns the project's rate, so changing it changes the sleeve's output: the
    stored sleeve must be called stale, naming the config hash."""
    monkeypatch.delenv("QUANT_META_RISK_FREE_RATE", raising=False)
    at_zero = config_hash(PROFILE)
    assert config_hash(PROFILE, risk_free_rate=0.0) == at_zero
    stored = {"a": StoredSleeve(status="success", config_hash=at_zero, prices_hash="p")}
    assert assess_sleeves({"a": config_hash(PROFILE)}, "p", stored)[0].state == CURRENT

    monkeypatch.setenv("QUANT_META_RISK_FREE_RATE", "0.02")
    assert config_hash(PROFILE) == config_hash(PROFILE, risk_free_rate=0.02) != at_zero
    (status,) = assess_sleeves({"a": config_hash(PROFILE)}, "p", stored)
    assert status.state == STALE and "risk-free rate" in status.reason and at_zero in status.reason


def test_run_limits_do_not_change_the_hash_and_missing_is_named():
    import dataclasses

    assert config_hash(dataclasses.replace(PROFILE, timeout_s=5.0, max_retries=3)) == config_hash(PROFILE)
    assert config_hash(dataclasses.replace(PROFILE, cost_bps=7.0)) != config_hash(PROFILE)
    (status,) = assess_sleeves({"a": config_hash(PROFILE)}, "p", {})
    assert status.state == MISSING and status.reason == "never materialized"
