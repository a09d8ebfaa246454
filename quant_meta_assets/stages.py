"""StageRegistry: every stage id mapped to its one implementation and its Dagster asset key.

A stage is a function of keyword inputs (named like MetaContext fields) and parameters that
returns a mapping of MetaContext fields. The SDK feeds it from a MetaContext; the Dagster
assets feed it from upstream assets. Nothing else implements a stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from quant_meta_assets.errors import StageInputError, UnknownStageError


@dataclass(frozen=True)
class Stage:
    stage_id: str
    run: Callable[..., dict[str, Any]]
    inputs: tuple[str, ...]  # MetaContext fields read
    outputs: tuple[str, ...]  # MetaContext fields written
    asset_key: tuple[str, ...] | None  # Dagster asset key path, None for composite stages
    description: str

    def __call__(self, **kwargs: Any) -> dict[str, Any]:
        return self.run(**kwargs)


class SleeveFrames(Mapping):
    """sleeve name -> one frame (``key``) of each successful sleeve record, fetched on access and
    not kept: with stored (lazy) records a consumer holds one sleeve's frame at a time."""

    def __init__(self, sleeve_results: list[Mapping], key: str) -> None:
        self._records = {r["sleeve"]: r for r in sleeve_results if r.get("status") == "success"}
        self._key = key

    def __getitem__(self, sleeve: str) -> Any:
        return self._records[sleeve][self._key]

    def read_since(self, sleeve: str, since: Any) -> Any:
        """The frame's rows from ``since`` on; a stored record reads only the chunks holding them."""
        record = self._records[sleeve]
        read = getattr(record, "frame", None)
        return read(self._key, since=since) if read is not None else record[self._key].loc[since:]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)


def _sleeve_frames(sleeve_results: list[Mapping], key: str) -> Mapping[str, Any]:
    return SleeveFrames(sleeve_results, key)


def run_returns(*, sleeve_results: list[Mapping]) -> dict[str, Any]:
    from quant_meta_assets.meta.returns import aggregate_returns

    return {"meta_returns": aggregate_returns(sleeve_results)}


def run_optimize(*, meta_returns, sleeve_results: list[Mapping] | None = None, prices=None,
                 fingerprint: str | None = None, previous: Mapping | None = None,
                 **params: Any) -> dict[str, Any]:
    """``turnover_space="asset"`` also needs the sleeves' daily weights and the prices (their
    holdings at each decision date), unless ``sleeve_holdings`` is given.

    Incremental (``fingerprint`` given, ``meta.incremental``): resumes ``previous`` (a stored
    output of the same configuration) when the returns append to its returns, and also returns
    ``optimizer_state``, ``append_key`` and ``update`` (how it was made)."""
    from quant_meta_assets.meta.optimize import optimize_meta_weights

    if params.get("turnover_space") == "asset" and params.get("sleeve_holdings") is None:
        if sleeve_results is None or prices is None:
            raise StageInputError("meta.optimize with turnover_space='asset' needs sleeve_results and prices "
                                  "(or sleeve_holdings): the sleeves' holdings price the meta trade")
        from quant_meta_assets import rates
        from quant_meta_assets.meta.costs import DriftedSleeveHoldings
        from quant_meta_assets.prices import asset_returns

        params["sleeve_holdings"] = DriftedSleeveHoldings(
            _sleeve_frames(sleeve_results, "weights"), asset_returns(prices),
            cash_return=rates.daily_rate(params.get("risk_free_rate")),
        )
    if fingerprint is not None:
        from quant_meta_assets.meta.incremental import extend_optimize

        result, key, update = extend_optimize(previous, meta_returns, fingerprint, **params)
        return {"meta_weights": result.weights, "optimizer_diagnostics": result.diagnostics,
                "optimizer_state": result.state, "append_key": key, "update": update}
    result = optimize_meta_weights(meta_returns, **params)
    return {"meta_weights": result.weights, "optimizer_diagnostics": result.diagnostics}


def run_flatten(*, meta_weights, meta_returns, sleeve_results: list[Mapping], incremental: bool = False,
                previous: Mapping | None = None) -> dict[str, Any]:
    """Incremental (``meta.incremental``): only the rows after ``previous`` (a stored output) when
    every input it read is unchanged on its rows; also returns ``append_key`` and ``update``."""
    from quant_meta_assets.meta.flatten import flatten_weights

    costs = dict(_sleeve_frames(sleeve_results, "costs"))  # small: one series per sleeve
    if incremental:
        from quant_meta_assets.meta.incremental import extend_flatten

        bundles = {str(r["sleeve"]): (r.get("run_id"), r.get("extended_from"))  # which stored bundle each is
                   for r in sleeve_results if r.get("status") == "success"}
        result, key, update = extend_flatten(previous, meta_weights, _sleeve_frames(sleeve_results, "weights"),
                                             meta_returns, costs, bundles=bundles)
        extra = {"append_key": key, "update": update}
    else:
        result = flatten_weights(meta_weights, _sleeve_frames(sleeve_results, "weights"), meta_returns, costs)
        extra = {}
    return {
        "flattened_weights": result.asset_weights,
        "meta_weights_daily": result.meta_weights_daily,
        "exposure": result.exposure,
        **extra,
    }


