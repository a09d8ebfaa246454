"""Resources, chosen from the environment in one place (no branching inside assets)."""

from __future__ import annotations

from dagster_ray import Lifecycle, LocalRay

from quant_meta_assets import settings


def ray_resource() -> LocalRay:
    """dagster-ray's LocalRay; `ray.init()` honours RAY_ADDRESS, so the same resource reaches a cluster.

    `connect=False`: the sleeves asset connects itself (a bounded reachability probe first),
    and `dagster job execute` does not start Ray a second time while tearing down.
    num_cpus is only passed for a local Ray: ray.init raises if it is given with a cluster address.
    """
    options: dict = {"include_dashboard": False}
    if settings.ray_address() is None:
        num_cpus = settings.local_ray_num_cpus()
        if num_cpus:
            options["num_cpus"] = num_cpus
    return LocalRay(lifecycle=Lifecycle(connect=False), ray_init_options=options)


def connect_ray(ray_cluster, context, engine) -> None:
    """Connect once per process (a no-op when Ray is already up).

    Local Ray: dagster-ray's LocalRay connects, and cleans up after the step. A cluster
    (RAY_ADDRESS): the engine's bounded connect (TCP probe, then ray.init with a deadline),
    because ray.init alone retries for minutes when something that is not Ray listens there;
    the engine then disconnects after the sleeves ran.
    """
    import ray

    if ray.is_initialized():
        return
    if engine.target_address() is not None:
        engine.connect()
        return
    ray_cluster.connect(context)
