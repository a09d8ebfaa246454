"""A node that joins a cluster after the preflight (an autoscaler's) is checked by its first sleeve
task and refused with the preflight's own ClusterPreflightError text. Real Ray tasks (local Ray,
2 CPUs): the check is the worker-side code path of every sleeve task on a cluster."""

from __future__ import annotations

import pytest

from quant_meta_assets.ray import cluster as ray_cluster
from quant_meta_assets.ray.compute import _remote_batch_task
from quant_meta_assets.sleeves.registry import SleeveProfile
from quant_meta_assets_tests.strategies_for_tests import make_prices, spec

pytestmark = [pytest.mark.timeout(300)]


def test_a_late_node_is_checked_on_its_first_task_with_the_preflight_text(local_ray):
    import ray.exceptions

    profile = SleeveProfile(name="late", strategy=spec("good"), rebalance="monthly")
    driver = ray_cluster.driver_facts([profile.strategy])
    modules, trees = ray_cluster.plugin_modules([profile.strategy]), sorted(driver["trees"])
    # a driver on another Ray release: every node that was not probed at connect time must say so
    check = {"address": "10.0.0.9:6379", "driver": {**driver, "ray": "0.0.1"}, "modules": modules,
             "trees": trees, "checked": []}
    prices = make_prices()
    with pytest.raises(ray.exceptions.RayTaskError) as raised:
        ray.get(_remote_batch_task().remote([profile], prices, None, None, None, check), timeout=120)
    error = raised.value.cause
    assert isinstance(error, ray_cluster.ClusterPreflightError)
    node_facts = ray.get(ray.remote(num_cpus=0)(ray_cluster._probe).remote(modules, trees), timeout=120)
    assert str(error) == ray_cluster.preflight_message(check["address"], check["driver"], [node_facts])
    assert f"ray {ray.__version__} on the cluster, driver has 0.0.1" in str(error)

    # a node the preflight probed is not checked again; a node that matches the driver passes
    probed = {**check, "checked": [node_facts["node_id"]]}
    (done,) = ray.get(_remote_batch_task().remote([profile], prices, None, None, None, probed), timeout=120)
    assert done["record"]["status"] == "success"
    matching = {**check, "driver": driver}
    (done,) = ray.get(_remote_batch_task().remote([profile], prices, None, None, None, matching), timeout=120)
    assert done["record"]["status"] == "success"
