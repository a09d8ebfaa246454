"""Append detection and the per-sleeve plan: which sleeves update and, for the others, why not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.costs.cost_model import CostModel
from quant_meta_assets.incremental.prefix import PanelHashes, compare_prefix, prices_digest
from quant_meta_assets.incremental.resume import plan_sleeve, strategy_warmup
from quant_meta_assets.sleeves.engine import run_sleeve
from quant_meta_assets.sleeves.registry import SleeveProfile, resolve_strategy
from quant_meta_assets.sleeves.strategies import BUILTIN_STRATEGIES
from quant_meta_assets_tests import strategies_for_tests as st
from quant_meta_assets_tests.unit.incremental.helpers import check_update

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return st.make_prices(n_days=400)


def test_an_append_is_detected_and_counted(prices):
    digest = prices_digest(prices.iloc[:300])
    assert compare_prefix(digest, prices).kind == "append"
    assert compare_prefix(digest, prices).new_days == 100
    assert compare_prefix(digest, prices.iloc[:300]).kind == "same"
    shared = PanelHashes(prices)
    assert compare_prefix(digest, prices, hashes=shared).new_days == 100


def test_a_revised_price_is_named_with_its_ticker_and_date(prices):
    old = prices.iloc[:300]
    revised = prices.copy()
    revised.iloc[123, 1] *= 1.001
    check = compare_prefix(prices_digest(old), revised, previous_prices=old)
    assert check.kind == "changed"
    assert check.reason == f"prices revised on {prices.index[123].date().isoformat()} for BBB"
    # without the previous frame: the ticker, and the range it is in
    assert "prices revised for BBB (on or before" in compare_prefix(prices_digest(old), revised).reason


def test_a_new_ticker_removed_dates_and_moved_dates_are_changes(prices):
    digest = prices_digest(prices.iloc[:300])
    wider = prices.assign(EEE=prices["AAA"] * 2)
    assert "new ticker(s) ['EEE']" in compare_prefix(digest, wider).reason
    assert "dates removed" in compare_prefix(digest, prices.iloc[:200]).reason
    assert "dates changed" in compare_prefix(digest, prices.drop(prices.index[10])).reason
    assert "ticker(s) removed" in compare_prefix(digest, prices.drop(columns="DDD")).reason


def test_a_nan_is_a_nan_whatever_its_bits(prices):
    a = prices.iloc[:50].copy()
    a.iloc[:5, 0] = np.nan
    b = a.copy()
    b.iloc[:5, 0] = -np.float64("nan")  # another bit pattern
    assert prices_digest(a) == prices_digest(b)


def test_builtins_declare_their_warmup_from_their_params():
    assert strategy_warmup(BUILTIN_STRATEGIES["momentum_12_1"], {}) == 253
    assert strategy_warmup(BUILTIN_STRATEGIES["momentum_12_1"], {"lookback": 126, "skip": 5}) == 127
    assert strategy_warmup(BUILTIN_STRATEGIES["trend_vol_target"], {"vol_lookback": 300}) == 301
    assert strategy_warmup(BUILTIN_STRATEGIES["equal_weight"], {}) == 1
    assert strategy_warmup(BUILTIN_STRATEGIES["low_volatility"], {"lookback": 20, "top_n": None}) == 21
    assert strategy_warmup(BUILTIN_STRATEGIES["min_variance"], {"lookback": 60}) == 61
    assert strategy_warmup(st.good, {}) is None


def _record(profile, prices):
    return run_sleeve(profile, prices, 0.0, CostModel())


def test_the_plan_names_why_a_sleeve_is_recomputed_in_full(prices):
    profile = SleeveProfile(name="mom", strategy="momentum_12_1", params={"lookback": 60, "skip": 5, "top_n": 2},
                            cost_bps=5)
    record = _record(profile, prices.iloc[:300])
    plan = plan_sleeve(profile, prices, record, from_run="r1")
    assert plan.update and plan.new_days == 100
    assert plan.describe == "update (+100 days from run r1)"
    assert plan_sleeve(profile, prices, None).describe == "full recompute: no previous result"
    assert plan_sleeve(profile, prices, {"status": "error"}).reason == "the previous result failed"
    assert plan_sleeve(profile, prices, record, changed="strategy code changed").reason == "strategy code changed"
    assert plan_sleeve(profile, prices.iloc[:300], record).reason == f"no new dates after {prices.index[299].date()}"
    revised = prices.copy()
    revised.iloc[250, 0] *= 0.99
    assert plan_sleeve(profile, revised, record, previous_prices=prices.iloc[:300]).reason == (
        f"prices revised on {prices.index[250].date()} for AAA")
    old = {k: v for k, v in record.items() if k != "resume_state"}
    assert plan_sleeve(profile, prices, old).reason == "the previous result has no resume state"


def test_a_window_reaching_before_the_history_is_a_full_recompute(prices, monkeypatch):
    fn = resolve_strategy("equal_weight")
    monkeypatch.setattr(fn, "warmup", lambda: 5000)
    profile = SleeveProfile(name="ew", strategy="equal_weight", cost_bps=5)
    plan = plan_sleeve(profile, prices, _record(profile, prices.iloc[:300]))
    assert plan.reason.startswith("not enough history for the warm-up of 5000 rows before")


def test_a_universe_ignores_a_new_ticker_it_does_not_hold(prices):
    profile = SleeveProfile(name="ew", strategy="equal_weight", universe=("AAA", "BBB"), cost_bps=5)
    record = _record(profile, prices.iloc[:300])
    wider = prices.assign(EEE=prices["CCC"] * 3)
    assert plan_sleeve(profile, wider, record).update
    everything = SleeveProfile(name="all", strategy="equal_weight", cost_bps=5)
    assert "new ticker(s) ['EEE']" in plan_sleeve(everything, wider, _record(everything, prices.iloc[:300])).reason


def test_a_plugin_without_warmup_is_recomputed_in_full_and_says_so(prices):
    profile = SleeveProfile(name="plug", strategy=st.spec("good"), cost_bps=5)
    plan = plan_sleeve(profile, prices, _record(profile, prices.iloc[:300]))
    assert plan.describe == (f"full recompute: strategy {st.spec('good')!r} declares no warm-up (fn.warmup): "
                             "recomputed in full every run")


def test_a_plugin_with_a_warmup_updates_like_a_full_run(prices, monkeypatch):
    monkeypatch.setattr(st.first_of_month_equal, "warmup", lambda: 1, raising=False)
    profile = SleeveProfile(name="plug", strategy=st.spec("first_of_month_equal"), rebalance="weekly", cost_bps=5)
    assert check_update(profile, prices, 250, (1, 5, 63)) <= 1e-10


def test_a_lookahead_suspect_is_recomputed_in_full(prices, monkeypatch):
    monkeypatch.setattr(st.peeks_at_tomorrow, "warmup", lambda: 2, raising=False)
    profile = SleeveProfile(name="peek", strategy=st.spec("peeks_at_tomorrow"), cost_bps=5)
    record = _record(profile, prices.iloc[:300])
    assert record["lookahead"]["suspect"]
    plan = plan_sleeve(profile, prices, record)
    assert not plan.update and plan.reason.startswith("look-ahead suspect")


def test_a_warmup_too_short_is_caught_by_the_window_run(prices, monkeypatch):
    from quant_meta_assets.incremental.resume import NotExactError, run_sleeve_update

    fn = resolve_strategy("low_volatility")
    monkeypatch.setattr(fn, "warmup", lambda lookback=63, top_n=5: 10)  # a false declaration
    profile = SleeveProfile(name="lv", strategy="low_volatility", params={"lookback": 40, "top_n": 2}, cost_bps=5)
    record = _record(profile, prices.iloc[:300])
    plan = plan_sleeve(profile, prices, record)
    with pytest.raises(NotExactError, match="warm-up too short"):
        run_sleeve_update(profile, prices.iloc[plan.window_start:], record["resume_state"], 0.0, CostModel())


def test_staleness_names_an_append_as_an_update_and_a_revision_by_ticker(prices):
    from quant_meta_assets.sleeves.status import STALE, StoredSleeve, assess_sleeves

    old = prices.iloc[:300]
    record = StoredSleeve(status="success", config_hash="c", code_hash="k", prices_hash="old", end="2021-02-23")
    append = compare_prefix(prices_digest(old), prices)
    [status] = assess_sleeves({"s": ("c", "k")}, "new", {"s": record}, {"old": append})
    assert status.state == STALE
    assert status.reason.startswith("stale: prices appended (+100 days after 2021-02-23): an incremental update")
    revised = prices.copy()
    revised.iloc[10, 2] += 1.0
    change = compare_prefix(prices_digest(old), revised, previous_prices=old)
    [status] = assess_sleeves({"s": ("c", "k")}, "new", {"s": record}, {"old": change})
    assert f"prices changed (prices revised on {prices.index[10].date()} for CCC;" in status.reason
    [status] = assess_sleeves({"s": ("c", "k")}, "new", {"s": record})  # not known: as before
    assert status.reason == "stale: prices changed (prices hash old -> new)"
