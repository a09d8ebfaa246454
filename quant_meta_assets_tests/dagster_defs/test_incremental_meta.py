"""A daily update through the real graph (real Dagster, real Ray): the meta assets extend their
previous materialization, and every meta output equals a full recompute on the same inputs.

The sleeves run on a cut price file, then on the file with more days; the oracle recomputes
meta.returns, meta.optimize, meta.flatten and meta.report in full from the run's stored sleeve bundles.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from quant_meta_assets import settings
from quant_meta_assets.bundle_values import join_value
from quant_meta_assets.dagster_defs.meta_assets import (
    FLATTEN_KEY,
    OPTIMIZE_KEY,
    REPORT_KEY,
    RETURNS_KEY,
    OptimizeConfig,
)
from quant_meta_assets.publishing.snapshot import run_scoped_dir
from quant_meta_assets.stages import StageRegistry
from quant_meta_assets.storage import StoredBundle, read_bundle
from quant_meta_assets_tests.dagster_defs.test_graph import EW_AND_LOW_VOL
from quant_meta_assets_tests.dagster_support import materialize_all, use_registry

pytestmark = [pytest.mark.timeout(420), pytest.mark.slow]  # real Dagster runs on Ray: in `make test`, not test-fast

REGISTRY = EW_AND_LOW_VOL + """\
  - name: momentum
    strategy: momentum_12_1
    cost_bps: 10
