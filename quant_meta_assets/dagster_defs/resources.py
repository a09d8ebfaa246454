"""Resources, chosen from the environment in one place (no branching inside assets)."""

from __future__ import annotations

from dagster_ray import Lifecycle, LocalRay
from dagster_ray.configs import RayDataExecutionOptions
from pydantic import Field

from quant_meta_assets import settings


class RayCoreOnly(RayDataExecutionOptions):
    """Ray Data options that are not applied: the sleeves use Ray Core tasks only.

    dagster-ray's `connect` applies its Ray Data execution options in the driver and again in a
    remote task, which imports `ray.data` in both processes: about 4 s of a 6-sleeve run on
    2 cores (bench_scale), with one of the two workers busy doing it before any sleeve starts.
    """

    def apply(self) -> None:
        return None

    def apply_remote(self) -> None:
        return None


class ProjectLocalRay(LocalRay):
    """dagster-ray's LocalRay without the Ray Data set-up (`RayCoreOnly`)."""

    data_execution_options: RayCoreOnly = Field(default_factory=RayCoreOnly)


def ray_resource() -> LocalRay:
    """dagster-ray's LocalRay with the local Ray's options (`ray_cluster.local_init_options`),
    without Ray Data's set-up (`ProjectLocalRay`).

    `connect=False`: the sleeves asset connects itself, and `dagster job execute` does not start
    Ray a second time while tearing down. A cluster (RAY_ADDRESS) is not reached through this
    resource but through `RayComputeEngine.connect` (ARCHITECTURE.md, "Running on a Ray cluster").
    num_cpus is only passed for a local Ray: ray.init raises if it is given with a cluster address.
    `cleanup="never"`: a LocalRay has nothing to delete (its `delete` is a no-op, which dagster-ray
    logged as "Deleted LocalRay", twice per run); the Ray the step connected is still shut down
    (dagster-ray disconnects its context whatever the policy).
    """
    from quant_meta_assets.ray.cluster import local_init_options

    num_cpus = settings.local_ray_num_cpus() if settings.ray_address() is None else None
    return ProjectLocalRay(lifecycle=Lifecycle(connect=False, cleanup="never"),
                           ray_init_options=local_init_options(num_cpus or None))


def connect_ray(ray_cluster, context, engine) -> None:
    """Connect a local Ray once per process (a no-op when Ray is already up).

    Local Ray: dagster-ray's LocalRay connects, and cleans up after the step. A cluster
    (RAY_ADDRESS, or the `ray://` address of a cluster resource such as dagster-ray's
    `KubeRayCluster` built with `Lifecycle(connect=False)`): nothing here;
    `engine.execute_sleeves` connects with a deadline, ships the code of the sleeves it runs
    (runtime_env), runs the preflight, and disconnects afterwards.
    """
    import ray

    if ray.is_initialized():
        return
    if engine.target_address() is None and not isinstance(ray_cluster, LocalRay):
        engine.address = ray_cluster.ray_address  # a cluster the resource created for this run
    if engine.target_address() is not None:
        return
    from quant_meta_assets.ray.notices import quiet_token_auth_notice

    with quiet_token_auth_notice():  # token auth stays on (local_init_options); only Ray's notice goes
        ray_cluster.connect(context)
