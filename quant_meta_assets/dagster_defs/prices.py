"""Prices as assets: the observed source and the per-run snapshot every other step reads.

One prices hash everywhere: the content hash of the *validated frame* (prices.PriceSource).

* `prices_source` (observable source asset): its data version is that hash of the source
  (QUANT_META_PRICES, else skfolio's bundled S&P 500 file). `prices_source_sensor` records a
  new observation when it changes (the UI's "Observe" does the same).
* `prices`: loads and validates the source once per run and stores that snapshot as Parquet
  (run-scoped, see io_manager), with the same hash as its data version and its lineage
  (hash, last date) attached. `sleeves` and `meta/report` take it as an input: they never read
  the file, so one run sees one set of prices.

The gate and the sensors compare each sleeve's recorded prices hash with the source's hash now
(instance_queries.current_prices_hash), so new prices make every sleeve stale without waiting
for a run. Dagster's staleness looks at direct dependencies only, so `sleeves` and the four meta
assets also declare `prices_source` as a dependency: once a changed source is observed, the UI
marks them (and `prices`) stale, with the cause "prices_source has a new data version". The
`prices` step records the version it read as an observation before anything downstream
materializes, so the sleeves and meta stages of a run that read a just-changed file (before the
sensor's next tick) are not shown stale afterwards.

A scheduled run carries the session it is for (tag `quant_meta/session`, schedules.py): its
`prices` step raises StalePricesError ("prices end 2026-11-24, the session is 2026-11-25") when the
file does not reach that session, so nothing downstream runs and nothing is published. Runs
without the tag (`make run`, the CLI, the UI, the sensors) are not checked.

In a run that goes on to the sleeves step, `prices` first frees the Ray pool of dead runs and waits
(bounded, naming the holder) for a slot: see pool.py.
"""

from datetime import date

import dagster as dg
import pandas as pd
from dagster._core.definitions.data_version import (
    DATA_VERSION_TAG,
    extract_data_version_from_entry,
    get_input_data_version_tag,
    get_input_event_pointer_tag,
)

from quant_meta_assets.dagster_defs.interrupts import cancel_on_interrupt
from quant_meta_assets.dagster_defs.pool import wait_for_ray_pool
from quant_meta_assets.market_calendar import SESSION_TAG, check_prices_cover
from quant_meta_assets.prices import PriceSource, load_price_snapshot, price_source
from quant_meta_assets.code_versions import asset_code_version
from quant_meta_assets.publishing import lineage

PRICES_KEY = dg.AssetKey("prices")
PRICES_SOURCE_KEY = dg.AssetKey("prices_source")
CODE_VERSION = asset_code_version("prices")
GROUP = "prices"


def _observation(source: PriceSource) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=PRICES_SOURCE_KEY,
        tags={DATA_VERSION_TAG: source.content_hash},
        metadata={"source": source.label, "content_hash": source.content_hash, "as_of": source.as_of},
    )


@dg.observable_source_asset(
    key=PRICES_SOURCE_KEY,
    group_name=GROUP,
    description="The price file (QUANT_META_PRICES, else skfolio's bundled S&P 500 data); "
    "its data version is the content hash of the validated price frame.",
)
def prices_source() -> dg.DataVersion:
    return dg.DataVersion(price_source().content_hash)


@dg.asset(
    key=PRICES_KEY,
    deps=[PRICES_SOURCE_KEY],
    code_version=CODE_VERSION,
    group_name=GROUP,
    kinds={"pandas", "parquet"},
    description="This run's validated snapshot of the daily adjusted closes (Parquet). Data version: "
    "the content hash of the validated frame. Sleeves and the report read this snapshot, never the file.",
)
def prices(context: dg.AssetExecutionContext) -> dg.Output[pd.DataFrame]:
    from quant_meta_assets.dagster_defs.sleeves import RAY_POOL

    with cancel_on_interrupt(context):
        wait_for_ray_pool(context, RAY_POOL)
    frame, source = load_price_snapshot()
    context.log_event(_observation(source))
    session = context.run.tags.get(SESSION_TAG)
    if session:  # a scheduled run: the prices must reach its session
        check_prices_cover(frame.index[-1].date(), date.fromisoformat(session))
    lineage.attach(frame, {"prices_hash": source.content_hash, "as_of": source.as_of, "run_id": context.run_id})
    return dg.Output(
        frame,
        data_version=dg.DataVersion(source.content_hash),
        metadata={
            "source": source.label,
            "content_hash": source.content_hash,  # what the sleeves record as their prices_hash
            "as_of": source.as_of,
            "rows": dg.IntMetadataValue(len(frame)),
            "tickers": dg.IntMetadataValue(frame.shape[1]),
            "start": str(frame.index[0].date()),
            "end": str(frame.index[-1].date()),
        },
    )


def observed_version(instance: dg.DagsterInstance) -> str | None:
    """The data version last recorded for `prices_source`, or None if it was never observed."""
    record = instance.get_latest_data_version_record(PRICES_SOURCE_KEY, is_source=True)
    if record is None:
        return None
    version = extract_data_version_from_entry(record.event_log_entry)
    return version.value if version is not None else None


def price_provenance_tags(instance: dg.DagsterInstance) -> dict[str, str]:
    """Input-provenance tags naming the current `prices_source` and `prices` versions, for a
    materialization a step records itself (Dagster adds them only to the step's own outputs):
    without them the UI cannot tell whether such a materialization is stale."""
    tags = {}
    for key, is_source in ((PRICES_SOURCE_KEY, True), (PRICES_KEY, False)):
        record = instance.get_latest_data_version_record(key, is_source=is_source)
        version = extract_data_version_from_entry(record.event_log_entry) if record is not None else None
        if version is not None:
            tags[get_input_data_version_tag(key)] = version.value
            tags[get_input_event_pointer_tag(key)] = str(record.storage_id)
    return tags


@dg.sensor(
    name="prices_source_sensor",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Hashes the price source every minute and records an observation of `prices_source` "
    "when its content changed: the UI then shows prices, sleeves and the meta stages stale.",
)
def prices_source_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    source = price_source()
    if observed_version(context.instance) == source.content_hash:
        return dg.SkipReason(f"{source.label} unchanged ({source.content_hash[:12]})")
    return dg.SensorResult(asset_events=[_observation(source)], cursor=source.content_hash)


def stored_price_changes(older: dict[str, str]) -> dict:
    """``{old prices hash: AppendCheck}`` of today's price source against the `prices` snapshot each
    run stored (``older``: old prices hash -> a run that read it); a snapshot that is gone (retention)
    or that is not of that hash is left out."""
    import logging

    from quant_meta_assets import settings
    from quant_meta_assets.bundle_values import join_value
    from quant_meta_assets.incremental.prefix import compare_prefix, prices_digest
    from quant_meta_assets.publishing.snapshot import run_scoped_dir
    from quant_meta_assets.sleeves.status import frame_hash
    from quant_meta_assets.storage import read_bundle

    out: dict = {}
    current = None
    for old_hash, run_id in older.items():
        try:
            directory = run_scoped_dir(settings.storage_root(), run_id, PRICES_KEY.path)
            if not directory.exists():
                continue
            previous = join_value(*read_bundle(directory))
            if frame_hash(previous) != old_hash:
                continue
            if current is None:
                current = load_price_snapshot()[0]
            out[old_hash] = compare_prefix(prices_digest(previous), current, previous_prices=previous)
        except Exception as exc:  # noqa: BLE001 - only the wording of a stale reason depends on it
            logging.getLogger(__name__).debug("price change of %s not known: %s", old_hash, exc)
    return out