def run_report(
    *,
    prices,
    sleeve_results: list[Mapping],
    meta_returns,
    meta_weights,
    optimizer_diagnostics,
    flattened_weights,
    meta_weights_daily,
    exposure,
    output_dir=None,
    benchmark=None,
    lineage=None,
    previous=None,
    **params: Any,
) -> dict[str, Any]:
    from quant_meta_assets.meta.flatten import FlattenResult
    from quant_meta_assets.prices import asset_returns
    from quant_meta_assets.report import build_report
    from quant_meta_assets.settings import storage_root

    if output_dir is None:
        output_dir = storage_root() / "reports" / "sdk"
    report = build_report(
        sleeve_returns=meta_returns,
        meta_weights=meta_weights,
        diagnostics=optimizer_diagnostics,
        flatten=FlattenResult(flattened_weights, meta_weights_daily, exposure),
        sleeve_weights=_sleeve_frames(sleeve_results, "weights"),
        sleeve_costs=dict(_sleeve_frames(sleeve_results, "costs")),  # small: read once, kept
        sleeve_turnover=dict(_sleeve_frames(sleeve_results, "turnover")),
        asset_returns=asset_returns(prices),
        benchmark=benchmark,
        lineage=lineage,
        previous=previous,
        output_dir=output_dir,
        **params,
    )
    return {"report": report}


def run_full(**params: Any) -> dict[str, Any]:
    """Composite stage; see `sdk.run_meta_pipeline` (it fills a MetaContext in place)."""
    from quant_meta_assets.sdk import run_meta_pipeline

    context = run_meta_pipeline(**params)
    return {name: getattr(context, name) for name in context.filled()}


class StageRegistry:
    """Stage id -> Stage. `meta.full` is composite: sleeves on Ray, then every meta stage."""

    _stages: dict[str, Stage] = {
        s.stage_id: s
        for s in (
            Stage("meta.returns", run_returns, ("sleeve_results",), ("meta_returns",), ("meta", "returns"),
                  "Align the successful sleeves' daily returns, each from its first live day to its last (outer join)."),
            Stage("meta.optimize", run_optimize, ("meta_returns",), ("meta_weights", "optimizer_diagnostics"),
                  ("meta", "optimize"), "Walk-forward meta-weights across sleeves (cvxpy)."),
            Stage("meta.flatten", run_flatten, ("meta_weights", "meta_returns", "sleeve_results"),
                  ("flattened_weights", "meta_weights_daily", "exposure"), ("meta", "flatten"),
                  "Project the meta-weights onto the book's asset holdings (shares drift with gross sleeve returns); gross and net exposure."),
            Stage("meta.report", run_report,
                  ("prices", "sleeve_results", "meta_returns", "meta_weights", "optimizer_diagnostics",
                   "flattened_weights", "meta_weights_daily", "exposure"),
                  ("report",), ("meta", "report"), "Forensic report: metrics, attribution, reconciliations."),
            Stage("meta.full", run_full, (), ("sleeve_results", "meta_returns", "meta_weights", "flattened_weights", "report"),
                  None, "Every sleeve on Ray, the stop-the-line check, then every meta stage."),
        )
    }

    @classmethod
    def ids(cls) -> list[str]:
        return list(cls._stages)

    @classmethod
    def get(cls, stage_id: str) -> Stage:
        try:
            return cls._stages[stage_id]
        except KeyError:
            raise UnknownStageError(
                f"unknown stage id {stage_id!r}; known stages: {', '.join(cls._stages)}"
            ) from None

    @classmethod
    def asset_key(cls, stage_id: str) -> tuple[str, ...] | None:
        return cls.get(stage_id).asset_key

    @classmethod
    def meta_stages(cls) -> list[Stage]:
        """The stages that are Dagster assets, in execution order."""
        return [s for s in cls._stages.values() if s.asset_key is not None]

    @classmethod
    def missing_inputs(cls, stage_id: str, available: Mapping[str, Any]) -> list[str]:
        return [name for name in cls.get(stage_id).inputs if available.get(name) is None]

    @classmethod
    def require_inputs(cls, stage_id: str, available: Mapping[str, Any]) -> None:
        missing = cls.missing_inputs(stage_id, available)
        if missing:
            raise StageInputError(
                f"stage {stage_id!r} needs MetaContext field(s) {missing}; fill them or run the "
                f"stages that produce them first"
            )
