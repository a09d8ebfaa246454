"""Updates on a real local Ray: a worker gets only the window and the state (the shared panel is
empty), and the driver's extension equals a full recompute."""

from __future__ import annotations

import numpy as np
import pytest

from quant_meta_assets.costs.cost_model import load_cost_model
from quant_meta_assets.incremental.prefix import PanelHashes
from quant_meta_assets.incremental.resume import UpdateJob, plan_sleeve
from quant_meta_assets.ray.compute import NEEDS_FULL, RayComputeEngine, finish_update
from quant_meta_assets.sleeves.engine import run_sleeve
from quant_meta_assets.sleeves.registry import SleeveProfile
from quant_meta_assets_tests.strategies_for_tests import make_prices, spec

pytestmark = [pytest.mark.timeout(120)]


def test_updates_run_on_ray_from_their_window_alone(local_ray):
    prices = make_prices(n_days=400)
    profiles = [SleeveProfile(name="mom", strategy="momentum_12_1", params={"lookback": 60, "skip": 5, "top_n": 2},
                              rebalance="weekly", cost_bps=5),
                SleeveProfile(name="ew", strategy="equal_weight", cost_bps=5),
                SleeveProfile(name="short", strategy=spec("short_warmup_trend"), cost_bps=5)]
    model = load_cost_model()
    previous = {p.name: run_sleeve(p, prices.iloc[:330], None, model) for p in profiles}
    hashes = PanelHashes(prices)
    jobs = []
    for p in profiles:
        plan = plan_sleeve(p, prices, previous[p.name], hashes=hashes)
        assert plan.update, plan.describe
        jobs.append(UpdateJob(p, prices.iloc[plan.window_start:], previous[p.name]["resume_state"], "r0"))
    outcomes = {o.name: o for o in RayComputeEngine().stream_sleeves(jobs, prices.iloc[:0])}
    assert outcomes["short"].record["status"] == NEEDS_FULL  # its declared warm-up is too short
    assert "warm-up too short" in outcomes["short"].record["error"]
    for name in ("mom", "ew"):
        done = finish_update(outcomes[name], previous[name], hashes.of(list(prices.columns))).to_record()
        full = run_sleeve(next(p for p in profiles if p.name == name), prices, None, model)
        for key in ("returns", "weights", "costs", "turnover"):
            assert done[key].index.equals(full[key].index)
            np.testing.assert_allclose(done[key].to_numpy(dtype=float), full[key].to_numpy(dtype=float),
                                       atol=1e-10, rtol=0)
        assert done["data_hash"] and done["n_days"] == full["returns"].notna().sum()


def test_a_previous_bundle_gone_before_the_append_is_recomputed_in_full(local_ray, tmp_path):
    import shutil

    import dagster as dg

    from quant_meta_assets.dagster_defs.sleeves import _stream_planned
    from quant_meta_assets.ray.compute import SleeveOutcome
    from quant_meta_assets.sleeves.store import SleeveStore

    prices = make_prices(n_days=300)
    profile = SleeveProfile(name="ew", strategy="equal_weight", cost_bps=5)
    old = run_sleeve(profile, prices.iloc[:280], None, load_cost_model())
    store = SleeveStore(tmp_path / "sleeves")
    [bundle] = store.save_stream([SleeveOutcome.from_record(old)], ["ew"])
    plan = plan_sleeve(profile, prices, bundle.meta, from_run="r0")
    assert plan.update
    shutil.rmtree(store.path("ew"))  # pruned between the plan and the append
    streamed = list(_stream_planned(RayComputeEngine(), dg.build_asset_context(), {"ew": profile}, ["ew"],
                                    {"ew": plan}, {"ew": bundle}, prices))
    [(outcome, mode)] = streamed
    assert mode.startswith("full recompute: update not appended: StorageError"), mode
    full = run_sleeve(profile, prices, None, load_cost_model())
    assert outcome.ok and outcome.to_record()["returns"].equals(full["returns"])
