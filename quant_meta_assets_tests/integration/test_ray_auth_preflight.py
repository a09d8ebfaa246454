"""The local Ray the project starts (RayComputeEngine, no address): token auth is on, a client
without the token (or with a wrong one) is refused with an error saying what to set, a client
with it connects, ships the code and passes the preflight. Real processes, no mocks."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from quant_meta_assets.ray import cluster as ray_cluster
from quant_meta_assets.ray.compute import RayComputeEngine
from quant_meta_assets_tests.strategies_for_tests import spec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

_CLIENT = """
import sys
from quant_meta_assets.ray.compute import RayComputeEngine
engine = RayComputeEngine(address=sys.argv[1], connect_timeout_s=60)
try:
    engine.connect([sys.argv[2]])
    print("CONNECTED")
    engine.close()
except Exception as exc:
    print(type(exc).__name__ + ": " + str(exc))
"""


@pytest.fixture(scope="module")
def project_ray():
    """A local Ray started exactly as the project starts it (the mode is left unset: Ray's default
    for a new local cluster, which we rely on, is token auth), with Ray's own local token.

    The token is not replaced by one of ours: Ray's core caches the token a process first loads,
    so a made-up token would break every later local Ray of this test process."""
    import ray

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    for key in saved:
        os.environ.pop(key, None)
    engine = RayComputeEngine(num_cpus=1)
    engine.connect()
    token = (Path.home() / ".ray" / "auth_token").read_text().strip()  # where Ray keeps a local token
    try:
        yield ray.get_runtime_context().gcs_address, token, os.environ.get("RAY_AUTH_MODE")
    finally:
        engine.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _client(address: str, home, **auth: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env.update(HOME=str(home), **auth)  # a fresh HOME: no ~/.ray/auth_token to fall back on
    out = subprocess.run([sys.executable, "-c", _CLIENT, address, spec("good")], env=env,
                         capture_output=True, text=True, timeout=150)
    return (out.stdout.strip().splitlines() or [out.stderr[-2000:]])[-1]


def test_token_auth_is_on_and_no_dashboard(project_ray):
    import ray

    _, _, mode = project_ray
    assert mode == "token"
    assert not ray._private.worker._global_node.address_info.get("webui_url")


def test_clients_without_the_right_token_are_refused_and_told_what_to_set(project_ray, tmp_path):
    address, token, _ = project_ray
    with ThreadPoolExecutor(3) as pool:  # each refusal takes Ray ~20 s: run them side by side
        no_token = pool.submit(_client, address, tmp_path)
        wrong = pool.submit(_client, address, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
        mode_only = pool.submit(_client, address, tmp_path, RAY_AUTH_MODE="token")
    for result in (no_token.result(), wrong.result(), mode_only.result()):
        assert result.startswith("RayAuthError: "), result
        assert "RAY_AUTH_MODE=token" in result and "RAY_AUTH_TOKEN=<token>" in result and address in result
        assert token not in result
    assert "RAY_AUTH_MODE is not 'token'" in no_token.result()
    assert "may not be the cluster's" in wrong.result()
    assert "no token" in mode_only.result()


def test_client_with_the_token_connects_ships_code_and_passes_preflight(project_ray, tmp_path):
    address, token, _ = project_ray
    assert _client(address, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token) == "CONNECTED"


def test_preflight_reports_every_node_like_the_driver(project_ray):
    address, _, _ = project_ray
    facts = ray_cluster.preflight(address, [spec("good")])
    driver = ray_cluster.driver_facts()
    assert len(facts) == 1
    assert facts[0]["python"] == driver["python"] and facts[0]["ray"] == driver["ray"]
    assert {d: e["version"] for d, e in facts[0]["packages"].items()} == \
        {d: e["version"] for d, e in driver["packages"].items()}
    assert facts[0]["imports"] == {"quant_meta_assets.sleeves.engine": None,
                                   "quant_meta_assets_tests.strategies_for_tests": None}
