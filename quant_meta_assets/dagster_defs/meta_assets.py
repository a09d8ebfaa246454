"""The four meta assets. Keys mirror the stage ids (`meta.optimize` -> ["meta", "optimize"]);
each body passes the gate (dagster_defs/gate.py: every sleeve good and current, every input of
the current lineage), feeds its stage function from upstream assets, attaches its lineage to the
value and records metadata. No stage logic here."""


import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from quant_meta_assets.code_versions import asset_code_version
from quant_meta_assets.dagster_defs.gate import CurrentLine, derive, require_current
from quant_meta_assets.dagster_defs.instance_queries import sleeve_statuses
from quant_meta_assets.dagster_defs.interrupts import cancel_on_interrupt
from quant_meta_assets.dagster_defs import metadata as md
from quant_meta_assets.dagster_defs.prices import PRICES_KEY, PRICES_SOURCE_KEY
from quant_meta_assets.errors import LineageError
from quant_meta_assets import rates
from quant_meta_assets.meta.costs import DEFAULT_BOOK_COST_BPS
from quant_meta_assets.publishing import lineage
from quant_meta_assets.stages import StageRegistry
from quant_meta_assets.storage import safe_child

GROUP = "meta"
MAX_WEIGHT_ENTRIES = 50  # weight/<sleeve> metadata entries of meta/optimize (the largest weights)


def _key(stage_id: str) -> dg.AssetKey:
    return dg.AssetKey(list(StageRegistry.asset_key(stage_id)))


RETURNS_KEY, OPTIMIZE_KEY, FLATTEN_KEY, REPORT_KEY = (
    _key(s) for s in ("meta.returns", "meta.optimize", "meta.flatten", "meta.report")
)
META_KEYS = [RETURNS_KEY, OPTIMIZE_KEY, FLATTEN_KEY, REPORT_KEY]


def registered_records(sleeves: Mapping[str, Mapping]) -> list[Mapping]:
    """The stored sleeve records of the registry's sleeves, in registry order (stale partitions ignored).

    Stored records (`StoredBundle`) stay lazy: a frame is read when a stage asks for it.
    """
    from quant_meta_assets.sleeves.registry import load_registry
    from quant_meta_assets.storage import StoredBundle

    names = [p.name for p in load_registry()]
    missing = [n for n in names if n not in sleeves]
    if missing:
        raise dg.Failure(description=f"registered sleeves with no stored output: {missing}")
    return [
        sleeves[n].with_meta(sleeve=n) if isinstance(sleeves[n], StoredBundle) else {**sleeves[n], "sleeve": n}
        for n in names
    ]


def _check_sleeves(line: CurrentLine, own: dict, records: list) -> None:
    """The sleeve bundles a step loaded are the ones its lineage names (none replaced meanwhile)."""
    loaded = {str(r["sleeve"]): lineage.sleeve_ref(r.get("run_id"), r.get("data_hash")) for r in records}
    line.check("sleeves as loaded", {**own, "sleeves": loaded})


def _lineage_metadata(own: dict) -> dict:
    return {
        "as_of": own["as_of"],
        "prices_hash": own["prices_hash"],
        "sleeves_digest": lineage.digest(own["sleeves"]),
        "input_runs": dg.JsonMetadataValue(own["inputs"]),
    }


def _date_range(frame: pd.DataFrame | pd.Series) -> dict:
    if len(frame.index) == 0:
        return {}
    return {"start": str(frame.index[0].date()), "end": str(frame.index[-1].date())}


