"""The `sleeves` asset (one dynamic partition per sleeve, all computed on Ray in one step) and
its blocking check over the run's own sleeves.

Which sleeves a run computes is decided when the step runs, never when the code location loads:
- a run with partition tags (one partition from the asset page or a sensor, a range or a
  backfill) computes exactly those partitions;
- a run without partition tags (`meta_full` from the CLI, `dg launch`, the UI, a sensor or a
  schedule) computes every sleeve registered *now*: the step reads the registry, adds any
  missing partition (an idempotent add, done by the run that is about to materialize it), stores
  one bundle per sleeve and records one materialization per sleeve partition.
"""

from contextlib import closing

import dagster as dg
import pandas as pd
from dagster_ray import RayResource

from quant_meta_assets.code_versions import asset_code_version
from quant_meta_assets.dagster_defs.instance_queries import SLEEVES_KEY, sleeve_statuses
from quant_meta_assets.dagster_defs.interrupts import cancel_on_interrupt
from quant_meta_assets.dagster_defs.io_manager import ParquetIOManager, PerPartition
from quant_meta_assets.dagster_defs import metadata as md
from quant_meta_assets.dagster_defs.partitions import SLEEVES_PARTITIONS_NAME, sleeve_partitions
from quant_meta_assets.dagster_defs.prices import PRICES_KEY, PRICES_SOURCE_KEY, price_provenance_tags
from quant_meta_assets.publishing import lineage
from quant_meta_assets.sleeves.status import code_hash, config_hash, describe, frame_hash, not_good

CODE_VERSION = asset_code_version("sleeves")
# Every sleeves step takes this pool's slot, so sensor-launched sleeve runs queue for the
# machine instead of each starting a Ray on every CPU at once (limit: dagster.yaml `concurrency`).
RAY_POOL = "quant_meta_ray"

__all__ = ["CODE_VERSION", "all_sleeves_succeeded", "config_hash", "frame_hash", "run_sleeve_keys", "sleeves"]


TRANSIENT_RETRIES = 2  # bounded retries of a step whose only failures were timeouts or worker crashes
ONLY_TAG = "quant_meta/sleeves"  # a run for a set of sleeves without partition tags (the registry sensor's)


def run_sleeve_keys(tags, instance: dg.DagsterInstance) -> list[str] | None:
    """The partitions a run targets, from its tags; None for a run without partition tags."""
    if tags.get(ONLY_TAG):
        return [k for k in tags[ONLY_TAG].split(",") if k]
    if tags.get("dagster/partition") is not None:
        return [tags["dagster/partition"]]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    if start is not None and end is not None:  # a range (a backfill): the partitions between, in order
        existing = list(instance.get_dynamic_partitions(SLEEVES_PARTITIONS_NAME))
        missing = [k for k in (start, end) if k not in existing]
        if missing:
            raise dg.Failure(description=f"partition range {start}..{end}: no sleeves partition {missing}")
        first, last = existing.index(start), existing.index(end)
        return existing[min(first, last): max(first, last) + 1]
    return None


def _data_version(record: dict) -> str:
    """Content hash of the stored frames; a failed sleeve's version is its error's hash."""
    if record["status"] == "success":  # hashed on the worker (compute.SleeveOutcome): frame_hash(returns, weights)
        return record["data_hash"]
    import hashlib

    return "error-" + hashlib.sha256(str(record.get("error")).encode()).hexdigest()[:16]


def _sleeve_metadata(record: dict, profile, prices_hash: str) -> dict:
    metadata = {
        "status": record["status"],
        "config_hash": config_hash(profile),
        "code_hash": code_hash(profile),
        "prices_hash": prices_hash,
        "as_of": record.get("as_of") or "",
        "error": record.get("error") or "",
        "runtime_s": md.seconds(record.get("runtime_s") or 0.0),
        "start": record.get("start") or "",
        "end": record.get("end") or "",
        # incremental (incremental/resume.py): "update (+N days from run X)" or "full recompute: <why>"
        "mode": record.get("mode") or "",
    }
    if record["status"] == "success":  # summaries computed on the worker (compute.SleeveOutcome)
        metadata["n_days"] = dg.IntMetadataValue(int(record["n_days"]))
        metadata["total_return"] = md.total_return(record["total_return"])
        metadata["data_hash"] = record["data_hash"]
        if record.get("delistings"):  # positions closed into cash at their ticker's last price
            metadata["delistings"] = md.delistings(record["delistings"])
        if record.get("lookahead"):  # plug-ins: the prefix-invariance check (sleeves/lookahead.py)
            metadata["lookahead"] = record["lookahead"]["message"]
    return metadata


