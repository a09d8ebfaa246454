"""Ray unreachable through Dagster: the real entry point, a closed port, a bounded failure."""

from __future__ import annotations

import socket
import time

import pytest

from quant_meta_assets_tests.conftest import REPO_ROOT, run_cli, write_registry
from quant_meta_assets_tests.dagster_defs.test_graph import GOOD

pytestmark = [pytest.mark.timeout(150)]


def _closed_port() -> int:
    """Port 1 is normally closed; double-check that nothing listens there."""
    with socket.socket() as sock:
        sock.settimeout(1)
        assert sock.connect_ex(("127.0.0.1", 1)) != 0, "something listens on 127.0.0.1:1"
    return 1


@pytest.mark.slow  # the CLI in a subprocess: out of make test-fast (<= 3 min)
def test_meta_full_fails_fast_naming_the_unreachable_ray_address(tmp_path, isolated_env):
    port = _closed_port()
    address = f"127.0.0.1:{port}"
    env = {
        "PYTHONPATH": str(REPO_ROOT),
        "RAY_ADDRESS": address,
        "QUANT_META_SLEEVES": str(write_registry(tmp_path / "s.yaml", GOOD)),
    }
    t0 = time.monotonic()
    proc = run_cli(["dagster", "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full"], env, timeout=120)
    elapsed = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert elapsed < 60, f"an unreachable Ray must fail fast, took {elapsed:.1f} s"
    assert f"Ray is unreachable at '{address}'" in output, output[-3000:]
    assert "RayUnavailableError" in output
    # nothing was computed or stored but the run's prices snapshot (taken before the sleeves step)
    storage = tmp_path / "storage"
    stored = [p for p in storage.rglob("*.parquet") if "prices" not in p.relative_to(storage).parts]
    assert not stored, stored


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_meta_full_fails_in_bounded_time_when_something_else_listens_at_ray_address(tmp_path, isolated_env):
    """The TCP probe passes (a socket accepts) but nothing answers as Ray: ray.init alone would
    retry for minutes; the sleeves step must fail within the engine's connect deadline."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    port = server.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    address = f"127.0.0.1:{port}"
    env = {
        "PYTHONPATH": str(REPO_ROOT),
        "RAY_ADDRESS": address,
        "QUANT_META_SLEEVES": str(write_registry(tmp_path / "s.yaml", GOOD)),
    }
    try:
        t0 = time.monotonic()
        proc = run_cli(["dagster", "job", "execute", "-m", "quant_meta_assets", "-j", "meta_full"], env, timeout=130)
        elapsed = time.monotonic() - t0
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert elapsed < 60, f"took {elapsed:.1f} s"
    assert f"Ray is unreachable at '{address}'" in output, output[-3000:]