def previous_output(context: dg.AssetExecutionContext, key: dg.AssetKey,
                    only: str | None = None) -> tuple[Any, str | None]:
    """The value of ``key``'s latest successful materialization before this step (its immutable
    run-scoped bundle, ``runs/<run>/<asset key>``), the output an update extends; ``(None, why)``
    when there is none (never materialized, or its bundle is gone: retention). ``only``: read just
    that entry's frames (the report's ``fold_state``, not its every table)."""
    from quant_meta_assets.bundle_values import join_value
    from quant_meta_assets.publishing.snapshot import run_scoped_dir
    from quant_meta_assets.storage import StoredBundle, read_bundle

    records = context.instance.fetch_materializations(key, limit=1).records
    if not records or not records[0].run_id:
        return None, f"no previous {key.to_user_string()}"
    run_id = records[0].run_id
    directory = run_scoped_dir(_storage_root(context), run_id, key.path)
    if not directory.exists():
        return None, f"the previous {key.to_user_string()} (run {run_id}) is no longer stored"
    if only is None:
        return join_value(*read_bundle(directory)), run_id
    keys = [k for k in StoredBundle(directory).frame_keys if k.split("__", 1)[0] == only]
    return join_value(*read_bundle(directory, keys)), run_id


def _storage_root(context: dg.AssetExecutionContext) -> Path:
    from quant_meta_assets import settings

    io_manager = getattr(context.resources, "io_manager", None)
    return io_manager.root() if hasattr(io_manager, "root") else settings.storage_root()


def _update_metadata(update, previous_run: str | None) -> dict:
    """How the output was made: extended from the previous one, or recomputed in full (and why)."""
    return {
        "update": dg.TextMetadataValue(update.describe()),
        "update_mode": update.mode,
        "update_new_rows": dg.IntMetadataValue(int(update.new_rows)),
        **({"extended_run": previous_run} if update.mode == "extend" and previous_run else {}),
    }


def _markdown(frame: pd.DataFrame, floatfmt: str = ".4f") -> dg.MarkdownMetadataValue:
    return md.percent_table(frame)  # weights: percentages (floatfmt is unused)


@dg.asset(
    key=RETURNS_KEY,
    ins={"sleeves": dg.AssetIn(key="sleeves")},
    deps=[PRICES_SOURCE_KEY],  # stale in the UI as soon as a changed price source is observed
    group_name=GROUP,
    code_version=asset_code_version("meta/returns"),
    required_resource_keys={"io_manager"},  # the previous output an update extends is under its root
    kinds={"pandas"},
    description=StageRegistry.get("meta.returns").description,
)
def meta_returns(context: dg.AssetExecutionContext, sleeves: dict) -> pd.DataFrame:
    line = require_current(context)  # the stop-the-line gate, before anything is stored
    records = registered_records(sleeves)
    try:
        own = lineage.for_sleeves(line.step, context.run_id, records)
    except LineageError as exc:
        raise dg.Failure(description=f"stop the line: {exc}") from exc
    line.check(line.step, own)  # the loaded bundles are today's
    with cancel_on_interrupt(context):
        out = StageRegistry.get("meta.returns").run(sleeve_results=records)["meta_returns"]
    from quant_meta_assets.meta.incremental import extend_returns  # pandas only; lazily like the stages

    previous, previous_run = previous_output(context, RETURNS_KEY)
    if previous is not None:
        lineage.detach(previous)
    out, update = extend_returns(previous, out)  # the previous rows + the new ones, or where it was revised
    if update.mode == "full" and previous is not None:
        context.log.info(f"meta/returns: {update.describe()}")
    context.add_output_metadata(
        {"rows": len(out), "sleeves": dg.IntMetadataValue(out.shape[1]), **_date_range(out),
         "sleeve_names": ", ".join(out.columns), **_update_metadata(update, previous_run),
         **_lineage_metadata(own)}
    )
    return lineage.attach(out, own)


