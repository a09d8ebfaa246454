"""The UI path: `dagster dev` on 127.0.0.1 serves the graph, and a run launched through the
webserver's GraphQL API (what the UI's Launch button does) succeeds via the daemon. A long-lived
code server (`dagster api grpc` + the webserver) keeps serving `meta_full` after the registry file
changed under it, with no reload, and each launch covers exactly the registry of its moment."""

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


def sleeves_materialized_by(run_id: str) -> set[str]:
    import dagster as dg

    records = dg.DagsterInstance.get().fetch_materializations(dg.AssetKey("sleeves"), limit=200).records
    return {r.partition_key for r in records if r.run_id == run_id and r.partition_key is not None}


@pytest.mark.timeout(840)
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

        # the sensors are on: the registry sensor runs the three new sleeves too, and every sleeves
        # step waits for the one Ray slot, so meta_full may queue behind three sleeve runs
        assert wait_for(finished, 660, "the launched run to finish") == "SUCCESS"
        # meta_full covered exactly the registered sleeves (the sensors may have run them too)
        assert sleeves_materialized_by(run_id) == {"equal_weight", "low_volatility", "min_variance"}
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)


CHANGED = GOOD.replace("  - name: min_variance\n    strategy: min_variance\n    cost_bps: 5\n", "") + """
  - name: momentum
    strategy: momentum_12_1
    params: {lookback: 126, skip: 21, top_n: 5}
"""


HANGING = """
sleeves:
  - name: hanging
    strategy: quant_meta_assets_tests.strategies_for_tests:hangs
    params: {seconds: 600}
    timeout_s: 900
"""


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)


def test_long_lived_code_server_launches_meta_full_over_the_registry_of_the_moment(tmp_path, isolated_env):
    """`dagster api grpc` (the code server) + the webserver, runs launched directly (no daemon, no
    sensors): the registry file changes under the running code server and meta_full follows it;
    a terminated run ends CANCELED."""
    from dagster_graphql import DagsterGraphQLClient

    (isolated_env / "dagster.yaml").write_text(
        (isolated_env / "dagster.yaml").read_text()
        + "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
    )
    import dagster as dg

    instance = dg.DagsterInstance.get()  # create the SQLite storages before two processes race to
    instance.get_run_records(limit=1)  # migrate them
    instance.get_dynamic_partitions("sleeves")
    registry = write_registry(tmp_path / "sleeves.yaml", GOOD)
    prices = load_sp500_dataset().iloc[-800:].reset_index().rename(columns={"Date": "date"})
    prices.to_csv(tmp_path / "prices.csv", index=False)
    grpc_port, web_port = free_port(), free_port()
    env = {
        **os.environ,
        "QUANT_META_SLEEVES": str(registry),
        "QUANT_META_PRICES": str(tmp_path / "prices.csv"),
        "QUANT_META_RAY_NUM_CPUS": "2",
        "PYTHONPATH": str(REPO_ROOT),
    }
    (tmp_path / "workspace.yaml").write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc_port}\n"
        "      location_name: quant_meta_assets\n"
    )
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen(
        [str(bin_dir / "dagster"), "api", "grpc", "-m", "quant_meta_assets", "-h", "127.0.0.1", "-p", str(grpc_port)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    web = subprocess.Popen(
        [str(bin_dir / "dagster-webserver"), "-w", str(tmp_path / "workspace.yaml"), "-h", "127.0.0.1",
         "-p", str(web_port)],
        cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        client = DagsterGraphQLClient("127.0.0.1", port_number=web_port)

        def served():
            try:
                jobs = client._execute("{ repositoriesOrError { ... on RepositoryConnection { nodes { jobs { name } } } } }")
            except Exception:
                return None
            nodes = jobs["repositoriesOrError"].get("nodes") or []
            return any(j["name"] == "meta_full" for n in nodes for j in n["jobs"]) or None

        wait_for(served, 120, "the webserver to serve meta_full from the code server")

        def launch() -> str:
            run_id = client.submit_job_execution("meta_full", repository_location_name="quant_meta_assets")

            def finished():
                status = client.get_run_status(run_id).value
                return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

            assert wait_for(finished, 240, "the launched run to finish") == "SUCCESS", run_id
            return run_id

        first = launch()
        assert sleeves_materialized_by(first) == {"equal_weight", "low_volatility", "min_variance"}
        write_registry(registry, CHANGED)  # one sleeve out, one in; nothing reloaded
        second = launch()
        assert sleeves_materialized_by(second) == {"equal_weight", "low_volatility", "momentum"}

        # terminating a run while its sleeves wait on Ray (the UI's Terminate: SIGINT to the run
        # worker) ends CANCELED, not FAILURE with Ray's "SystemError: CoreWorker.wait ..."
        write_registry(registry, HANGING)
        run_id = client.submit_job_execution("meta_full", repository_location_name="quant_meta_assets")

        def sleeves_running():
            logs = dg.DagsterInstance.get().all_logs(run_id)
            return any("sleeve" in (e.user_message or "") and "Ray" in (e.user_message or "") for e in logs) or any(
                e.dagster_event and e.dagster_event.event_type_value == "STEP_START" and e.step_key == "sleeves"
                for e in logs
            )

        wait_for(sleeves_running, 120, "the sleeves step to start")
        time.sleep(5)  # inside ray.wait by now
        client.terminate_run(run_id)

        def ended():
            status = client.get_run_status(run_id).value
            return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

        assert wait_for(ended, 120, "the terminated run to end") == "CANCELED"
        messages = " ".join(e.user_message or "" for e in dg.DagsterInstance.get().all_logs(run_id))
        assert "SystemError" not in messages
    finally:
        _stop(web)
        _stop(server)
