"""RayComputeEngine on a real local Ray (2 CPUs, one per module): records, crashes, hangs,
retries, connection handling. Every test is bounded in time; elapsed-time bounds are asserted."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from unittest import mock

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.ray.compute import RayComputeEngine
from quant_meta_assets.errors import RegistryError
from quant_meta_assets.sleeves.status import frame_hash
from quant_meta_assets.sleeves.registry import SleeveProfile
from quant_meta_assets_tests.conftest import REPO_ROOT
from quant_meta_assets_tests.strategies_for_tests import make_prices, spec

RECORD_KEYS = {"sleeve", "status", "error", "error_type", "returns", "weights", "costs", "turnover",
               "runtime_s", "start", "end", "attempts"}


def profile(name: str, strategy: str, **kwargs) -> SleeveProfile:
    # these tests count strategy calls and time them: the look-ahead check's extra call is off
    kwargs.setdefault("check_lookahead", False)
    return SleeveProfile(name=name, strategy=spec(strategy), rebalance="monthly", **kwargs)


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return make_prices()


def assert_good(record: dict) -> None:
    assert record["status"] == "success", record["error"]
    assert record["error"] is None and record["error_type"] is None
    returns = record["returns"]
    first = returns.first_valid_index()
    assert first is not None
    assert np.isfinite(returns.loc[first:]).all()
    assert np.isfinite(record["weights"].to_numpy()).all()
    assert np.isfinite(record["costs"].to_numpy()).all()
    assert record["start"] == first.date().isoformat()
    record["weights"].iloc[0, 0] = 0.5  # the driver owns writable copies, not object-store views


def run_python(code: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env}, timeout=timeout,
    )


def test_importing_compute_does_not_import_ray_or_dagster():
    proc = run_python(
        "import sys, quant_meta_assets.ray.compute, quant_meta_assets.storage\n"
        "print(sorted(m for m in ('ray', 'dagster') if m in sys.modules))",
        {}, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_no_profiles_and_duplicate_names_need_no_ray(prices):
    with mock.patch.object(RayComputeEngine, "connect", side_effect=AssertionError("connected")):
        assert RayComputeEngine().execute_sleeves([], prices) == []
        with pytest.raises(RegistryError, match="duplicate sleeve name"):
            RayComputeEngine().execute_sleeves([profile("a", "good"), profile("a", "good")], prices)


@pytest.mark.timeout(60)
def test_success_and_failures_one_record_each_in_order(local_ray, prices):
    profiles = [
        profile("first_good", "good"),
        profile("raiser", "raises", params={"message": "bad input 42"}),
        profile("nan_maker", "nan_weights"),
        profile("lister", "returns_list"),
        profile("exploder", "exploding_weights", max_gross=1e307),  # past the gross limit on purpose
        profile("last_good", "good", cost_bps=10),
    ]
    with mock.patch.object(local_ray, "put", wraps=local_ray.put) as put:
        records = RayComputeEngine().execute_sleeves(profiles, prices)
    assert put.call_count == 1  # prices go to the object store once
    assert [r["sleeve"] for r in records] == [p.name for p in profiles]
    assert all(RECORD_KEYS <= set(r) for r in records)
    assert_good(records[0])
    assert_good(records[5])
    raiser = records[1]
    assert raiser["status"] == "error"
    assert raiser["error"] == "ValueError: bad input 42"
    assert raiser["error_type"] == "ValueError"
    assert "raises" in raiser["traceback"]
    assert records[2]["error_type"] == "StrategyOutputError" and "non-finite weight" in records[2]["error"]
    assert records[3]["error_type"] == "StrategyOutputError" and "got list" in records[3]["error"]
    # absurd but finite leverage: the book loses its capital on its first down day and stops there
    assert records[4]["error_type"] == "SleeveBankruptError" and "NAV <= 0 on" in records[4]["error"]
    for record in records[1:5]:
        assert all(record[k] is None for k in ("returns", "weights", "costs", "turnover"))
    assert local_ray.is_initialized()  # reused, not shut down


@pytest.mark.timeout(60)
def test_worker_crash_reported_within_seconds_others_succeed(local_ray, prices, tmp_path):
    counter = tmp_path / "crash_attempts.txt"
    profiles = [
        profile("crasher", "crashes", max_retries=0),
        profile("good_one", "good"),
        profile("crash_twice", "count_and_crash", params={"counter": str(counter)}, max_retries=1),
    ]
    t0 = time.monotonic()
    records = RayComputeEngine(default_timeout_s=60).execute_sleeves(profiles, prices)
    elapsed = time.monotonic() - t0
    assert elapsed < 15, f"crash detection took {elapsed:.1f} s"
    crasher, good_one, crash_twice = records
    assert crasher["status"] == "error"
    assert crasher["error_type"] == "WorkerCrashedError"
    assert crasher["error"].startswith("WorkerCrashedError: worker process died while running sleeve 'crasher'")
    assert crasher["attempts"] == 1
    assert_good(good_one)
    assert crash_twice["error_type"] == "WorkerCrashedError"
    assert crash_twice["attempts"] == 2
    assert counter.read_text().count("attempt") == 2  # max_retries=1: Ray re-ran it once


@pytest.mark.timeout(60)
def test_hang_cancelled_at_its_timeout(local_ray, prices):
    profiles = [profile("hanger", "hangs", timeout_s=2), profile("good_one", "good")]
    t0 = time.monotonic()
    records = RayComputeEngine().execute_sleeves(profiles, prices)
    elapsed = time.monotonic() - t0
    assert elapsed < 10, f"hang handling took {elapsed:.1f} s"
    hanger, good_one = records
    assert hanger["status"] == "error"
    assert hanger["error_type"] == "SleeveTimeout"
    assert "timed out after 2 s" in hanger["error"]
    assert 2.0 <= hanger["runtime_s"] < 3.0  # overshoot bounded by the poll interval
    assert_good(good_one)
    # the killed worker is gone: the next call still runs (and finds free CPUs)
    again = RayComputeEngine().execute_sleeves([profile("after", "good")], prices)
    assert_good(again[0])


@pytest.mark.timeout(60)
def test_crash_then_retry_succeeds(local_ray, prices, tmp_path):
    marker = tmp_path / "marker.txt"
    records = RayComputeEngine().execute_sleeves(
        [profile("flaky", "crash_once", params={"marker": str(marker)}, max_retries=1)], prices
    )
    assert_good(records[0])
    assert marker.read_text().count("attempt") == 2


@pytest.mark.timeout(60)
def test_deterministic_exception_runs_once_despite_retries(local_ray, prices, tmp_path):
    counter = tmp_path / "counter.txt"
    records = RayComputeEngine().execute_sleeves(
        [profile("stubborn", "count_and_raise", params={"counter": str(counter)}, max_retries=3)], prices
    )
    assert records[0]["error"] == "RuntimeError: deterministic failure"
    assert counter.read_text().count("attempt") == 1


@pytest.mark.timeout(60)
def test_queued_sleeve_clock_starts_at_submission_through_the_window(local_ray, prices):
    # one slot: the second sleeve waits ~1.5 s for it, yet its own 2.5 s budget is intact
    profiles = [
        profile("slow_a", "slow_good", params={"seconds": 1.5}, timeout_s=2.5),
        profile("slow_b", "slow_good", params={"seconds": 1.5}, timeout_s=2.5),
    ]
    records = RayComputeEngine(max_in_flight=1).execute_sleeves(profiles, prices)
    for record in records:
        assert_good(record)


@pytest.mark.timeout(60)
def test_engine_reuses_initialised_ray_and_never_shuts_it_down(local_ray, prices):
    with RayComputeEngine(num_cpus=1) as engine:  # num_cpus irrelevant: Ray is already up
        assert_good(engine.execute_sleeves([profile("a", "good")], prices)[0])
    engine.close()
    assert local_ray.is_initialized()
    assert local_ray.cluster_resources().get("CPU") == 2


@pytest.mark.slow  # 7-12 s: out of make test-fast (<= 3 min)
@pytest.mark.timeout(60)
def test_connects_to_a_cluster_by_address_without_num_cpus(local_ray):
    address = local_ray.get_runtime_context().gcs_address
    code = """
        import json, ray
        from quant_meta_assets.ray.compute import RayComputeEngine
        from quant_meta_assets.sleeves.registry import SleeveProfile
        from quant_meta_assets_tests.strategies_for_tests import make_prices, spec
        engine = RayComputeEngine(num_cpus=8)  # must not reach ray.init: a cluster address is set
        records = engine.execute_sleeves([SleeveProfile(name="remote", strategy=spec("good"))], make_prices())
        print(json.dumps([records[0]["status"], records[0]["error"], ray.is_initialized()]))
    """
    proc = run_python(code, {"RAY_ADDRESS": address}, timeout=50)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ["success", None, False]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(60)
def test_unreachable_ray_raises_naming_the_address_in_bounded_time():
    # in a subprocess: a half-initialised Ray must not leak into the other tests
    port = _closed_port()
    code = """
        import json, socket, sys, time
        from quant_meta_assets.ray.compute import RayComputeEngine, RayUnavailableError
        from quant_meta_assets.errors import QuantMetaError
        from quant_meta_assets_tests.strategies_for_tests import make_prices, spec
        from quant_meta_assets.sleeves.registry import SleeveProfile
        out = {}
        sleeves = [SleeveProfile(name="x", strategy=spec("good"))]
        t0 = time.monotonic()
        try:
            RayComputeEngine(connect_timeout_s=3).execute_sleeves(sleeves, make_prices())
        except RayUnavailableError as exc:
            out["closed"] = [str(exc), isinstance(exc, QuantMetaError), isinstance(exc, ConnectionError)]
        out["closed_s"] = time.monotonic() - t0
        # something listens but never speaks Ray: bounded by connect_timeout_s
        server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(8)
        address = f"127.0.0.1:{server.getsockname()[1]}"
        t0 = time.monotonic()
        try:
            RayComputeEngine(address=address, connect_timeout_s=3).execute_sleeves(sleeves, make_prices())
        except RayUnavailableError as exc:
            out["silent"] = [str(exc), address]
        out["silent_s"] = time.monotonic() - t0
        print(json.dumps(out))
        sys.stdout.flush()
    """
    proc = run_python(code, {"RAY_ADDRESS": f"127.0.0.1:{port}"}, timeout=50)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    message, is_project_error, is_connection_error = out["closed"]
    assert f"127.0.0.1:{port}" in message and is_project_error and is_connection_error
    assert out["closed_s"] < 5
    message, address = out["silent"]
    assert address in message and "3 s" in message
    assert out["silent_s"] < 8


@pytest.mark.slow  # 7-12 s: out of make test-fast (<= 3 min)
@pytest.mark.timeout(60)
def test_engine_starts_a_local_ray_when_none_and_shuts_down_only_that():
    # in a subprocess: this module's Ray is already initialised in the test process
    code = """
        import json, os, ray
        from quant_meta_assets.ray.compute import RayComputeEngine
        from quant_meta_assets.sleeves.registry import SleeveProfile
        from quant_meta_assets_tests.strategies_for_tests import make_prices, spec
        assert "RAY_ADDRESS" not in os.environ
        sleeves = [SleeveProfile(name="a", strategy=spec("good")), SleeveProfile(name="b", strategy=spec("raises"))]
        records = RayComputeEngine(num_cpus=1).execute_sleeves(sleeves, make_prices())
        after_call = ray.is_initialized()
        with RayComputeEngine(num_cpus=1) as engine:
            engine.execute_sleeves(sleeves[:1], make_prices())
            inside = ray.is_initialized() and ray.cluster_resources().get("CPU")
        print(json.dumps([[r["status"] for r in records], after_call, inside, ray.is_initialized()]))
    """
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO_ROOT, capture_output=True, text=True,
        env={**env, "PYTHONPATH": str(REPO_ROOT)}, timeout=55,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [["success", "error"], False, 1.0, False]


@pytest.mark.slow  # 7-12 s: out of make test-fast (<= 3 min)
@pytest.mark.timeout(120)
def test_stream_of_batches_yields_each_sleeve_once_and_reruns_a_bad_batch_one_by_one(local_ray, prices):
    """Batches [good0, crasher, good1] (its worker dies) and [good2, hanger, good3] (times out)
    are re-run one sleeve per task: the culprits get their own error, their batch-mates succeed."""
    profiles = [
        profile("good0", "good"), profile("crasher", "crashes", max_retries=0), profile("good1", "good"),
        profile("good2", "good", timeout_s=5), profile("hanger", "hangs", timeout_s=2),
        profile("good3", "good", timeout_s=5), profile("good_last", "good"),
    ]
    engine = RayComputeEngine(batch_size=3)
    t0 = time.monotonic()
    outcomes = list(engine.stream_sleeves(profiles, prices))
    assert time.monotonic() - t0 < 60
    assert sorted(o.name for o in outcomes) == sorted(p.name for p in profiles)
    by_name = {o.name: o for o in outcomes}
    assert by_name["crasher"].record["error_type"] == "WorkerCrashedError"
    assert by_name["hanger"].record["error_type"] == "SleeveTimeout"
    assert not by_name["crasher"].parquet and not by_name["hanger"].parquet
    for name in ("good0", "good1", "good2", "good3", "good_last"):
        outcome = by_name[name]
        assert outcome.ok and set(outcome.parquet) == {"returns", "weights", "costs", "turnover"}
        assert all(outcome.record[k] is None for k in ("returns", "weights", "costs", "turnover"))
        record = outcome.to_record()
        assert record["n_days"] == int(record["returns"].notna().sum())
        assert record["data_hash"] == frame_hash(record["returns"], record["weights"])
        assert_good(record)


@pytest.mark.timeout(120)
def test_a_point_in_time_sleeve_on_ray_matches_the_engine_in_process(local_ray):
    """Listings and delistings on the workers: the same returns and the same delisting closes as
    the engine in this process (so the workers run this checkout's engine)."""
    from quant_meta_assets.prices import validate_prices
    from quant_meta_assets.sleeves.engine import run_sleeve
    from quant_meta_assets.synthetic_book import point_in_time_prices

    panel = validate_prices(point_in_time_prices(n_assets=9, n_days=400, seed=5))
    sleeve = SleeveProfile(name="ew_pit", strategy="equal_weight", rebalance="monthly")
    [record] = RayComputeEngine().execute_sleeves([sleeve], panel)
    assert_good(record)
    local = run_sleeve(sleeve, panel)
    assert record["delistings"] == local["delistings"] and len(local["delistings"]) >= 1
    pd.testing.assert_series_equal(record["returns"], local["returns"], check_freq=False)