class OptimizeConfig(dg.Config):
    """meta.optimize parameters, editable in the launchpad. Per-sleeve mappings override the scalars."""

    method: Literal[
        "equal_weight", "inverse_vol", "min_variance", "risk_parity", "max_sharpe", "mean_variance",
        "max_diversification", "hrp",
    ] = "risk_parity"
    lookback: int = 252
    rebalance_every: int = 21
    min_weight: float = 0.0
    max_weight: float = 1.0
    min_weight_by_sleeve: dict[str, float] | None = None
    max_weight_by_sleeve: dict[str, float] | None = None
    covariance: Literal["auto", "sample", "ledoit_wolf", "oas", "ewma"] = "auto"
    halflife: float | None = None
    expected_returns: Literal["historical", "ewma"] = "historical"
    risk_aversion: float = 1.0
    risk_budget: dict[str, float] | None = None
    groups: dict[str, str] | None = None
    group_caps: dict[str, float] | None = None
    max_turnover: float | None = None
    turnover_penalty: float = 0.0
    # "asset": max_turnover / turnover_penalty measure the meta trade in asset space (what the book pays)
    turnover_space: Literal["sleeve", "asset"] = "sleeve"
    risk_free_rate: float | None = None  # annual; None = the project's ($QUANT_META_RISK_FREE_RATE)
    fallback: list[str] = ["previous_weights", "equal_weight"]
    solver: str = "CLARABEL"

    def optimizer_params(self, sleeves: list[str]) -> dict:
        params = self.model_dump(exclude={"min_weight_by_sleeve", "max_weight_by_sleeve"})
        for name, by_sleeve in (("min_weight", self.min_weight_by_sleeve), ("max_weight", self.max_weight_by_sleeve)):
            if by_sleeve:
                params[name] = {s: by_sleeve.get(s, params[name]) for s in sleeves} | dict(by_sleeve)
        params["fallback"] = tuple(params["fallback"])
        return params


def optimize_metadata(method: str, weights: pd.DataFrame, diagnostics: pd.DataFrame) -> tuple[dict, str | None]:
    """meta/optimize's UI metadata, and the covariance warning (None if every covariance was fine)."""
    from quant_meta_assets.meta.optimize.diagnostics import (  # scipy: not at definitions load
        covariance_summary,
        covariance_warning,
        singular_covariance_rebalances,
    )

    latest = weights.iloc[-1]
    fallbacks = int(diagnostics["fallback_used"].sum()) if "fallback_used" in diagnostics else 0
    cov_warning = covariance_warning(diagnostics)
    metadata = {
        "method": method,
        "rebalances": dg.IntMetadataValue(len(weights)),
        "fallbacks": dg.IntMetadataValue(fallbacks),
        "singular_covariance_rebalances": dg.IntMetadataValue(len(singular_covariance_rebalances(diagnostics))),
        "covariance_warning": dg.MarkdownMetadataValue(
            f"**WARNING** {cov_warning}" if cov_warning else "none: every covariance was well-conditioned"
        ),
        "covariance": dg.TextMetadataValue(covariance_summary(diagnostics) or ""),
        "mean_shrinkage": dg.FloatMetadataValue(float(diagnostics["shrinkage"].mean())),
        **_date_range(weights),
        "latest_weights": _markdown(latest.rename("weight").to_frame()),
        # one UI-plottable entry per sleeve for a small book; at book scale the largest only
        # (every sleeve's weight is in latest_weights)
        **{f"weight/{s}": dg.FloatMetadataValue(float(w))
           for s, w in latest.sort_values(ascending=False).head(MAX_WEIGHT_ENTRIES).items()},
        "max_weight_row_sum_error": dg.FloatMetadataValue(float((weights.sum(axis=1) - 1).abs().max())),
    }
    return metadata, cov_warning


