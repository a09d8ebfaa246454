"""Stop the line through the SDK driver and bad strategy output through the engine, on a real
local Ray (one per module, 2 CPUs): no mocks between the sleeve and the record."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from quant_meta_assets import MetaContext, RayComputeEngine, run_meta_pipeline
from quant_meta_assets.errors import SleeveFailureError
from quant_meta_assets.sleeves.registry import SleeveProfile
from quant_meta_assets.stages import StageRegistry
from quant_meta_assets_tests.strategies_for_tests import make_prices, spec

pytestmark = [pytest.mark.timeout(120)]


def profile(name: str, strategy: str, **kwargs) -> SleeveProfile:
    return SleeveProfile(name=name, strategy=spec(strategy), rebalance="monthly", **kwargs)


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return make_prices()


@pytest.mark.slow  # ~5 s: the whole SDK pipeline: out of make test-fast (<= 3 min)
def test_run_meta_pipeline_raises_one_error_naming_every_failed_sleeve(local_ray, prices):
    profiles = [
        profile("fine", "good"),
        profile("raiser", "raises"),
        profile("crasher", "crashes", max_retries=0),
        profile("sleeper", "hangs", timeout_s=3),
    ]
    ctx = MetaContext()
    t0 = time.monotonic()
    with pytest.raises(SleeveFailureError) as info:
        run_meta_pipeline(profiles, prices, context=ctx, engine=RayComputeEngine())
    elapsed = time.monotonic() - t0
    assert isinstance(info.value, RuntimeError)
    message = str(info.value)
    assert "3 of 4 sleeves failed, no meta stage ran" in message
    assert "- raiser: ValueError: boom from the strategy" in message
    assert "- crasher: WorkerCrashedError: worker process died while running sleeve 'crasher'" in message
    assert "- sleeper: SleeveTimeout: sleeve 'sleeper' timed out after 3 s" in message
    assert "fine" not in message
    assert elapsed < 30, f"a 3 s timeout must bound the call, took {elapsed:.1f} s"
    # the sleeve records are kept for inspection; no meta stage filled anything
    assert [r["status"] for r in ctx.sleeve_results] == ["success", "error", "error", "error"]
    for stage in StageRegistry.meta_stages():
        for field in stage.outputs:
            assert getattr(ctx, field) is None, field


BAD_OUTPUTS = {
    # sleeve strategy -> what its error must say
    "nan_weights": "non-finite weight nan for ticker 'AAA'",
    "foreign_tickers": "ticker(s) outside the universe: ['NOT_A_TICKER']",
    "off_index_dates": "not in the price index (after the last price date: look-ahead)",
    "empty_weights": "is empty (shape (0, 4))",
    "returns_list": "must be a pandas DataFrame, got list",
}


@pytest.fixture(scope="module")
def bad_output_records(local_ray, prices) -> dict[str, dict]:
    profiles = [profile(name, name) for name in BAD_OUTPUTS]
    records = RayComputeEngine().execute_sleeves(profiles, prices)
    return {r["sleeve"]: r for r in records}


@pytest.mark.parametrize("strategy", list(BAD_OUTPUTS))
def test_bad_strategy_output_becomes_an_error_record(bad_output_records, strategy):
    record = bad_output_records[strategy]
    assert record["status"] == "error"
    assert record["error_type"] == "StrategyOutputError"
    assert record["error"].startswith(f"StrategyOutputError: sleeve {strategy!r}: strategy output")
    assert BAD_OUTPUTS[strategy] in record["error"], record["error"]
    assert all(record[k] is None for k in ("returns", "weights", "costs", "turnover"))