"""
N_ROWS = 700
TOL = 1e-10


def _write_prices(path, prices: pd.DataFrame) -> None:
    prices.rename_axis("date").reset_index().to_parquet(path, index=False)


def _stored(run_id: str, key: dg.AssetKey):
    return join_value(*read_bundle(run_scoped_dir(settings.storage_root(), run_id, key.path)))


def _metadata(instance, key: dg.AssetKey) -> dict:
    return instance.fetch_materializations(key, limit=1).records[0].asset_materialization.metadata


def _max_diff(a: pd.DataFrame, b: pd.DataFrame) -> float:
    assert a.index.equals(b.index) and [str(c) for c in a.columns] == [str(c) for c in b.columns]
    x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
    assert np.array_equal(np.isnan(x), np.isnan(y))
    return float(np.nanmax(np.abs(x - y), initial=0.0))


def _full_recompute(run_id: str, names: list[str], report_dir) -> dict:
    """The oracle: every meta stage in full on the sleeve bundles the run stored."""
    from quant_meta_assets.prices import load_prices

    records = [StoredBundle(run_scoped_dir(settings.storage_root(), run_id, ["sleeves", n])).with_meta(sleeve=n)
               for n in names]
    returns = StageRegistry.get("meta.returns").run(sleeve_results=records)["meta_returns"]
    params = OptimizeConfig().optimizer_params(list(returns.columns))
    optimized = StageRegistry.get("meta.optimize").run(meta_returns=returns, **params)
    flat = StageRegistry.get("meta.flatten").run(meta_weights=optimized["meta_weights"], meta_returns=returns,
                                                 sleeve_results=records)
    report = StageRegistry.get("meta.report").run(
        prices=load_prices(), sleeve_results=records, meta_returns=returns, meta_weights=optimized["meta_weights"],
        optimizer_diagnostics=optimized["optimizer_diagnostics"], flattened_weights=flat["flattened_weights"],
        meta_weights_daily=flat["meta_weights_daily"], exposure=flat["exposure"], output_dir=report_dir)["report"]
    return {"returns": returns, **optimized, **flat, "report": report}


def test_daily_updates_extend_and_equal_a_full_recompute(tmp_path, monkeypatch, local_ray):
    from skfolio.datasets import load_sp500_dataset

    prices = load_sp500_dataset().iloc[-N_ROWS:]
    price_file = tmp_path / "prices.parquet"
    monkeypatch.setenv("QUANT_META_PRICES", str(price_file))
    instance = dg.DagsterInstance.get()
    names = use_registry(tmp_path / "s.yaml", REGISTRY, monkeypatch, instance)
    largest = 0.0
    previous_rebalances = None
    for step, cut in enumerate((64, 63, 0)):  # the first run, then +1 day, then +63 days
        _write_prices(price_file, prices.iloc[: N_ROWS - cut] if cut else prices)
        result = materialize_all(instance, names)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        modes = {k.to_user_string(): _metadata(instance, k)["update_mode"].value
                 for k in (RETURNS_KEY, OPTIMIZE_KEY, FLATTEN_KEY, REPORT_KEY)}
        if step == 0:
            assert set(modes.values()) == {"full"}, modes
            assert _metadata(instance, RETURNS_KEY)["update"].value == "full recompute: no previous meta/returns"
        else:
            assert set(modes.values()) == {"extend"}, (modes, {k: _metadata(instance, k)["update"].value
                                                               for k in (RETURNS_KEY, OPTIMIZE_KEY, FLATTEN_KEY,
                                                                         REPORT_KEY)})
            # every sleeve bundle appends to the one the previous flatten read: only its new rows are read
            assert f"{len(names)} sleeve(s) extend the bundles it read" in _metadata(instance, FLATTEN_KEY)["update"].value
        oracle = _full_recompute(result.run_id, names, tmp_path / f"oracle-{step}")
        returns = _stored(result.run_id, RETURNS_KEY)
        returns.attrs.clear()
        optimized = _stored(result.run_id, OPTIMIZE_KEY)
        flattened = _stored(result.run_id, FLATTEN_KEY)
        report = _stored(result.run_id, REPORT_KEY)
        assert report["reconciliations"]["passed"].all()
        assert report["reconciliations"]["check"].tolist() == oracle["report"]["reconciliations"]["check"].tolist()
        diffs = {
            "report_metrics": _max_diff(report["metrics"].select_dtypes("number"),
                                        oracle["report"]["metrics"].select_dtypes("number")),
            "report_costs_daily": _max_diff(report["costs"]["daily"], oracle["report"]["costs"]["daily"]),
            "report_sleeve_totals": _max_diff(report["costs"]["sleeve_totals"],
                                              oracle["report"]["costs"]["sleeve_totals"]),
            "meta_returns": _max_diff(returns, oracle["returns"]),
            "weights": _max_diff(optimized["weights"], oracle["meta_weights"]),
            "asset_weights": _max_diff(flattened["asset_weights"], oracle["flattened_weights"]),
            "meta_weights_daily": _max_diff(flattened["meta_weights_daily"], oracle["meta_weights_daily"]),
            "exposure": _max_diff(flattened["exposure"], oracle["exposure"]),
        }
        assert max(diffs.values()) <= TOL, diffs
        stable = ["status", "weights_from", "n_active_sleeves", "fallback_used", "covariance"]
        pd.testing.assert_frame_equal(optimized["diagnostics"][stable], oracle["optimizer_diagnostics"][stable],
                                      check_dtype=False, check_freq=False)
        assert _max_diff(optimized["diagnostics"][["turnover", "objective", "condition_number", "shrinkage"]],
                         oracle["optimizer_diagnostics"][["turnover", "objective", "condition_number", "shrinkage"]]) <= TOL
        largest = max(largest, *diffs.values())
        if step == 2:  # 63 new days: at least one new rebalance was solved in the update
            assert len(optimized["weights"]) >= previous_rebalances + 2
        previous_rebalances = len(optimized["weights"])
        # the report and the publication see one lineage, as in a full run
        assert _metadata(instance, dg.AssetKey(["meta", "published"]))["published"].value is True
    print(f"largest difference update vs full recompute through Dagster: {largest:.3g}")


def test_a_changed_optimizer_config_recomputes_optimize_and_flatten_in_full_and_says_why(tmp_path, monkeypatch,
                                                                                          local_ray):
    from skfolio.datasets import load_sp500_dataset

    from quant_meta_assets.dagster_defs.definitions import defs

    prices = load_sp500_dataset().iloc[-N_ROWS:]
    price_file = tmp_path / "prices.parquet"
    monkeypatch.setenv("QUANT_META_PRICES", str(price_file))
    instance = dg.DagsterInstance.get()
    names = use_registry(tmp_path / "s.yaml", REGISTRY, monkeypatch, instance)
    _write_prices(price_file, prices.iloc[:-5])
    assert materialize_all(instance, names).success
    _write_prices(price_file, prices)
    result = dg.materialize(defs.resolve_asset_graph().assets_defs, instance=instance,
                            selection=dg.AssetSelection.all(), raise_on_error=False,
                            run_config={"ops": {"meta__optimize": {"config": {"rebalance_every": 10}}}})
    assert result.success
    update = {k.to_user_string(): _metadata(instance, k)["update"].value for k in (RETURNS_KEY, OPTIMIZE_KEY, FLATTEN_KEY)}
    assert update["meta/returns"].startswith("extended: 5 new row(s)"), update
    assert update["meta/optimize"] == ("full recompute: the optimizer's configuration or code changed since the "
                                       "previous output"), update
    assert update["meta/flatten"].startswith("full recompute: the meta-weights dated on or before"), update
    optimized = _stored(result.run_id, OPTIMIZE_KEY)
    positions = optimized["weights"].index.map(_stored(result.run_id, RETURNS_KEY).index.get_loc)
    assert set(np.diff(positions)) == {10}  # the new grid, from the first rebalance


def test_the_daily_schedules_run_after_one_more_session_is_an_update(tmp_path, monkeypatch, local_ray):
    """Two ticks of the daily schedule, the price file gaining the second session's row between
    them: the second scheduled meta_full updates every sleeve by one day, every meta stage extends
    its previous output, and the set is published."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from skfolio.datasets import load_sp500_dataset

    from quant_meta_assets.dagster_defs.definitions import defs
    from quant_meta_assets.dagster_defs.schedules import daily_meta_schedule
    from quant_meta_assets.market_calendar import exchange_calendar

    for name in ("CRON", "TIMEZONE", "CALENDAR", "AFTER_CLOSE_MINUTES"):
        monkeypatch.delenv(f"QUANT_META_SCHEDULE_{name}", raising=False)
    schedule = daily_meta_schedule()
    closes = load_sp500_dataset().iloc[-N_ROWS:]
    closes.index = pd.DatetimeIndex(exchange_calendar("XNYS").sessions_window(pd.Timestamp("2026-11-25"),
                                                                              -len(closes)), name="date")
    price_file = tmp_path / "prices.parquet"
    monkeypatch.setenv("QUANT_META_PRICES", str(price_file))
    instance = dg.DagsterInstance.get()
    names = use_registry(tmp_path / "s.yaml", REGISTRY, monkeypatch, instance)
    runs = []
    for day, rows in ((24, closes.iloc[:-1]), (25, closes)):
        _write_prices(price_file, rows)
        tick = schedule.evaluate_tick(dg.build_schedule_context(
            scheduled_execution_time=datetime(2026, 11, day, 17, 30, tzinfo=ZoneInfo("America/New_York"))))
        (request,) = tick.run_requests
        result = defs.resolve_job_def("meta_full").execute_in_process(instance=instance, tags=request.tags,
                                                                      raise_on_error=False)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        runs.append(result.run_id)
    sleeves = instance.fetch_materializations(dg.AssetKey("sleeves"), limit=50).records
    modes = {r.partition_key: r.asset_materialization.metadata["mode"].value for r in sleeves
             if r.run_id == runs[1] and r.partition_key is not None}
    assert modes == {name: f"update (+1 days from run {runs[0]})" for name in names}
    for key in (RETURNS_KEY, OPTIMIZE_KEY, FLATTEN_KEY, REPORT_KEY):
        metadata = _metadata(instance, key)
        assert metadata["update_mode"].value == "extend", (key, metadata["update"].value)
        assert metadata["extended_run"].value == runs[0]
    assert _metadata(instance, dg.AssetKey(["meta", "published"]))["published"].value is True