@dg.asset(
    key=OPTIMIZE_KEY,
    ins={
        "meta_returns": dg.AssetIn(key=RETURNS_KEY),
        "sleeves": dg.AssetIn(key="sleeves"),
        "prices": dg.AssetIn(key=PRICES_KEY),
    },
    deps=[PRICES_SOURCE_KEY],  # stale in the UI as soon as a changed price source is observed
    group_name=GROUP,
    code_version=asset_code_version("meta/optimize"),
    required_resource_keys={"io_manager"},  # the previous output an update extends is under its root
    kinds={"cvxpy"},
    description=StageRegistry.get("meta.optimize").description,
)
def meta_weights(
    context: dg.AssetExecutionContext,
    config: OptimizeConfig,
    meta_returns: pd.DataFrame,
    sleeves: dict | None = None,
    prices: pd.DataFrame | None = None,
) -> dict:
    upstream = {"meta/returns": lineage.detach(meta_returns)}
    line = require_current(context, upstream)  # the gate holds here too (a selection may start here)
    own = derive(line, context.run_id, upstream)
    from quant_meta_assets.meta.incremental import optimize_fingerprint

    params = config.optimizer_params(list(meta_returns.columns))
    fingerprint = optimize_fingerprint(
        {**params, "risk_free_rate": rates.resolve(params.get("risk_free_rate"))}, asset_code_version("meta/optimize"))
    previous, previous_run = previous_output(context, OPTIMIZE_KEY)
    if config.turnover_space == "asset":  # the sleeves' holdings price the meta trade in asset space
        if sleeves is None or prices is None:
            raise dg.Failure(description="turnover_space='asset' needs the sleeves' stored weights and the prices snapshot")
        records = registered_records(sleeves)
        _check_sleeves(line, own, records)
        params.update(sleeve_results=records, prices=prices)  # the run's `prices` snapshot
        previous, previous_run = None, "turnover_space='asset' reads the sleeves' holdings: always in full"
    with cancel_on_interrupt(context):
        out = StageRegistry.get("meta.optimize").run(meta_returns=meta_returns, previous=previous,
                                                     fingerprint=fingerprint, **params)
    weights, diagnostics, update = out["meta_weights"], out["optimizer_diagnostics"], out["update"]
    if update.mode == "full" and previous is None and previous_run:
        update = type(update)("full", previous_run, update.new_rows)  # why there was nothing to extend
    metadata, cov_warning = optimize_metadata(config.method, weights, diagnostics)
    if cov_warning:
        context.log.warning(cov_warning)
    context.add_output_metadata({**metadata, **_update_metadata(update, previous_run), **_lineage_metadata(own)})
    return lineage.attach({"weights": weights, "diagnostics": diagnostics, "state": out["optimizer_state"],
                           "append_key": out["append_key"]}, own)


@dg.asset(
    key=FLATTEN_KEY,
    ins={
        "optimized": dg.AssetIn(key=OPTIMIZE_KEY),
        "meta_returns": dg.AssetIn(key=RETURNS_KEY),
        "sleeves": dg.AssetIn(key="sleeves"),
    },
    deps=[PRICES_SOURCE_KEY],  # stale in the UI as soon as a changed price source is observed
    group_name=GROUP,
    code_version=asset_code_version("meta/flatten"),
    required_resource_keys={"io_manager"},  # the previous output an update extends is under its root
    kinds={"pandas"},
    description=StageRegistry.get("meta.flatten").description,
)
def flattened_weights(
    context: dg.AssetExecutionContext, optimized: dict, meta_returns: pd.DataFrame, sleeves: dict
) -> dict:
    upstream = {"meta/returns": lineage.detach(meta_returns), "meta/optimize": lineage.detach(optimized)}
    line = require_current(context, upstream)
    own = derive(line, context.run_id, upstream)
    records = registered_records(sleeves)
    _check_sleeves(line, own, records)
    previous, previous_run = previous_output(context, FLATTEN_KEY)
    with cancel_on_interrupt(context):
        out = StageRegistry.get("meta.flatten").run(
            meta_weights=optimized["weights"], meta_returns=meta_returns, sleeve_results=records, incremental=True,
            previous=previous,
        )
    assets, exposure, update = out["flattened_weights"], out["exposure"], out["update"]
    if update.mode == "full" and previous is None and previous_run:
        update = type(update)("full", previous_run, update.new_rows)
    append_key = dict(out["append_key"])
    # what meta/report checks before folding forward: this output kept the rows of that run's
    append_key["extended_from"] = previous_run if update.mode == "extend" else None
    latest = assets.iloc[-1]
    top = latest.reindex(latest.abs().sort_values(ascending=False).index).head(10)
    context.add_output_metadata(
        {
            "rows": len(assets), "tickers": dg.IntMetadataValue(assets.shape[1]), **_date_range(assets),
            "gross_exposure": dg.FloatMetadataValue(float(exposure["gross"].iloc[-1])),
            "net_exposure": dg.FloatMetadataValue(float(exposure["net"].iloc[-1])),
            "top_exposures": _markdown(top.rename("weight").to_frame()),
            **_update_metadata(update, previous_run),
            **_lineage_metadata(own),
        }
    )
    return lineage.attach(
        {"asset_weights": assets, "meta_weights_daily": out["meta_weights_daily"], "exposure": exposure,
         "append_key": append_key}, own
    )