@dg.asset(
    partitions_def=sleeve_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    ins={"prices": dg.AssetIn(key=PRICES_KEY)},
    deps=[PRICES_SOURCE_KEY],
    code_version=CODE_VERSION,
    group_name="sleeves",
    kinds={"ray", "pandas"},
    pool=RAY_POOL,
    description="Daily returns and weights of each strategy sleeve, computed in parallel on Ray: the run's "
    "partitions, or every registered sleeve when the run has none (meta_full). A failed sleeve is stored "
    "with its status and error (and no data); the check below stops the line.",
)
def sleeves(
    context: dg.AssetExecutionContext,
    ray_cluster: RayResource,
    io_manager: dg.ResourceParam[ParquetIOManager],
    prices: pd.DataFrame,
):
    """Each sleeve's bundle is written (staged) as soon as its Ray task returns, then dropped,
    so the step holds at most the in-flight results.

    Without partition tags (meta_full) each sleeve's bundle is then committed and its partition's
    materialization recorded at once, while the workers compute the next sleeves: Dagster writes
    one event per partition (about 13 ms each in SQLite, 6.5 s at 500 sleeves), and done this way
    those writes overlap the compute instead of following it. A run that fails midway leaves the
    sleeves it finished stored and recorded, and the others as they were: each partition is
    consistent on its own, and the gate holds the meta stages until every sleeve is current.
    With partition tags the IO manager commits the staged bundles at the end (Dagster records
    those materializations from the step's Output)."""
    from quant_meta_assets.ray.compute import RayComputeEngine
    from quant_meta_assets.dagster_defs.resources import connect_ray
    from quant_meta_assets.sleeves.registry import load_registry
    from quant_meta_assets.storage import commit_bundle, discard_bundle

    profiles = {p.name: p for p in load_registry()}  # a broken registry fails the step here, named
    requested = run_sleeve_keys(context.run.tags, context.instance)
    record_now = requested is None or bool(context.run.tags.get(ONLY_TAG))
    if requested is None:
        keys = list(profiles)
        existing = set(context.instance.get_dynamic_partitions(SLEEVES_PARTITIONS_NAME))
        new = [k for k in keys if k not in existing]
        if new:
            context.instance.add_dynamic_partitions(SLEEVES_PARTITIONS_NAME, new)
    else:
        keys = requested
    if record_now and context.retry_number > 0:
        # a retry after transient failures: only the sleeves this run stored as timed out or
        # crashed are computed again; the rest are stored and recorded already
        keys = _transient_failures_of_run(context, keys)
        context.log.info(f"retry {context.retry_number}/{TRANSIENT_RETRIES}: recomputing {keys}")
    if requested is not None:
        unknown = [k for k in keys if k not in profiles]
        if unknown:
            raise dg.Failure(
                description=f"partitions {unknown} are not in the sleeve registry (known: {list(profiles)}); "
                "the registry sensor removes stale partitions"
            )
    snapshot = lineage.detach(prices) or {}
    prices_hash = snapshot.get("prices_hash") or frame_hash(prices)
    as_of = str(prices.index[-1].date())
    provenance = price_provenance_tags(context.instance) if record_now else {}
    plans, previous = _plan_sleeves(context, io_manager, profiles, keys, prices)
    context.log.info(_plan_summary(plans))
    with cancel_on_interrupt(context):  # Ctrl-C cancels the run (and the engine stops its Ray)
        engine = RayComputeEngine()
        connect_ray(ray_cluster, context, engine)
        staged: dict = {}  # written, not yet current
        metadata: dict = {}
        versions: dict = {}
        try:
            # each sleeve's bundle is staged as soon as its task finishes, then its frames are dropped;
            # the stream is closed (its tasks cancelled) even when the step stops at a yield
            with engine, closing(_stream_planned(engine, context, profiles, keys, plans, previous, prices)) as outcomes:
                for outcome, mode in outcomes:
                    # what lineage needs: the bundle's run (it is run-scoped) and its prices
                    name = outcome.name
                    record = {**outcome.record, "run_id": context.run_id, "prices_hash": prices_hash, "as_of": as_of,
                              "mode": mode,
                              # the run whose bundle this one appends to: its rows are those, unchanged (meta.flatten)
                              "extended_from": plans[name].from_run if outcome.appended_to is not None else None}
                    if not outcome.ok:
                        context.log.error(f"sleeve {name} failed: {record.get('error')}")
                    elif (record.get("lookahead") or {}).get("suspect"):
                        context.log.warning(f"sleeve {name}: {record['lookahead']['message']}")
                    metadata[name] = _sleeve_metadata(record, profiles[name], prices_hash)
                    versions[name] = _data_version(record)
                    # an update's outcome holds only its new rows: they are appended to its previous bundle
                    staged[name] = io_manager.stage_partition(
                        context.run_id, context.asset_key, name, record, outcome.parquet,
                        extends=outcome.appended_to, replace_from=outcome.replace_from)
                    if record_now:
                        commit_bundle(staged.pop(name))
                        yield _content_materialization(name, metadata[name], versions[name], provenance)
        except BaseException:
            for item in staged.values():
                discard_bundle(item)
            raise
    ok = sum(m["status"] == "success" for m in metadata.values())
    context.log.info(f"{ok}/{len(keys)} sleeves succeeded on Ray")
    transient = [k for k in keys if metadata[k]["status"] != "success" and _is_transient(metadata[k]["error"])]
    if transient and context.retry_number < TRANSIENT_RETRIES:
        wait = 2.0 * 2**context.retry_number
        context.log.warning(f"sleeves {transient} timed out or lost their worker: retrying them in {wait:.0f} s "
                            f"(retry {context.retry_number + 1} of {TRANSIENT_RETRIES})")
        for item in staged.values():
            discard_bundle(item)
        raise dg.RetryRequested(max_retries=TRANSIENT_RETRIES, seconds_to_wait=wait)
    if record_now:  # every bundle is stored and recorded: the step's own output carries nothing
        updated = [k for k in keys if metadata[k]["mode"].startswith("update")]
        yield dg.Output(PerPartition({}), metadata={"sleeves": ", ".join(keys), "n_sleeves": len(keys),
                                                    "n_updates": len(updated),
                                                    "full_recomputes": ", ".join(k for k in keys if k not in updated)})
        return
    for key in keys:
        context.add_asset_metadata(metadata[key], partition_key=key)
    # one partition: its content is the data version of the Output's materialization
    data_version = dg.DataVersion(versions[keys[0]]) if len(keys) == 1 else None
    yield dg.Output({k: staged[k] for k in keys}, data_version=data_version)
    if len(keys) > 1:
        # A range (a backfill) shares one Output, and Dagster 1.13 gives every partition of it one
        # code-derived data version (per-partition versions come only from observable sources, and
        # the stale status reads materializations only). Each partition therefore gets a second
        # materialization, right after, carrying its content hash: the latest one, which the UI's
        # stale status, the lineage and the check read.
        yield from _content_materializations(context.instance, keys, metadata, versions)


