"""The deployment, for real: PostgreSQL from Debian's package, deploy/dagster.yaml, `dagster-daemon run`
and `dagster-webserver`. The daemon ticks the sensors and the schedule (turned on through the
webserver's GraphQL API, with a one-minute test cron); run status is read through GraphQL.

Asserted: a sleeve added to the registry is materialized by the sensor's run and the meta stages
follow (the published snapshot then holds it); the schedule runs meta_full; a failing sleeve
stops the line (no meta run, the published snapshot unchanged) and the failure alert reaches a
local webhook naming the sleeve and its error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from skfolio.datasets import load_sp500_dataset

from quant_meta_assets.dagster_defs.sleeves import ONLY_TAG
from quant_meta_assets_tests.conftest import REPO_ROOT
from quant_meta_assets_tests.postgres_server import postgres_server
from quant_meta_assets_tests.webhook_server import webhook_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

LOCATION = {"repositoryLocationName": "quant_meta_assets", "repositoryName": "__repository__"}
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}
SLEEVE_A = """
  - name: equal_weight
    strategy: equal_weight
    cost_bps: 5
"""
SLEEVE_B = """
  - name: low_volatility
    strategy: low_volatility
    cost_bps: 5
"""
BROKEN = """
  - name: broken_sleeve
    strategy: quant_meta_assets_tests.strategies_for_tests:raises
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, every: float = 2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Deployment:
    """The webserver and the daemon as subprocesses (own process groups, always stopped)."""

    def __init__(self, tmp_path: Path, env: dict[str, str]):
        self.env, self.logs, self.procs = env, tmp_path, []
        self.port = _free_port()
        bindir = Path(sys.executable).parent
        self._start("webserver", [str(bindir / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1",
                                  "-p", str(self.port)])
        self._start("daemon", [str(bindir / "dagster-daemon"), "run", "-w", "workspace.yaml"])
        from dagster_graphql import DagsterGraphQLClient

        self.client = DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=60)

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop)
        proc = subprocess.Popen(args, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append((proc, log))

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, log in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            log.close()

    def tail(self, lines: int = 40) -> str:
        out = []
        for name in ("webserver", "daemon"):
            text = (self.logs / f"{name}.log").read_text(errors="replace").splitlines()
            out.append(f"--- {name} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    def query(self, query: str, variables: dict | None = None) -> dict:
        return self.client._execute(query, variables)

    def runs(self) -> list[dict]:
        """Every run, newest first, as the webserver reports it."""
        data = self.query("{ runsOrError { ... on Runs { results { runId jobName status tags { key value } } } } }")
        return [
            {**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in data["runsOrError"]["results"]
        ]

    def status(self, run_id: str) -> str:
        return self.client.get_run_status(run_id).value


def _processes_of(home: Path) -> list[int]:
    """Processes (any user) whose environment has this test's DAGSTER_HOME."""
    marker = f"DAGSTER_HOME={home}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:200]
    except OSError:
        return "?"


def _published_run(storage: Path) -> str | None:
    pointer = storage / "published.json"
    return json.loads(pointer.read_text())["run_id"] if pointer.is_file() else None


def _runs_sleeve(run: dict, name: str) -> bool:
    """A registry-sensor run computes its set of sleeves in one run, named in its tag."""
    return name in run["tags"].get(ONLY_TAG, "").split(",")


def test_daemon_and_webserver_on_postgres(tmp_path):
    from dagster_graphql import DagsterGraphQLClientError

    prices = tmp_path / "prices.csv"
    load_sp500_dataset().iloc[-600:].rename_axis("date").reset_index().to_csv(prices, index=False)
    registry = tmp_path / "sleeves.yaml"
    registry.write_text("sleeves:" + SLEEVE_A)
    home, storage = tmp_path / "home", tmp_path / "storage"
    home.mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")

    with postgres_server() as pg_env, webhook_server() as (hook_url, alerts):
        env = {
            **os.environ, **pg_env,
            "DAGSTER_HOME": str(home), "QUANT_META_STORAGE": str(storage),
            "QUANT_META_SLEEVES": str(registry), "QUANT_META_PRICES": str(prices),
            "QUANT_META_RAY_NUM_CPUS": "1", "PYTHONPATH": str(REPO_ROOT),
            "QUANT_META_SCHEDULE_CRON": "* * * * *",  # a tick every minute instead of after each close
            "QUANT_META_SCHEDULE_CALENDAR": "none",  # every tick runs (no session, no freshness rule)
            "QUANT_META_ALERT_WEBHOOK_URL": hook_url,
            "QUANT_META_UI_URL": "http://dagster.test:3000",
        }
        deployment = Deployment(tmp_path, env)
        try:
            def served():
                try:
                    return deployment.query('{ scheduleOrError(scheduleSelector: {repositoryLocationName: '
                                            '"quant_meta_assets", repositoryName: "__repository__", '
                                            'scheduleName: "meta_full_daily"}) { ... on Schedule { name } } }')
                except (DagsterGraphQLClientError, Exception):
                    return None

            wait_for(served, 180, "the webserver to serve the code location")
            # the schedule is stopped by default; turn it on as the UI's toggle does
            started = deployment.query(
                "mutation($s: ScheduleSelector!) { startSchedule(scheduleSelector: $s) { __typename "
                "... on ScheduleStateResult { scheduleState { status } } ... on PythonError { message } } }",
                {"s": {**LOCATION, "scheduleName": "meta_full_daily"}},
            )["startSchedule"]
            assert started.get("scheduleState", {}).get("status") == "RUNNING", started

            def finished(predicate, what, timeout=420):
                def done():
                    matching = [r for r in deployment.runs() if predicate(r)]
                    return matching[0] if matching and deployment.status(matching[0]["runId"]) in TERMINAL else None

                run = wait_for(done, timeout, what)
                return run, deployment.status(run["runId"])

            # 1. the daemon's registry sensor runs the registered sleeve; the meta sensor follows
            first, status = finished(lambda r: r["jobName"] == "sleeves_job"
                                     and _runs_sleeve(r, "equal_weight"), "the first sleeve run")
            assert status == "SUCCESS", deployment.tail()
            assert first["tags"].get("dagster/sensor_name") == "sleeve_registry_sensor"

            # 2. the schedule ticks (one-minute test cron) and the daemon runs meta_full; stopped again
            # as soon as it has fired once
            scheduled = wait_for(lambda: next((r for r in deployment.runs() if r["jobName"] == "meta_full"
                                               and r["tags"].get("dagster/schedule_name") == "meta_full_daily"), None),
                                 150, "the schedule to launch meta_full")
            stop = subprocess.run(
                [str(Path(sys.executable).parent / "dagster"), "schedule", "stop", "meta_full_daily",
                 "-w", "workspace.yaml"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
            )
            assert stop.returncode == 0, stop.stderr[-2000:]
            status = wait_for(lambda: (s := deployment.status(scheduled["runId"])) in TERMINAL and s, 420,
                              "the scheduled meta_full run")
            assert status == "SUCCESS", deployment.tail()
            wait_for(lambda: _published_run(storage) is not None, 60, "a published snapshot")
            # the one-minute cron may have fired again before the stop landed: let those runs finish
            # so that the next meta run can only come from the sensors
            wait_for(lambda: all(deployment.status(r["runId"]) in TERMINAL for r in deployment.runs()), 600,
                     "the queued runs to finish")

            # 3. a sleeve added to the registry: the sensor's run materializes it, the meta stages follow
            registry.write_text("sleeves:" + SLEEVE_A + SLEEVE_B)
            added, status = finished(lambda r: r["jobName"] == "sleeves_job"
                                     and _runs_sleeve(r, "low_volatility"), "the new sleeve's run")
            assert status == "SUCCESS", deployment.tail()
            from quant_meta_assets.publishing.snapshot import read_published

            def meta_published_with_new_sleeve():
                runs = {r["runId"]: r for r in deployment.runs()}
                run_id = _published_run(storage)
                if run_id not in runs or runs[run_id]["jobName"] != "meta_job":  # the sensor's, not the schedule's
                    return None
                snap = read_published(storage)
                return snap if "low_volatility" in snap.outputs["meta/returns"].columns else None

            snap = wait_for(meta_published_with_new_sleeve, 300, "meta_job to publish the new sleeve")
            # its last step, meta/published, publishes; the run ends right after
            status = wait_for(lambda: (s := deployment.status(snap.run_id)) in TERMINAL and s, 120, "meta_job to end")
            assert status == "SUCCESS", deployment.tail()
            assert list(snap.asset_weights.columns)  # target asset weights for the consumer

            # 4. a failing sleeve stops the line: its run fails, nothing new is published, the alert names it
            published = _published_run(storage)
            registry.write_text("sleeves:" + SLEEVE_A + SLEEVE_B + BROKEN)
            broken, status = finished(lambda r: r["jobName"] == "sleeves_job"
                                      and _runs_sleeve(r, "broken_sleeve"), "the failing sleeve's run")
            assert status == "FAILURE"
            alert = wait_for(lambda: next((a for a in alerts if a["run_id"] == broken["runId"]), None), 120,
                             "the run-failure alert")
            assert alert["job"] == "sleeves_job"
            assert alert["run_url"] == f"http://dagster.test:3000/runs/{broken['runId']}"
            errors = {s["sleeve"]: s["error"] for s in alert["failed_sleeves"]}
            assert "ValueError: boom from the strategy" in errors["broken_sleeve"]
            time.sleep(40)  # more than one tick of meta_on_fresh_sleeves (30 s)
            assert not [r for r in deployment.runs() if r["jobName"] in ("meta_job", "meta_full")
                        and r["status"] not in TERMINAL], "a meta run started despite the failed sleeve"
            assert _published_run(storage) == published
        finally:
            deployment.stop()
            # code servers, run workers and their Ray go with the daemon and the webserver; a code
            # server notices its parent is gone at its next heartbeat, so give them a minute
            deadline = time.monotonic() + 60
            while _processes_of(home) and time.monotonic() < deadline:
                time.sleep(2)
            leftover = {pid: _cmdline(pid) for pid in _processes_of(home)}
            for pid in leftover:
                os.kill(pid, signal.SIGKILL)
        assert not leftover, f"processes left running a minute after the daemon and webserver stopped: {leftover}"