class ReportConfig(dg.Config):
    """meta.report settings, editable in the launchpad (ops: meta__report: config: ...) and via -c
    (deploy/run.yaml). The risk-free rate is the project's ($QUANT_META_RISK_FREE_RATE), shared with
    the sleeves' cash and the optimizer: one rf convention everywhere."""

    cost_bps: float = Field(
        default=DEFAULT_BOOK_COST_BPS, ge=0.0,
        description="Default half-spread in bps (one-way cost per unit traded) of an asset the cost file "
        "($QUANT_META_COSTS) does not list: the meta's own trades pay it in both views; sleeves trade at their "
        "registry cost_bps and the netted book at the blended rate of the trades it nets.",
    )
    title: str = "Meta-portfolio report"
    mar: float | None = None  # minimum acceptable return for Sortino, per year; None = rf
    risk_window: int | None = None  # rows of the ex-ante covariance; None = the optimizer's lookback
    tolerance: float = 1e-10  # reconciliation tolerance; a larger difference fails the report
    top_k: int = Field(
        default=10, ge=1,  # = report.plots.DEFAULT_TOP_K (not imported here: plotly loads lazily)
        description="The report's plots draw the meta, the benchmarks and the top_k sleeves by average held "
        "meta-weight; every sleeve stays in the (sortable) tables.",
    )


def _fold_vouched(fold_from: Mapping, flattened: Mapping, flatten_run: str | None) -> str | None:
    """None when this run's meta/flatten vouches for the sleeves' weights and costs on the previous
    report's days (it is the output that report read, or extended it after comparing them), else why not."""
    read = fold_from.get("vouched_by")
    if read is not None and read in (flatten_run, (flattened.get("append_key") or {}).get("extended_from")):
        return None
    return (f"meta/flatten (run {flatten_run}) did not extend the output the previous report read (run {read}): "
            "the sleeves' weights on its days are not known to be unchanged")


