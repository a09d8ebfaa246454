"""The Dagster + Ray floor of `meta_full` for bench_scale.py: the same graph shape doing no work.

One partitioned `sleeves` asset (one dynamic partition per registered sleeve, one step, local
Ray started through the same dagster-ray resource, one no-op task per CPU, one materialization
per partition), a blocking check, and four meta assets in a chain, on the in-process executor.
Nothing is computed and nothing is stored (in-memory IO manager).

    dagster job execute -f bench/floor_defs.py -j meta_full
"""

import dagster as dg
from dagster_ray import RayResource

from quant_meta_assets.dagster_defs.resources import ray_resource
from quant_meta_assets.sleeves.registry import load_registry

PARTITIONS = dg.DynamicPartitionsDefinition(name="sleeves")


@dg.asset(partitions_def=PARTITIONS, backfill_policy=dg.BackfillPolicy.single_run())
def sleeves(context: dg.AssetExecutionContext, ray_cluster: RayResource):
    import ray

    keys = [p.name for p in load_registry()]
    known = set(context.instance.get_dynamic_partitions("sleeves"))
    if [k for k in keys if k not in known]:
        context.instance.add_dynamic_partitions("sleeves", [k for k in keys if k not in known])
    if not ray.is_initialized():
        ray_cluster.connect(context)
    noop = ray.remote(num_cpus=1)(lambda: None)
    ray.get([noop.remote() for _ in range(max(1, int(ray.cluster_resources().get("CPU", 1))))])
    yield dg.Output(None)
    for key in keys:
        yield dg.AssetMaterialization(asset_key="sleeves", partition=key)


@dg.asset_check(asset=sleeves, blocking=True)
def all_sleeves_succeeded() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


@dg.asset(key=["meta", "returns"], deps=[sleeves])
def meta_returns() -> int:
    return 0


@dg.asset(key=["meta", "optimize"], ins={"r": dg.AssetIn(key=["meta", "returns"])})
def meta_optimize(r: int) -> int:
    return r


@dg.asset(key=["meta", "flatten"], ins={"w": dg.AssetIn(key=["meta", "optimize"])})
def meta_flatten(w: int) -> int:
    return w


@dg.asset(key=["meta", "report"], ins={"f": dg.AssetIn(key=["meta", "flatten"])})
def meta_report(f: int) -> int:
    return f


defs = dg.Definitions(
    assets=[sleeves, meta_returns, meta_optimize, meta_flatten, meta_report],
    asset_checks=[all_sleeves_succeeded],
    jobs=[dg.define_asset_job("meta_full", selection=dg.AssetSelection.all(), executor_def=dg.in_process_executor)],
    resources={"ray_cluster": ray_resource(), "io_manager": dg.mem_io_manager},
)
