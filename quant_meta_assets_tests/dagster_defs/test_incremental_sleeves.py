"""Real Dagster, real Ray: after new days are appended to the price file, the sleeves step updates
each sleeve from its previous bundle, and the stored result equals a fresh full recompute."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from quant_meta_assets.costs.cost_model import load_cost_model
from quant_meta_assets.dagster_defs.definitions import defs
from quant_meta_assets.dagster_defs.instance_queries import latest_stored_sleeves, sleeve_statuses
from quant_meta_assets.prices import load_prices
from quant_meta_assets.sleeves.engine import run_sleeve
from quant_meta_assets.sleeves.registry import load_registry
from quant_meta_assets.storage import StoredBundle, read_json
from quant_meta_assets_tests.conftest import write_registry

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]  # real Dagster runs on Ray: in `make test`, not test-fast

REGISTRY = """
sleeves:
  - name: ew
    strategy: equal_weight
  - name: mom
    strategy: momentum_12_1
    params: {lookback: 126, skip: 21, top_n: 5}
    rebalance: weekly
  - name: minvar
    strategy: min_variance
    params: {lookback: 126}
    rebalance: weekly
  - name: plug
    strategy: quant_meta_assets_tests.strategies_for_tests:good
  - name: short
    strategy: quant_meta_assets_tests.strategies_for_tests:short_warmup_trend
    rebalance: weekly
"""
ROWS, ADDED = 400, 63


def _write(prices, path: Path) -> None:
    prices.rename_axis("date").reset_index().to_csv(path, index=False, float_format="%.17g")


def _modes(instance, run_id: str) -> dict[str, str]:
    records = instance.fetch_materializations(dg.AssetKey("sleeves"), limit=200).records
    return {r.partition_key: r.asset_materialization.metadata["mode"].value
            for r in records if r.run_id == run_id and r.partition_key is not None}


def test_an_append_updates_the_sleeves_and_equals_a_full_run(tmp_path, monkeypatch, local_ray):
    bundled = load_prices().iloc[-(ROWS + ADDED):]
    price_file = tmp_path / "prices.csv"
    _write(bundled.iloc[:ROWS], price_file)
    monkeypatch.setenv("QUANT_META_PRICES", str(price_file))
    monkeypatch.setenv("QUANT_META_SLEEVES", str(write_registry(tmp_path / "sleeves.yaml", REGISTRY)))
    instance = dg.DagsterInstance.get()
    job = defs.resolve_job_def("sleeves_job")
    profiles = load_registry()
    names = [p.name for p in profiles]
    tags = {"quant_meta/sleeves": ",".join(names)}

    first = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    assert set(_modes(instance, first.run_id).values()) == {"full recompute: no previous result"}

    _write(bundled, price_file)  # 63 more days (weekly and monthly rebalances inside)
    # staleness: an append is stale (a run must compute the new days) as an update, not as changed prices
    reasons = {s.sleeve: s.reason for s in sleeve_statuses(instance, profiles)}
    end = bundled.index[ROWS - 1].date().isoformat()
    assert f"prices appended (+{ADDED} days after {end}): an incremental update" in reasons["ew"], reasons["ew"]
    second = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    assert second.success, [e.message for e in second.all_events if e.is_failure]
    modes = _modes(instance, second.run_id)
    for name in ("ew", "mom", "minvar"):
        assert modes[name] == f"update (+{ADDED} days from run {first.run_id})"
    assert modes["plug"].startswith("full recompute: strategy") and "declares no warm-up" in modes["plug"]
    # a warm-up declared too short: the worker cannot reproduce the state, the step recomputes it in full
    assert modes["short"].startswith("full recompute: update not exact: NotExactError"), modes["short"]

    summary = [e.user_message for e in instance.all_logs(second.run_id) if "sleeve update(s)" in (e.user_message or "")]
    # the plan (before the workers ran): `short` is planned as an update, then found not exact
    assert summary and summary[0].startswith("4 sleeve update(s), 1 full recompute(s)"), summary
    assert f"- update from run {first.run_id}: 4 sleeve(s): ew, mom, minvar, short" in summary[0]

    # the gate's answer: every sleeve good and current on the new prices
    assert all(s.ok for s in sleeve_statuses(instance, profiles)), [s.reason for s in sleeve_statuses(instance, profiles)]
    stored = latest_stored_sleeves(instance, names)
    from quant_meta_assets import settings

    prices = load_prices()  # the extended file, validated as the run read it
    worst = 0.0
    for profile in profiles:
        bundle = StoredBundle(settings.storage_root() / "runs" / stored[profile.name].run_id / "sleeves" / profile.name)
        full = run_sleeve(profile, prices, None, load_cost_model())  # a fresh full recompute
        for key in ("returns", "weights", "costs", "turnover"):
            mine, theirs = bundle[key], full[key]
            assert mine.index.equals(theirs.index), (profile.name, key)
            a, b = mine.to_numpy(dtype="float64"), theirs.to_numpy(dtype="float64")
            assert (np.isnan(a) == np.isnan(b)).all()
            worst = max(worst, float(np.nanmax(np.abs(a - b))) if a.size else 0.0)
    assert worst <= 1e-10, worst
    # the update appended to the first run's bundle: its earlier years are the same files (linked)
    runs = settings.storage_root() / "runs"
    before, after = (runs / run / "sleeves" / "ew" for run in (first.run_id, stored["ew"].run_id))
    linked = [p.name for p in after.glob("*.parquet")
              if (before / p.name).exists() and (before / p.name).stat().st_ino == p.stat().st_ino]
    history = {k: read_json(after / "meta.json")["frames"][k]["chunks"][0] for k in ("costs", "returns", "turnover", "weights")}
    assert all(int(c["year"]) < 2022 for c in history.values()), history  # the rows before the last year
    assert sorted(linked) == sorted(c["file"] for c in history.values()), linked

    # a revised past price: a full recompute that names the ticker and the date
    revised = bundled.copy()
    revised.iloc[200, 3] *= 1.01
    _write(revised, price_file)
    reasons = {s.sleeve: s.reason for s in sleeve_statuses(instance, profiles)}
    day, ticker = revised.index[200].date().isoformat(), revised.columns[3]
    assert f"prices changed (prices revised on {day} for {ticker};" in reasons["mom"], reasons["mom"]
    third = job.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    assert third.success
    assert _modes(instance, third.run_id)["ew"] == f"full recompute: prices revised on {day} for {ticker}"