def _previous_summary(instance: dg.DagsterInstance) -> dict | None:
    records = instance.fetch_materializations(REPORT_KEY, limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    entry = records[0].asset_materialization.metadata.get("report_dir")
    path = Path(str(entry.value)) / "summary.json" if entry is not None else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


@dg.asset(
    key=REPORT_KEY,
    ins={
        "optimized": dg.AssetIn(key=OPTIMIZE_KEY),
        "flattened": dg.AssetIn(key=FLATTEN_KEY),
        "meta_returns": dg.AssetIn(key=RETURNS_KEY),
        "sleeves": dg.AssetIn(key="sleeves"),
        "prices": dg.AssetIn(key=PRICES_KEY),
    },
    deps=[PRICES_SOURCE_KEY],  # stale in the UI as soon as a changed price source is observed
    group_name=GROUP,
    code_version=asset_code_version("meta/report"),
    kinds={"html", "plotly"},
    required_resource_keys={"io_manager"},  # the report's HTML goes under the IO manager's root
    description=StageRegistry.get("meta.report").description,
)
def meta_report(
    context: dg.AssetExecutionContext,
    config: ReportConfig,
    optimized: dict,
    flattened: dict,
    meta_returns: pd.DataFrame,
    sleeves: dict,
    prices: pd.DataFrame,
) -> dict:
    from quant_meta_assets.benchmark import load_benchmark
    from quant_meta_assets.sleeves.registry import load_registry
    from quant_meta_assets.report import headline_metrics, report_markdown_summary

    upstream = {
        "meta/returns": lineage.detach(meta_returns),
        "meta/optimize": lineage.detach(optimized),
        "meta/flatten": lineage.detach(flattened),
    }
    line = require_current(context, upstream)
    own = derive(line, context.run_id, upstream)
    records = registered_records(sleeves)
    _check_sleeves(line, own, records)
    snapshot = lineage.detach(prices) or {}
    if snapshot.get("prices_hash") != own["prices_hash"]:
        raise dg.Failure(
            description=f"stop the line: meta/report: the prices snapshot it loaded ({snapshot.get('prices_hash')}, "
            f"run {snapshot.get('run_id')}) is not the one its inputs were computed on ({own['prices_hash']})"
        )
    sleeve_lineage = {
        s.sleeve: {
            "state": s.state, "run_id": r.run_id, "code_version": r.code_version, "data_version": r.data_version,
            "materialized_at": pd.Timestamp(r.timestamp, unit="s", tz="UTC").isoformat() if r.timestamp else None,
            "start": r.start, "end": r.end,
        }
        for s in sleeve_statuses(context.instance, load_registry())
        if (r := s.stored) is not None
    }
    output_dir = safe_child(context.resources.io_manager.root(), "reports", context.run_id)
    previous, previous_run = previous_output(context, REPORT_KEY, only="fold_state")
    flatten_run = (lineage.detach(flattened) or {}).get("run_id")
    fold_from = (previous or {}).get("fold_state")
    fold_vouched = _fold_vouched(fold_from, flattened, flatten_run) if fold_from else None
    with cancel_on_interrupt(context):
        out = StageRegistry.get("meta.report").run(
            prices=prices,  # this run's snapshot (the `prices` asset), the one the sleeves used
            sleeve_results=records,
            meta_returns=meta_returns,
            meta_weights=optimized["weights"],
            optimizer_diagnostics=optimized["diagnostics"],
            flattened_weights=flattened["asset_weights"],
            meta_weights_daily=flattened["meta_weights_daily"],
            exposure=flattened["exposure"],
            output_dir=output_dir,
            benchmark=load_benchmark(),
            lineage=sleeve_lineage,
            previous=_previous_summary(context.instance),
            fold_from=fold_from, fold_vouched=fold_vouched, vouched_by=flatten_run,
            code_version=asset_code_version("meta/report"),
            **config.model_dump(),
        )
    report = out["report"]
    update = report.pop("update")  # metadata, not stored
    if update.mode == "full" and previous is None and previous_run:
        update = type(update)("full", previous_run, update.new_rows)  # why there was nothing to fold into
    context.log.info(f"report: {Path(report['html']).resolve()}")  # the path a CLI run prints (summary: make report)
    markdown = report_markdown_summary(report)
    context.add_output_metadata(
        {
            "report": md.report_link(report["html"]),
            "report_path": dg.PathMetadataValue(str(report["html"])),
            "headline": md.headline(headline_metrics(report)),
            "report_dir": str(output_dir),
            **{name: dg.MarkdownMetadataValue(text) for name, text in markdown.items()},
            **{name: dg.FloatMetadataValue(float(value)) for name, value in headline_metrics(report).items()},
            **_update_metadata(update, previous_run),
            **_lineage_metadata(own),
        }
    )
    return lineage.attach(report, own)
