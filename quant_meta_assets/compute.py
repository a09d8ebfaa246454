"""RayComputeEngine: every sleeve in parallel on Ray, one record per sleeve, bounded in time.

``ray`` is imported only inside functions: importing this module (or unpickling a sleeve task
on a worker) never pays for Ray. No dagster import.

Records
    ``execute_sleeves(profiles, prices)`` returns one dict per profile, in the order of
    ``profiles`` (see ARCHITECTURE.md, "Sleeve record"), plus ``attempts`` (int when known,
    else ``None``), ``max_retries`` and ``traceback`` (worker traceback of a strategy exception,
    else ``None``). A sleeve's own failure never raises: it becomes a record with
    ``status="error"``, ``error="TypeName: message"``, ``error_type="TypeName"`` and frames
    ``None``. A ``"success"`` record has been checked on the driver: its frames are present,
    indexed by dates, and finite wherever the sleeve is live (else it is turned into an error
    record of type ``StrategyOutputError``).

Failure policy
    * Strategy exception (anything ``run_sleeve`` raises): caught on the worker and recorded
      with the ORIGINAL type and message. Deterministic, so never retried
      (``retry_exceptions=False``). ``attempts`` is 1 when ``max_retries`` is 0, else ``None``:
      an earlier attempt may have crashed and been retried, and Ray does not report attempt
      counts without its state API (which needs the dashboard).
    * Worker crash (the process dies: ``os._exit``, segfault, OOM kill, node loss): a Ray system
      failure, retried by Ray up to ``profile.max_retries`` times (``max_retries`` option). When
      every attempt crashed the record is ``WorkerCrashedError: worker process died while
      running sleeve ...`` with ``attempts = max_retries + 1``. Detected as soon as Ray notices
      the dead worker (about a second), not at the timeout.
    * Hang: each sleeve has a wall-clock budget, ``profile.timeout_s`` (the engine's
      ``default_timeout_s`` when a profile has none). It covers every attempt of the sleeve and
      starts when the task is submitted. Tasks are submitted through a window of at most
      ``max_in_flight`` (default: the cluster's CPUs, one CPU per task), so a sleeve's clock does
      not run while it waits for a free CPU behind other sleeves. Past its deadline the task is
      force-cancelled (``ray.cancel(force=True)`` kills the worker; a cancelled task is never
      retried) and recorded as ``SleeveTimeout: sleeve 'x' timed out after N s``.
      The whole call is therefore bounded by ``max(timeout) + slack`` when every sleeve fits in
      the window, and by ``waves * max(timeout)`` otherwise.
    * Other Ray errors for one task (object lost, ``RayTaskError`` escaping the worker-side
      catch, e.g. an argument that cannot be deserialised) are recorded with the original type
      (``RayTaskError`` is unwrapped to its cause).
    * Infrastructure (Ray cannot be reached or started): raises ``RayUnavailableError``
      naming the address, within about ``connect_timeout_s``. That is not a sleeve failure.

Connection
    If Ray is already initialised in this process (e.g. by dagster-ray's ``LocalRay``) it is
    reused and never shut down. Otherwise the engine connects to ``address``, else
    ``$RAY_ADDRESS``, else starts a local Ray (``num_cpus``, no dashboard). ``num_cpus`` is
    never passed when connecting to an existing cluster (``ray.init`` would raise). Before
    connecting to a cluster, a TCP probe of ``host:port`` fails fast when nothing listens, and
    ``ray.init`` runs in a helper thread with a deadline, because Ray itself retries an
    unreachable GCS for minutes. Only what the engine started is shut down: at the end of the
    call, or at ``close()`` / the end of a ``with`` block when used as a context manager.
    What is sent to a cluster (the runtime_env shipping this package and the plug-in strategy
    modules), the preflight that runs before any sleeve and the auth errors live in
    ``quant_meta_assets.ray_cluster``; the engine only calls it.

``prices`` is put into the object store once and the reference is passed to every task.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import socket
import threading
import time
import traceback as traceback_module
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from quant_meta_assets.errors import QuantMetaError, RegistryError, StrategyOutputError
from quant_meta_assets.rates import project_risk_free_rate

__all__ = [
    "RayComputeEngine",
    "RayUnavailableError",
    "SleeveTimeout",
    "WorkerCrashedError",
]

logger = logging.getLogger(__name__)

_TRACEBACK_LIMIT = 4000  # characters of worker traceback kept in a record
_FRAME_KEYS = ("returns", "weights", "costs", "turnover")


class RayUnavailableError(QuantMetaError, ConnectionError):
    """Ray could not be reached or started: names the address. Infrastructure, not a sleeve."""


class SleeveTimeout(QuantMetaError, TimeoutError):
    """A sleeve exceeded its wall-clock budget and was cancelled (used in error records)."""


class WorkerCrashedError(QuantMetaError, RuntimeError):
    """The worker process running a sleeve died on every attempt (used in error records)."""


# --------------------------------------------------------------------------- worker side


def _sleeve_task(profile: Any, prices: pd.DataFrame, risk_free_rate: float | None = None) -> dict[str, Any]:
    """Runs on a Ray worker. A strategy exception becomes an error record here, so it is never
    retried and its original type/message survive even if the exception cannot be pickled.
    ``risk_free_rate`` is resolved on the driver (a cluster's workers do not see its environment)."""
    from quant_meta_assets import sleeve_engine

    t0 = time.perf_counter()
    try:
        record = sleeve_engine.run_sleeve(profile, prices, risk_free_rate)
    except (Exception, SystemExit) as exc:  # SystemExit: a strategy calling sys.exit()
        record = sleeve_engine.error_record(profile.name, exc, time.perf_counter() - t0)
        record["traceback"] = traceback_module.format_exc()[-_TRACEBACK_LIMIT:]
    return record


@functools.cache
def _remote_sleeve_task() -> Any:
    """The Ray remote function, defined on first use so that importing this module skips Ray."""
    import ray

    return ray.remote(num_cpus=1)(_sleeve_task)


# --------------------------------------------------------------------------- helpers


def _format_seconds(value: float) -> str:
    return f"{value:g}"


def _record(profile_name: str, exc: BaseException, runtime_s: float) -> dict[str, Any]:
    from quant_meta_assets.sleeve_engine import error_record

    return error_record(profile_name, exc, runtime_s)


def _unwrap(exc: BaseException) -> BaseException:
    """The original exception behind a RayTaskError (which wraps what the task raised)."""
    import ray.exceptions

    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return cause
        try:
            return exc.as_instanceof_cause()
        except Exception:  # pragma: no cover - Ray could not rebuild the cause type
            return exc
    return exc


def _first_line(text: str) -> str:
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def _non_finite(values: np.ndarray) -> int:
    return int((~np.isfinite(values)).sum())


def check_success_record(record: dict[str, Any]) -> str | None:
    """Why a success record cannot be trusted, or ``None`` if it can.

    Checks: the four frames exist with the right types and a DatetimeIndex; ``returns`` is NaN
    only before its first live value and has at least one; ``weights``, ``costs`` and
    ``turnover`` are finite everywhere.
    """
    returns = record.get("returns")
    if not isinstance(returns, pd.Series):
        return f"'returns' must be a pandas Series, got {type(returns).__name__}"
    for key, kind in (("weights", pd.DataFrame), ("costs", pd.Series), ("turnover", pd.Series)):
        if not isinstance(record.get(key), kind):
            return f"{key!r} must be a pandas {kind.__name__}, got {type(record.get(key)).__name__}"
    for key in _FRAME_KEYS:
        if not isinstance(record[key].index, pd.DatetimeIndex):
            return f"{key!r} must be indexed by dates, got {type(record[key].index).__name__}"
    values = returns.to_numpy(dtype="float64", na_value=np.nan)
    live = np.flatnonzero(~np.isnan(values))
    if live.size == 0:
        return "'returns' has no live (non-NaN) value"
    tail = values[live[0]:]
    if _non_finite(tail):
        bad = int(np.flatnonzero(~np.isfinite(tail))[0]) + int(live[0])
        return (
            f"'returns' is not finite on {returns.index[bad].date().isoformat()} although the sleeve "
            f"is live from {returns.index[live[0]].date().isoformat()}; {_non_finite(tail)} such value(s)"
        )
    for key in ("weights", "costs", "turnover"):
        frame = record[key]
        try:
            arr = frame.to_numpy(dtype="float64", na_value=np.nan)
        except (TypeError, ValueError) as exc:
            return f"{key!r} is not numeric: {exc}"
        if _non_finite(arr):
            return f"{key!r} has {_non_finite(arr)} non-finite value(s)"
    return None


def _parse_host_port(address: str) -> tuple[str, int] | None:
    """``host:port`` (optionally ``ray://``/``[ipv6]``) -> (host, port); None when not probe-able."""
    rest = address.split("://", 1)[1] if "://" in address else address
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):  # [ipv6]:port
        host, _, port = rest[1:].partition("]")
        port = port.lstrip(":")
    else:
        host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host, int(port)


