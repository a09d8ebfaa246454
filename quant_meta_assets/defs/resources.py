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


CONNECT_PROBE_TIMEOUT_S = 10.0


def connect_ray(ray_cluster, context) -> None:
    """Connect the dagster-ray resource once per process (a no-op when Ray is already up).

    With RAY_ADDRESS set, a TCP probe first turns "nothing listens there" into a clear error
    naming the address within seconds (ray.init alone retries a dead address for minutes).
    """
    import ray

    from quant_meta_assets.compute import probe_ray_address

    if ray.is_initialized():
        return
    address = settings.ray_address()
    if address:
        probe_ray_address(address, CONNECT_PROBE_TIMEOUT_S)
    ray_cluster.connect(context)