def _plan_sleeves(context, io_manager, profiles: dict, keys: list[str], prices: pd.DataFrame) -> tuple[dict, dict]:
    """Per sleeve: an update from its latest stored bundle, or a full recompute and why
    (incremental.resume.plan_sleeve); and the previous bundle of each update (read from storage,
    lazily for its frames; nothing is written)."""
    from quant_meta_assets.dagster_defs.instance_queries import latest_stored_sleeves
    from quant_meta_assets.incremental.prefix import PanelHashes
    from quant_meta_assets.incremental.resume import SleevePlan, plan_sleeve
    from quant_meta_assets.storage import StoredBundle

    latest = latest_stored_sleeves(context.instance, keys)
    hashes = PanelHashes(prices)
    previous_prices: dict = {}
    plans, bundles = {}, {}
    for key in keys:
        profile, stored = profiles[key], latest.get(key)
        if stored is None or not stored.run_id:
            plans[key] = SleevePlan(key, "full", "no previous result")
            continue
        changed = []
        if stored.config_hash != config_hash(profile):
            changed.append("registry entry, risk-free rate or costs changed")
        if stored.code_hash != code_hash(profile):
            changed.append("strategy code changed")
        directory = io_manager._dir(stored.run_id, SLEEVES_KEY, key)
        if not changed and stored.status == "success" and not directory.exists():
            plans[key] = SleevePlan(key, "full", f"the previous bundle of run {stored.run_id} is not stored",
                                    from_run=stored.run_id)
            continue
        try:
            bundle = StoredBundle(directory) if not changed and stored.status == "success" else None
            meta = bundle.meta if bundle is not None else {"status": stored.status}
            plan = plan_sleeve(profile, prices, meta, changed="; ".join(changed) or None, from_run=stored.run_id,
                               hashes=hashes)
            if "prices revised for" in plan.reason:  # name the date from the previous run's snapshot
                if stored.run_id not in previous_prices:
                    previous_prices[stored.run_id] = _stored_prices(io_manager, stored.run_id)
                old = previous_prices[stored.run_id]
                if old is not None:
                    rows = int(meta["resume_state"]["prices"]["rows"])
                    plan = plan_sleeve(profile, prices, meta, from_run=stored.run_id, hashes=hashes,
                                       previous_prices=old.iloc[:rows])
        except Exception as exc:  # an unreadable previous bundle: the full run is always right
            plan = SleevePlan(key, "full", f"no update planned: {type(exc).__name__}: {exc}",
                              from_run=stored.run_id)
        plans[key] = plan
        if plan.update:
            bundles[key] = bundle
    return plans, bundles


