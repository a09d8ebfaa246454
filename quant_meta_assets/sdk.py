"""QuantSDK and run_meta_pipeline: the in-process driver over the StageRegistry.

Used from notebooks and tests. The Dagster assets drive the very same stage functions; the
only logic here is moving values between a MetaContext and the stage functions, and the
stop-the-line rule: no meta stage runs unless every sleeve succeeded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from quant_meta_assets.context import MetaContext
from quant_meta_assets.errors import SleeveFailureError
from quant_meta_assets.meta.returns import describe_failures, failed_sleeves
from quant_meta_assets.stages import StageRegistry


class QuantSDK:
    """Run any stage in-process: `QuantSDK.run_stage("meta.optimize", context=ctx, method="min_variance")`."""

    @staticmethod
    def run_stage(stage_id: str, context: MetaContext | None = None, **params: Any) -> MetaContext:
        stage = StageRegistry.get(stage_id)
        ctx = context if context is not None else MetaContext()
        if stage_id == "meta.full":
            return run_meta_pipeline(context=ctx, **params)
        inputs = {name: getattr(ctx, name) for name in stage.inputs}
        StageRegistry.require_inputs(stage_id, inputs)
        if stage_id == "meta.optimize" and params.get("turnover_space") == "asset":
            params.setdefault("sleeve_results", ctx.sleeve_results)  # the sleeves' holdings price the trade
            params.setdefault("prices", ctx.prices)
        if stage_id == "meta.report":
            for extra in ("lineage", "previous", "benchmark"):
                if extra in ctx.extras and extra not in params:
                    params[extra] = ctx.extras[extra]
        outputs = stage.run(**inputs, **params)
        for name, value in outputs.items():
            setattr(ctx, name, value)
        return ctx


def raise_if_any_sleeve_failed(results: Sequence[Mapping]) -> None:
    """Stop the line: a RuntimeError naming every failed sleeve with its error."""
    failed = failed_sleeves(results)
    if failed:
        raise SleeveFailureError(
            f"stop the line: {len(failed)} of {len(results)} sleeves failed, no meta stage ran:\n"
            + describe_failures(failed)
        )


def run_meta_pipeline(
    profiles: Sequence | None = None,
    prices=None,
    *,
    context: MetaContext | None = None,
    engine=None,
    optimize: Mapping[str, Any] | None = None,
    report: Mapping[str, Any] | None = None,
    store=None,
) -> MetaContext:
    """Sleeves on Ray, then meta.returns -> meta.optimize -> meta.flatten -> meta.report.

    Each sleeve's result is written to ``store`` (a ``SleeveStore``; default
    ``<storage root>/sdk/sleeves``) as soon as its Ray task finishes, so the driver never holds
    every sleeve's frames; ``ctx.sleeve_results`` are the stored records (frames read on access).
    Raises SleeveFailureError (a RuntimeError) before any meta stage when a sleeve failed.
    """
    from quant_meta_assets import settings
    from quant_meta_assets.ray.compute import RayComputeEngine
    from quant_meta_assets.benchmark import load_benchmark
    from quant_meta_assets.prices import load_prices
    from quant_meta_assets.sleeves.registry import load_registry
    from quant_meta_assets.sleeves.store import SleeveStore

    ctx = context if context is not None else MetaContext()
    if profiles is not None:
        ctx.sleeve_profiles = list(profiles)
    if ctx.sleeve_profiles is None:
        ctx.sleeve_profiles = load_registry()
    if prices is not None:
        ctx.prices = prices
    if ctx.prices is None:
        ctx.prices = load_prices()
        ctx.extras.setdefault("benchmark", load_benchmark())
    engine = engine if engine is not None else RayComputeEngine()
    store = store if store is not None else SleeveStore(settings.storage_root() / "sdk" / "sleeves")
    ctx.sleeve_results = store.save_stream(
        engine.stream_sleeves(ctx.sleeve_profiles, ctx.prices), [p.name for p in ctx.sleeve_profiles]
    )
    raise_if_any_sleeve_failed(ctx.sleeve_results)
    params = {"meta.optimize": dict(optimize or {}), "meta.report": dict(report or {})}
    for stage in StageRegistry.meta_stages():
        QuantSDK.run_stage(stage.stage_id, ctx, **params.get(stage.stage_id, {}))
    return ctx
