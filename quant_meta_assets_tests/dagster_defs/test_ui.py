"""The UI path: `dagster dev` on 127.0.0.1 serves the graph, and a run launched through the
webserver's GraphQL API (what the UI's Materialize button does) succeeds via the daemon."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from skfolio.datasets import load_sp500_dataset

from quant_meta_assets_tests.conftest import REPO_ROOT, write_registry
from quant_meta_assets_tests.dagster_defs.test_graph import GOOD

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_dagster_dev_serves_graph_and_ui_launch_materializes(tmp_path, isolated_env):
    from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

    prices = load_sp500_dataset().iloc[-800:].reset_index().rename(columns={"Date": "date"})
    prices.to_csv(tmp_path / "prices.csv", index=False)
    port = free_port()
    env = {
        **os.environ,
        "QUANT_META_SLEEVES": str(write_registry(tmp_path / "s.yaml", GOOD)),
        "QUANT_META_PRICES": str(tmp_path / "prices.csv"),
        "QUANT_META_RAY_NUM_CPUS": "2",
        "PYTHONPATH": str(REPO_ROOT),
    }
    dagster = Path(sys.executable).with_name("dagster")
    proc = subprocess.Popen(
        [str(dagster), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port)

        def graph_served():
            try:
                result = client._execute("{ assetNodes { assetKey { path } } }")
            except (DagsterGraphQLClientError, Exception):
                return None
            return {"/".join(n["assetKey"]["path"]) for n in result["assetNodes"]} or None

        keys = wait_for(graph_served, 120, "the webserver to serve the asset graph")
        assert {"sleeves", "meta/returns", "meta/optimize", "meta/flatten", "meta/report"} <= keys
        run_id = client.submit_job_execution("meta_full", repository_location_name="quant_meta_assets")

        def finished():
            status = client.get_run_status(run_id).value
            return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

        assert wait_for(finished, 300, "the launched run to finish") == "SUCCESS"
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