def _plan_summary(plans: dict) -> str:
    """One line per mode (updates by their source run; full recomputes by why), naming the sleeves."""
    groups: dict[str, list[str]] = {}
    for name, plan in plans.items():
        groups.setdefault(plan.describe if not plan.update else f"update from run {plan.from_run}", []).append(name)
    n_updates = sum(p.update for p in plans.values())
    lines = [f"{n_updates} sleeve update(s), {len(plans) - n_updates} full recompute(s)"]
    for what, names in groups.items():
        shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        lines.append(f"- {what}: {len(names)} sleeve(s): {shown}")
    return "\n".join(lines)


def _stored_prices(io_manager, run_id: str):
    """The prices snapshot a run stored (to name a revised price's date), or None."""
    from quant_meta_assets.bundle_values import join_value
    from quant_meta_assets.storage import read_bundle

    directory = io_manager._dir(run_id, PRICES_KEY)
    try:
        return join_value(*read_bundle(directory)) if directory.exists() else None
    except Exception:  # noqa: BLE001 - only the message's detail depends on it
        return None


def _stream_planned(engine, context, profiles: dict, keys: list[str], plans: dict, previous: dict,
                    prices: pd.DataFrame):
    """``(outcome, mode)`` per sleeve as each finishes: updates (only their window and state go to
    the worker; the new days are appended to the previous bundle when it is staged, which links
    its earlier years and reads only its last chunk) and full recomputes. An
    update the worker could not prove exact is then recomputed in full, in the same run. The
    whole panel is sent to the workers only when some sleeve is recomputed in full."""
    from quant_meta_assets.incremental.prefix import PanelHashes
    from quant_meta_assets.incremental.resume import UpdateJob
    from quant_meta_assets.ray.compute import NEEDS_FULL, finish_update

    hashes = PanelHashes(prices)
    jobs = []
    for key in keys:
        plan = plans[key]
        if plan.update:
            jobs.append(UpdateJob(profiles[key], prices.iloc[plan.window_start:], previous[key]["resume_state"],
                                  plan.from_run))
        else:
            jobs.append(profiles[key])
    fallback: dict[str, str] = {}
    shared = prices if any(not plans[k].update for k in keys) else prices.iloc[:0]
    with closing(engine.stream_sleeves(jobs, shared)) as outcomes:
        for outcome in outcomes:
            name = outcome.name
            if outcome.record.get("status") == NEEDS_FULL:
                context.log.warning(f"sleeve {name}: update not exact ({outcome.record.get('error')}): "
                                    "recomputing it in full")
                fallback[name] = f"update not exact: {outcome.record.get('error')}"
                continue
            if name in previous:
                try:
                    tickers = previous[name]["resume_state"]["tickers"]
                    outcome = finish_update(outcome, previous[name], hashes.of(tickers))
                except Exception as exc:  # e.g. the previous bundle was pruned meanwhile: the full run is right
                    context.log.warning(f"sleeve {name}: update not appended ({type(exc).__name__}: {exc}): "
                                        "recomputing it in full")
                    fallback[name] = f"update not appended: {type(exc).__name__}: {exc}"
                    continue
            yield outcome, plans[name].describe
    if fallback:
        with closing(engine.stream_sleeves([profiles[k] for k in fallback], prices)) as outcomes:
            for outcome in outcomes:
                yield outcome, f"full recompute: {fallback[outcome.name]}"


