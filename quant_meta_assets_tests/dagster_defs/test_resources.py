"""How the sleeves step reaches Ray: a cluster resource's address goes through the engine (code
shipping, preflight, bounded connect), never through the resource's own unbounded ray.init."""

from __future__ import annotations

import socket

import pytest
from dagster_ray import Lifecycle, RayResource

from quant_meta_assets.ray.compute import RayComputeEngine, RayUnavailableError
from quant_meta_assets.dagster_defs.resources import connect_ray, ray_resource
from quant_meta_assets.sleeves.registry import SleeveProfile
from quant_meta_assets_tests.strategies_for_tests import make_prices


class AddressedCluster(RayResource):
    """Stands in for dagster-ray's KubeRayCluster once created: a resource with a host."""

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def name(self) -> str:
        return "addressed-test-cluster"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(60)
def test_a_cluster_resource_is_reached_through_the_engine():
    import ray

    assert not ray.is_initialized()
    port = _closed_port()
    resource = AddressedCluster(lifecycle=Lifecycle(connect=False), redis_port=port)
    engine = RayComputeEngine(connect_timeout_s=3)
    connect_ray(resource, None, engine)
    assert not ray.is_initialized()  # the resource did not connect by itself
    assert engine.target_address() == f"ray://127.0.0.1:{port}"
    with pytest.raises(RayUnavailableError, match=f"ray://127.0.0.1:{port}"):
        engine.execute_sleeves([SleeveProfile(name="x", strategy="equal_weight")], make_prices())


def test_ray_address_wins_and_the_local_resource_stays_local(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")
    engine = RayComputeEngine()
    connect_ray(ray_resource(), None, engine)
    assert engine.target_address() == "10.1.2.3:6379" and engine.address is None
    assert "num_cpus" not in ray_resource().ray_init_options  # never passed with a cluster address


def test_the_local_ray_resource_does_not_set_up_ray_data():
    """dagster-ray's connect applies Ray Data options in the driver and in a remote task (ray.data
    imported in both: ~4 s a run); the sleeves use Ray Core only, so the project's resource skips it."""
    import subprocess
    import sys

    probe = ("import sys; from quant_meta_assets.dagster_defs.resources import ray_resource; "
             "options = ray_resource().data_execution_options; options.apply(); options.apply_remote(); "
             "print('ray.data' in sys.modules, 'ray' in sys.modules and __import__('ray').is_initialized())")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False False", out.stdout + out.stderr[-2000:]