def probe_ray_address(address: str, timeout_s: float) -> None:
    """Fail fast (RayUnavailableError) when nothing accepts TCP connections at ``address``."""
    parsed = _parse_host_port(address)
    if parsed is None:
        return
    host, port = parsed
    try:
        with socket.create_connection((host, port), timeout=max(0.1, timeout_s)):
            pass
    except OSError as exc:
        raise RayUnavailableError(
            f"Ray is unreachable at {address!r}: nothing accepts connections at {host}:{port} "
            f"({type(exc).__name__}: {exc}); start the cluster or fix RAY_ADDRESS / the engine's address"
        ) from exc


# --------------------------------------------------------------------------- engine


@dataclass
class _Task:
    index: int
    profile: Any
    timeout_s: float
    ref: Any = None
    submitted: float = 0.0
    deadline: float = math.inf
    extra: dict[str, Any] = field(default_factory=dict)


class RayComputeEngine:
    """Run sleeves on Ray; see the module docstring for the record, failure and connection policy.

    ``address``: a Ray cluster (``host:port`` or ``ray://...``); ``None`` = ``$RAY_ADDRESS`` or a
    local Ray. ``num_cpus``: CPUs of a local Ray only. ``default_timeout_s``: budget of a profile
    without ``timeout_s``. ``connect_timeout_s``: bound on reaching a cluster. ``poll_interval_s``:
    longest wait between deadline checks. ``max_in_flight``: concurrently submitted sleeves
    (``None`` = the cluster's CPUs, at least 1).
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        default_timeout_s: float = 300.0,
        connect_timeout_s: float = 30.0,
        poll_interval_s: float = 0.2,
        max_in_flight: int | None = None,
    ) -> None:
        if default_timeout_s <= 0 or connect_timeout_s <= 0 or poll_interval_s <= 0:
            raise ValueError("default_timeout_s, connect_timeout_s and poll_interval_s must be > 0")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
        self.address = address
        self.num_cpus = num_cpus
        self.default_timeout_s = float(default_timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.poll_interval_s = float(poll_interval_s)
        self.max_in_flight = max_in_flight
        self._owns_ray = False  # True while Ray was initialised by this engine
        self._entered = 0

    # ----------------------------------------------------------------- connection

    def target_address(self) -> str | None:
        """The cluster address the engine would connect to (``None`` = start a local Ray)."""
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        return None if address == "local" else address

    def connect(self, strategies: Sequence[str] = ()) -> None:
        """Initialise Ray unless it already is (then it is reused and never shut down).

        On a cluster, ``strategies`` (registry ``strategy`` fields) say which plug-in modules
        the runtime_env ships and the preflight imports; the preflight raises
        ``ClusterPreflightError`` before any sleeve runs.
        """
        import ray

        from quant_meta_assets import ray_cluster

        if ray.is_initialized():
            return
        address = self.target_address()
        if address is None:
            options = ray_cluster.local_init_options(self.num_cpus)
            try:
                ray.init(address=self.address, **options)
            except Exception as exc:
                raise RayUnavailableError(
                    f"could not start a local Ray instance: {type(exc).__name__}: {exc}"
                ) from exc
            self._owns_ray = True
            return
        if self.num_cpus is not None:
            logger.warning("num_cpus=%s ignored: connecting to the existing Ray cluster at %s",
                           self.num_cpus, address)
        strategies = list(strategies)
        options = ray_cluster.cluster_init_options(address, strategies)  # bad config: fail before connecting
        budget = self.connect_timeout_s + ray_cluster.client_setup_allowance_s(address)
        deadline = time.monotonic() + budget
        probe_ray_address(address, self.connect_timeout_s)
        self._init_with_deadline(address, max(0.1, deadline - time.monotonic()), options)
        self._owns_ray = True
        try:
            ray_cluster.preflight(address, strategies)
        except BaseException:
            self.close()
            raise

    def _init_with_deadline(self, address: str, timeout_s: float, options: dict[str, Any]) -> None:
        """``ray.init(address)`` in a helper thread; RayUnavailableError if it is not done in time.

        Ray retries an unresponsive GCS for minutes. If the deadline passes, the helper thread is
        abandoned (a daemon) and disconnects again should it ever finish.
        """
        import ray

        from quant_meta_assets.ray_cluster import client_setup_allowance_s

        outcome: dict[str, BaseException | None] = {}
        lock = threading.Lock()
        abandoned = threading.Event()

        def target() -> None:
            try:
                ray.init(**options)
                error: BaseException | None = None
            except BaseException as exc:  # SystemExit included: Ray exits on some failures
                error = exc
            with lock:
                outcome["error"] = error
                late = abandoned.is_set()
            if late and error is None:
                ray.shutdown()

        thread = threading.Thread(target=target, name="ray-connect", daemon=True)
        thread.start()
        thread.join(timeout_s)
        with lock:
            if "error" not in outcome:
                abandoned.set()
                raise RayUnavailableError(
                    f"Ray is unreachable at {address!r}: no connection within "
                    f"{_format_seconds(self.connect_timeout_s + client_setup_allowance_s(address))} s "
                    f"(something listens there, but it "
                    f"does not answer as a Ray cluster)"
                )
        error = outcome["error"]
        if error is not None:
            from quant_meta_assets.ray_cluster import explain_connect_error

            explained = explain_connect_error(address, error)
            if explained is not None:
                raise explained from error
            raise RayUnavailableError(
                f"Ray is unreachable at {address!r}: {type(error).__name__}: {error}"
            ) from error

    def close(self) -> None:
        """Shut Ray down if (and only if) this engine started or connected it."""
        if not self._owns_ray:
            return
        import ray

        self._owns_ray = False
        if ray.is_initialized():
            ray.shutdown()

    def __enter__(self) -> RayComputeEngine:
        self._entered += 1
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._entered -= 1
        if self._entered == 0:
            self.close()

    # ----------------------------------------------------------------- execution

    def execute_sleeves(self, profiles: Sequence[Any], prices: pd.DataFrame) -> list[dict[str, Any]]:
        """One record per profile, in order; a sleeve's failure never raises (module docstring)."""
        profiles = list(profiles)
        names = [p.name for p in profiles]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise RegistryError(f"duplicate sleeve name(s) {dups!r}: records are one per sleeve")
        if not profiles:
            return []
        self.connect([getattr(p, "strategy", "") for p in profiles])
        try:
            return self._execute(profiles, prices)
        finally:
            if self._entered == 0:
                self.close()

    def _window(self) -> int:
        if self.max_in_flight is not None:
            return self.max_in_flight
        import ray

        cpus = ray.cluster_resources().get("CPU", 1.0)
        return max(1, int(cpus))

    def _timeout_of(self, profile: Any) -> float:
        value = getattr(profile, "timeout_s", None)
        return float(value) if value else self.default_timeout_s

    def _execute(self, profiles: list[Any], prices: pd.DataFrame) -> list[dict[str, Any]]:
        import ray

        prices_ref = ray.put(prices)
        remote = _remote_sleeve_task()
        rf = project_risk_free_rate()  # the driver's setting, sent to every worker
        queue = [_Task(i, p, self._timeout_of(p)) for i, p in enumerate(profiles)]
        queue.reverse()  # pop() from the end submits in registry order
        window = self._window()
        running: dict[Any, _Task] = {}
        records: list[dict[str, Any] | None] = [None] * len(profiles)

        def submit() -> None:
            while queue and len(running) < window:
                task = queue.pop()
                retries = int(getattr(task.profile, "max_retries", 0) or 0)
                task.ref = remote.options(max_retries=retries, retry_exceptions=False).remote(
                    task.profile, prices_ref, rf
                )
                task.submitted = time.monotonic()
                task.deadline = task.submitted + task.timeout_s
                running[task.ref] = task

        try:
            submit()
            while running:
                now = time.monotonic()
                next_deadline = min(t.deadline for t in running.values())
                wait_s = min(self.poll_interval_s, max(0.0, next_deadline - now))
                ready, _ = ray.wait(list(running), num_returns=1, timeout=wait_s)
                for ref in ready:
                    task = running.pop(ref)
                    records[task.index] = self._collect(task)
                now = time.monotonic()
                for ref, task in list(running.items()):
                    if now >= task.deadline:
                        running.pop(ref)
                        records[task.index] = self._time_out(task)
                submit()
        finally:
            for ref in running:  # only on an unexpected error: leave nothing running
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # pragma: no cover
                    pass
            del prices_ref
        return [r for r in records if r is not None]

    def _finish(self, task: _Task, record: dict[str, Any], attempts: int | None) -> dict[str, Any]:
        record = dict(record)
        record.setdefault("traceback", None)
        record["attempts"] = attempts
        record["max_retries"] = int(getattr(task.profile, "max_retries", 0) or 0)
        return record

    def _collect(self, task: _Task) -> dict[str, Any]:
        import ray
        import ray.exceptions

        name = task.profile.name
        elapsed = time.monotonic() - task.submitted
        retries = int(getattr(task.profile, "max_retries", 0) or 0)
        try:
            record = ray.get(task.ref)
        except ray.exceptions.WorkerCrashedError as exc:
            crash = WorkerCrashedError(
                f"worker process died while running sleeve {name!r} "
                f"({retries + 1} attempt(s), max_retries={retries}); ray: {_first_line(str(exc))}"
            )
            return self._finish(task, _record(name, crash, elapsed), retries + 1)
        except ray.exceptions.TaskCancelledError:
            return self._time_out(task, cancel=False)
        except Exception as exc:  # RayTaskError (unwrapped), OOM, object lost, ...
            original = _unwrap(exc)
            record = _record(name, original, elapsed)
            if original is not exc:
                record["traceback"] = str(exc)[-_TRACEBACK_LIMIT:]
            return self._finish(task, record, None)
        if not isinstance(record, dict) or record.get("sleeve") != name:
            bad = StrategyOutputError(
                f"sleeve {name!r}: the worker returned {type(record).__name__}, not this sleeve's record"
            )
            return self._finish(task, _record(name, bad, elapsed), None)
        if record.get("status") == "success":
            problem = check_success_record(record)
            if problem is not None:
                bad = StrategyOutputError(f"sleeve {name!r}: result rejected by the engine: {problem}")
                return self._finish(task, _record(name, bad, record.get("runtime_s") or elapsed), None)
            # object-store arrays are read-only views pinning shared memory: own a copy
            for key in _FRAME_KEYS:
                record[key] = record[key].copy(deep=True)
        return self._finish(task, record, 1 if retries == 0 else None)

    def _time_out(self, task: _Task, cancel: bool = True) -> dict[str, Any]:
        import ray

        if cancel:
            try:
                ray.cancel(task.ref, force=True)
            except Exception as exc:  # the task may have finished in between: nothing to kill
                logger.debug("cancel of sleeve %s failed: %s", task.profile.name, exc)
        name = task.profile.name
        timeout = SleeveTimeout(
            f"sleeve {name!r} timed out after {_format_seconds(task.timeout_s)} s (worker cancelled)"
        )
        return self._finish(task, _record(name, timeout, time.monotonic() - task.submitted), None)
