"""QuantSDK: each meta stage fills its MetaContext field; meta.full runs sleeves on real Ray."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets import MetaContext, QuantSDK, RayComputeEngine, StageRegistry, run_meta_pipeline
from quant_meta_assets.ray.compute import SleeveOutcome
from quant_meta_assets.errors import StageInputError, UnknownStageError
from quant_meta_assets.prices import load_prices
from quant_meta_assets.sleeves.registry import load_registry
from quant_meta_assets.sleeves.engine import run_sleeve

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def sleeve_results():
    """The default sleeves computed in-process (the SDK stages downstream are what is tested here)."""
    prices = load_prices()
    profiles = load_registry()
    return prices, profiles, [run_sleeve(p, prices) for p in profiles]


def test_each_meta_stage_fills_its_field(sleeve_results, tmp_path):
    prices, profiles, results = sleeve_results
    ctx = MetaContext(prices=prices, sleeve_profiles=profiles, sleeve_results=results)
    QuantSDK.run_stage("meta.returns", context=ctx)
    assert list(ctx.meta_returns.columns) == [p.name for p in profiles]
    QuantSDK.run_stage("meta.optimize", context=ctx, method="min_variance")
    assert np.allclose(ctx.meta_weights.sum(axis=1), 1.0, atol=1e-9)
    assert len(ctx.optimizer_diagnostics) == len(ctx.meta_weights)
    QuantSDK.run_stage("meta.flatten", context=ctx)
    assert ctx.flattened_weights.index[0] > ctx.meta_weights.index[0]  # applies from the next row
    QuantSDK.run_stage("meta.report", context=ctx, output_dir=tmp_path / "report")
    assert {"metrics", "meta_returns", "html"} <= set(ctx.report)
    assert "meta" in ctx.report["metrics"].index


def test_optimize_runs_on_its_own_from_meta_returns_only(sleeve_results):
    _, _, results = sleeve_results
    frame = pd.DataFrame({r["sleeve"]: r["returns"] for r in results}).dropna()
    ctx = MetaContext(meta_returns=frame)
    QuantSDK.run_stage("meta.optimize", context=ctx, method="min_variance")
    assert ctx.meta_weights.shape[1] == frame.shape[1]
    assert ctx.filled() == ["meta_returns", "meta_weights", "optimizer_diagnostics"]


def test_unknown_stage_lists_known_ones():
    with pytest.raises(UnknownStageError) as info:
        QuantSDK.run_stage("meta.nope", context=MetaContext())
    for stage_id in StageRegistry.ids():
        assert stage_id in str(info.value)


def test_missing_input_names_the_field():
    with pytest.raises(StageInputError, match="meta_returns"):
        QuantSDK.run_stage("meta.optimize", context=MetaContext())
    with pytest.raises(StageInputError, match="meta_weights"):
        QuantSDK.run_stage("meta.flatten", context=MetaContext(meta_returns=pd.DataFrame({"a": [0.0]})))


def test_meta_pipeline_aborts_on_sleeve_failure(sleeve_results):
    prices, profiles, results = sleeve_results
    fake = [results[0], {"sleeve": profiles[1].name, "status": "error", "error": "ZeroDivisionError: division by zero",
                         "returns": None, "weights": None}]
    outcomes = [SleeveOutcome.from_record(r) for r in fake]
    ctx = MetaContext()
    with mock.patch.object(RayComputeEngine, "stream_sleeves", return_value=iter(outcomes)) as execute:
        with pytest.raises(RuntimeError) as info:
            run_meta_pipeline(profiles[:2], prices, context=ctx)
    execute.assert_called_once()
    assert profiles[1].name in str(info.value)
    assert "ZeroDivisionError: division by zero" in str(info.value)
    assert ctx.meta_returns is None and ctx.meta_weights is None  # no meta stage ran


@pytest.mark.slow
def test_meta_full_on_real_ray(local_ray, tmp_path):
    ctx = QuantSDK.run_stage("meta.full", context=MetaContext(), report={"output_dir": tmp_path / "r"})
    assert all(r["status"] == "success" for r in ctx.sleeve_results)
    for field in ("meta_returns", "meta_weights", "flattened_weights", "report"):
        assert getattr(ctx, field) is not None, field
    reconciliations = ctx.report["reconciliations"]
    assert reconciliations["passed"].all()