def _is_transient(error: str) -> bool:
    from quant_meta_assets.ray.compute import TRANSIENT_ERRORS

    return str(error).split(":", 1)[0] in TRANSIENT_ERRORS


def _transient_failures_of_run(context: dg.AssetExecutionContext, keys: list[str]) -> list[str]:
    """The sleeves among ``keys`` whose latest record is this run's, failed transiently (one bulk read)."""
    from quant_meta_assets.dagster_defs.instance_queries import latest_stored_sleeves

    latest = latest_stored_sleeves(context.instance, keys)
    return [k for k in keys if k in latest and latest[k].run_id == context.run_id
            and latest[k].status != "success" and _is_transient(latest[k].error or "")]


def _content_materializations(instance: dg.DagsterInstance, keys: list[str], metadata: dict, versions: dict):
    provenance = price_provenance_tags(instance)
    for key in keys:
        yield _content_materialization(key, metadata[key], versions[key], provenance)


def _content_materialization(key: str, metadata: dict, version: str, provenance: dict) -> dg.AssetMaterialization:
    """A sleeve partition's materialization with its content hash as Dagster's data version."""
    return dg.AssetMaterialization(
        asset_key=SLEEVES_KEY,
        partition=key,
        metadata=metadata,
        tags={
            "dagster/code_version": CODE_VERSION,
            "dagster/data_version": version,
            "dagster/data_version_is_user_provided": "true",
            **provenance,  # the prices snapshot (and source version) this sleeve was computed on
        },
    )


@dg.asset_check(
    asset=sleeves,
    name="all_sleeves_succeeded",
    blocking=True,
    description="Stop the line: fails (ERROR, blocking) if any sleeve of this run (every registered sleeve "
    "for a run without partition tags) failed, was never materialized or is stale, naming each one and why.",
)
def all_sleeves_succeeded(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    from quant_meta_assets.sleeves.registry import load_registry

    profiles = load_registry()
    own = run_sleeve_keys(context.run.tags, context.instance)
    statuses = sleeve_statuses(context.instance, profiles)
    if own is not None:
        statuses = [s for s in statuses if s.sleeve in set(own)]
    bad = not_good(statuses)
    description = (
        f"{len(bad)} of {len(statuses)} sleeves are not good and current; meta stages blocked:\n" + describe(statuses)
        if bad
        else f"all {len(statuses)} sleeves are good and current"
    )
    if bad:
        context.log.error(description)
    return dg.AssetCheckResult(
        passed=not bad,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "failed_sleeves": dg.MarkdownMetadataValue(
                "| sleeve | state | why |\n|---|---|---|\n"
                + "\n".join(f"| {s.sleeve} | {s.state} | {s.reason.replace('|', '/')} |" for s in bad)
                if bad
                else "none"
            ),
            "n_failed": dg.IntMetadataValue(len(bad)),
            "n_sleeves": dg.IntMetadataValue(len(statuses)),
            **{f"error/{s.sleeve}": s.reason for s in bad},
        },
    )
