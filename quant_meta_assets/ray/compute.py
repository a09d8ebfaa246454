"""RayComputeEngine: every sleeve in parallel on Ray, one record per sleeve, bounded in time.

``ray`` is imported only inside functions: importing this module (or unpickling a sleeve task
on a worker) never pays for Ray. No dagster import.

Two forms of the same run
    ``stream_sleeves(profiles, prices)`` yields one ``SleeveOutcome`` per profile as soon as its
    task finishes (completion order): the record's scalars plus its frames as Parquet bytes,
    encoded on the worker and carried back through Ray's object store (no shared filesystem,
    so workers may be on other machines). The caller writes or decodes each one and drops it:
    driver memory is bounded by the in-flight window, not by the number of sleeves.
    ``execute_sleeves`` decodes every outcome into a record and returns them in profile order
    (for notebooks and small books).

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
      starts when its task starts running, not when it is submitted: on a cluster each task
      reports its start to a small CPU-less actor of this call (``_StartBoard``), so a task that
      waits behind another driver's work is not charged for the wait. On a local Ray of this
      driver the window never exceeds its CPUs, so a submitted task starts at once and the
      submit time is used. Past its deadline the task is force-cancelled
      (``ray.cancel(force=True)`` kills the worker; a cancelled task is never retried) and
      recorded as ``SleeveTimeout: sleeve 'x' timed out after N s of running``.
    * Queueing: bounded per call by ``queue_timeout_s`` ($QUANT_META_RAY_QUEUE_TIMEOUT_S, default
      1800 s): once this call has had tasks waiting and none running for that long, every sleeve
      not yet started is cancelled and recorded as ``SleeveQueueTimeout: sleeve 'x' never
      started: ... (queue deadline queue_timeout_s=N s)``. A long book that is making progress
      is never stopped by it.
    * Window: at most ``max_in_flight`` tasks are submitted at a time ($QUANT_META_RAY_MAX_IN_FLIGHT;
      default: the CPUs the cluster has free when the call starts, at least 1, never its total:
      a notebook driver on a busy production cluster queues one task, not one per CPU).
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
    ``quant_meta_assets.ray.cluster``; the engine only calls it.

Throughput
    ``prices`` is put into the object store once and the reference is passed to every task.
    When there are many more sleeves than task slots, consecutive sleeves are grouped into
    batches (one Ray task runs a few sleeves one after the other): per-task overhead and
    result round trips are paid per batch. A batch gets the largest budget of its members; if
    it times out or its worker dies, its members are run again one per task with their own
    budgets and retries, so a failure is still attributed to the right sleeve (a hanging
    sleeve in a batch is therefore reported after up to twice its timeout). New tasks are
    submitted before finished ones are handed to the caller, so workers never wait for the
    driver's writes.
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
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from quant_meta_assets.errors import QuantMetaError, RegistryError, StrategyOutputError
from quant_meta_assets.costs.cost_model import load_cost_model
from quant_meta_assets.rates import project_risk_free_rate

__all__ = [
    "RayComputeEngine",
    "SleeveOutcome",
    "RayUnavailableError",
    "SleeveQueueTimeout",
    "SleeveTimeout",
    "TRANSIENT_ERRORS",
    "WorkerCrashedError",
]

logger = logging.getLogger(__name__)

_TRACEBACK_LIMIT = 4000  # characters of worker traceback kept in a record
BOARD_START_TIMEOUT_S = 120.0  # the start-report actor not up by then: budgets count from submission
_FRAME_KEYS = ("returns", "weights", "costs", "turnover")


class RayUnavailableError(QuantMetaError, ConnectionError):
    """Ray could not be reached or started: names the address. Infrastructure, not a sleeve."""


# failures of the infrastructure, not of the strategy: worth a bounded retry (a strategy's own
# exception is deterministic on the same inputs and is never retried)
TRANSIENT_ERRORS = ("SleeveTimeout", "WorkerCrashedError")


class SleeveTimeout(QuantMetaError, TimeoutError):
    """A sleeve exceeded its wall-clock budget and was cancelled (used in error records)."""


class SleeveQueueTimeout(QuantMetaError, TimeoutError):
    """A sleeve never started: the cluster ran none of this call's tasks for ``queue_timeout_s``."""


class WorkerCrashedError(QuantMetaError, RuntimeError):
    """The worker process running a sleeve died on every attempt (used in error records)."""


# --------------------------------------------------------------------------- worker side


def _sleeve_task(profile: Any, prices: pd.DataFrame, risk_free_rate: float | None = None,
                 cost_model: Any = None) -> dict[str, Any]:
    """Runs on a Ray worker. A strategy exception becomes an error record here, so it is never
    retried and its original type/message survive even if the exception cannot be pickled.
    ``risk_free_rate`` and ``cost_model`` (borrow and funding, ``costs.load_cost_model``) are resolved on
    the driver (a cluster's workers do not see its environment or files)."""
    from quant_meta_assets.sleeves import engine as sleeve_engine

    t0 = time.perf_counter()
    try:
        record = sleeve_engine.run_sleeve(profile, prices, risk_free_rate, cost_model)
    except (Exception, SystemExit) as exc:  # SystemExit: a strategy calling sys.exit()
        record = sleeve_engine.error_record(profile.name, exc, time.perf_counter() - t0)
        record["traceback"] = traceback_module.format_exc()[-_TRACEBACK_LIMIT:]
    return record


NEEDS_FULL = "needs_full"
"""Status of an update the worker could not prove identical to a full run: the driver recomputes it
in full (``incremental.resume.NotExactError``, or any exception raised by the update)."""


def _update_task(job: Any, risk_free_rate: float | None = None, cost_model: Any = None) -> dict[str, Any]:
    """Runs on a Ray worker: the new days of one sleeve from its state and its trailing window
    (``incremental.resume.UpdateJob``). The frames cover the new days only; the driver, which has
    the previous bundle, extends them (``finish_update``)."""
    from quant_meta_assets.incremental.resume import run_sleeve_update
    from quant_meta_assets.storage import encode_chunked

    t0 = time.perf_counter()
    try:
        record = run_sleeve_update(job.profile, job.window, job.state, risk_free_rate, cost_model)
    except (Exception, SystemExit) as exc:  # the full run is the truth: it decides a real failure
        return {"record": {"sleeve": job.name, "status": NEEDS_FULL, "error": f"{type(exc).__name__}: {exc}",
                           "runtime_s": time.perf_counter() - t0}, "parquet": {}}
    scalars = {k: v for k, v in record.items() if k not in _FRAME_KEYS}
    scalars.update({k: None for k in _FRAME_KEYS})
    return {"record": scalars, "parquet": {k: encode_chunked(record[k]) for k in _FRAME_KEYS}}


def pack_record(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """A sleeve record checked, summarised and encoded (frames -> Parquet bytes): what a worker sends
    back, and what the driver stores for an extended (updated) record."""
    from quant_meta_assets.sleeves.status import frame_hash
    from quant_meta_assets.storage import encode_chunked

    if record.get("status") != "success":
        return {"record": record, "parquet": {}}
    problem = check_success_record(record)
    if problem is not None:
        bad = StrategyOutputError(f"sleeve {name!r}: result rejected by the engine: {problem}")
        return {"record": _record(name, bad, record.get("runtime_s") or 0.0), "parquet": {}}
    live = record["returns"].dropna()
    scalars = {k: v for k, v in record.items() if k not in _FRAME_KEYS}
    scalars.update({k: None for k in _FRAME_KEYS})
    scalars.update(
        data_hash=frame_hash(record["returns"], record["weights"]),
        n_days=int(live.size),
        total_return=float((1.0 + live).prod() - 1.0),
    )
    return {"record": scalars, "parquet": {k: encode_chunked(record[k]) for k in _FRAME_KEYS}}


def finish_update(outcome: SleeveOutcome, previous: Any, prices_digest: dict) -> SleeveOutcome:
    """The driver's half of an update. ``previous`` is the previous record: a ``StoredBundle`` (the
    outcome then carries only the rows to append to its bundle, ``SleeveOutcome.appended_to``: the
    previous frames are not read, only their last chunk) or a mapping of whole frames (extended
    here into a full record, ``incremental.resume.extend_record``)."""
    from quant_meta_assets.incremental.resume import extend_record
    from quant_meta_assets.storage import StoredBundle

    if not outcome.ok:
        return outcome
    part = outcome.to_record()
    if isinstance(previous, StoredBundle):
        appended = _appended_outcome(outcome.name, part, previous, prices_digest)
        if appended is not None:
            return appended
    prior = {**{k: previous[k] for k in _FRAME_KEYS}, **{k: previous.get(k) for k in ("delistings", "lookahead")}}
    record = extend_record(prior, part, prices_digest)
    packed = pack_record(outcome.name, record)
    return SleeveOutcome(packed["record"], packed["parquet"])


def _appended_outcome(name: str, part: dict[str, Any], previous: Any, prices_digest: dict) -> SleeveOutcome | None:
    """An update as rows appended to the stored bundle ``previous``, summarised from the previous
    summaries (n_days, total_return, data_hash) and the new rows; None when only a full extension
    says the same (then the caller extends in full, and its checks name any problem)."""
    from quant_meta_assets.incremental.resume import appended_record
    from quant_meta_assets.sleeves.status import extended_frame_hash
    from quant_meta_assets.storage import encode_chunked

    meta = previous.meta
    if any(meta.get(k) is None for k in ("n_days", "total_return", "data_hash")):
        return None
    tails = previous.frames(_FRAME_KEYS, since=pd.Timestamp(part["update_of"]))
    done = appended_record(meta, tails, part, prices_digest)
    if done is None:
        return None
    record, replace_from = done
    # the previous rows passed these checks; the sleeve is live, so every new return must be finite
    new_returns = record["returns"].to_numpy(dtype="float64", na_value=np.nan)
    if check_success_record(record) is not None or _non_finite(new_returns):
        return None
    scalars = {k: v for k, v in record.items() if k not in _FRAME_KEYS}
    scalars.update({k: None for k in _FRAME_KEYS})
    scalars.update(
        data_hash=extended_frame_hash(str(meta["data_hash"]), record["returns"], record["weights"]),
        n_days=int(meta["n_days"]) + int(new_returns.size),
        total_return=float((1.0 + float(meta["total_return"])) * (1.0 + record["returns"]).prod() - 1.0),
    )
    return SleeveOutcome(scalars, {k: encode_chunked(record[k]) for k in _FRAME_KEYS},
                         appended_to=Path(previous.directory),
                         replace_from={k: v.isoformat() for k, v in replace_from.items()})


def _packed_outcome(profile: Any, prices: pd.DataFrame, risk_free_rate: float | None = None,
                    cost_model: Any = None) -> dict[str, Any]:
    """One sleeve on the worker: run, check, summarise and encode (frames -> Parquet bytes); an
    ``UpdateJob`` computes only its new days, from its own window."""
    from quant_meta_assets.incremental.resume import UpdateJob

    if isinstance(profile, UpdateJob):
        return _update_task(profile, risk_free_rate, cost_model)
    record = _sleeve_task(profile, prices, risk_free_rate, cost_model)
    if record.get("sleeve") != profile.name:
        bad = StrategyOutputError(f"sleeve {profile.name!r}: the worker produced another sleeve's record")
        return {"record": _record(profile.name, bad, record.get("runtime_s") or 0.0), "parquet": {}}
    return pack_record(profile.name, record)


def _batch_task(
    profiles: list[Any], prices: pd.DataFrame, risk_free_rate: float | None = None,
    board: Any = None, token: int | None = None, node_check: dict[str, Any] | None = None,
    cost_model: Any = None,
) -> list[dict[str, Any]]:
    """Runs on a Ray worker: several sleeves, one after the other, one packed outcome each.
    First tells ``board`` (a ``_StartBoard`` actor, if any) that task ``token`` is running, and
    checks a node the preflight did not see (``ray_cluster.check_late_node``)."""
    if board is not None:
        board.started.remote(token)  # fire and forget: the driver polls the board
    if node_check is not None:
        from quant_meta_assets.ray.cluster import check_late_node

        check_late_node(node_check)  # ClusterPreflightError on a node that cannot run sleeves
    return [_packed_outcome(profile, prices, risk_free_rate, cost_model) for profile in profiles]


class _StartBoardImpl:
    """The tokens of the tasks that started running, in order (one actor per engine call)."""

    def __init__(self) -> None:
        self._tokens: list[int] = []

    def started(self, token: int) -> None:
        self._tokens.append(token)

    def since(self, seen: int) -> list[int]:
        return self._tokens[seen:]


@functools.cache
def _start_board_class() -> Any:
    import ray

    return ray.remote(num_cpus=0, max_restarts=0)(_StartBoardImpl)


@functools.cache
def _remote_batch_task() -> Any:
    """The Ray remote function, defined on first use so that importing this module skips Ray."""
    import ray

    return ray.remote(num_cpus=1)(_batch_task)


@dataclass(frozen=True)
class SleeveOutcome:
    """One sleeve's result as it comes back from its worker: the record's scalars (frames
    ``None``) and, on success, each frame as ``storage.encode_chunked`` output.

    ``appended_to``: the stored bundle an update extends; its frames are then only the rows to
    append (``storage.stage_appended_bundle``, dropping the previous rows from ``replace_from``'s
    dates on), and its scalars those of the whole record."""

    record: dict[str, Any]
    parquet: dict[str, tuple[str, Any]]
    appended_to: Path | None = None
    replace_from: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.record["sleeve"]

    @property
    def ok(self) -> bool:
        return self.record.get("status") == "success"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SleeveOutcome:
        """The outcome of an in-memory record (e.g. ``run_sleeve`` run in-process)."""
        from quant_meta_assets.storage import encode_chunked

        frames = {k: record[k] for k in _FRAME_KEYS if record.get(k) is not None}
        scalars = {k: (None if k in _FRAME_KEYS else v) for k, v in record.items()}
        return cls(scalars, {k: encode_chunked(v) for k, v in frames.items()})

    def to_record(self) -> dict[str, Any]:
        """The sleeve record (frames decoded into pandas objects the caller owns; for an appended
        outcome, the new rows only)."""
        from quant_meta_assets.storage import decode_frame

        record = dict(self.record)
        for key, (_, data) in self.parquet.items():
            record[key] = decode_frame(data, f"sleeve {self.name!r} {key}")
        return record


# --------------------------------------------------------------------------- helpers


def _format_seconds(value: float) -> str:
    return f"{value:g}"


def _wait(refs: list, **options):
    """``ray.wait`` that lets an interrupt through as itself.

    A signal handler that raises (Ctrl-C, or Dagster's SIGINT when a run is terminated) while
    Ray's C core is waiting comes back as ``SystemError: ... returned a result with an exception
    set``, an ordinary Exception that would turn a cancel into a failure; the interrupt (a
    BaseException, its context) is re-raised instead, and the caller's finally cancels the tasks.
    """
    import ray

    try:
        return ray.wait(refs, **options)
    except SystemError as exc:
        cause = exc.__cause__ or exc.__context__
        if cause is not None and not isinstance(cause, Exception):
            raise cause from None
        raise


def _record(profile_name: str, exc: BaseException, runtime_s: float) -> dict[str, Any]:
    from quant_meta_assets.sleeves.engine import error_record

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
    """One Ray task: one sleeve, or a batch of consecutive sleeves (``batched``)."""

    members: list[tuple[int, Any]]  # (position in the profile list, profile)
    timeout_s: float
    retries: int
    batched: bool
    ref: Any = None
    submitted: float = 0.0
    deadline: float = math.inf
    token: int = -1
    started: float | None = None  # when the driver learnt that it runs


class RayComputeEngine:
    """Run sleeves on Ray; see the module docstring for the record, failure and connection policy.

    ``address``: a Ray cluster (``host:port`` or ``ray://...``); ``None`` = ``$RAY_ADDRESS`` or a
    local Ray. ``num_cpus``: CPUs of a local Ray only. ``default_timeout_s``: budget of a profile
    without ``timeout_s``. ``connect_timeout_s``: bound on reaching a cluster. ``poll_interval_s``:
    longest wait between deadline checks. ``max_in_flight``: concurrently submitted tasks
    (``None`` = $QUANT_META_RAY_MAX_IN_FLIGHT, else the CPUs free when the call starts, at least 1).
    ``queue_timeout_s``: how long the call may have tasks waiting and none running (``None`` =
    $QUANT_META_RAY_QUEUE_TIMEOUT_S, else 1800 s). ``batch_size``: sleeves per task (``None`` =
    1 for small books, up to 8 when there are at least 8 tasks per slot; see "Throughput").
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        default_timeout_s: float = 300.0,
        connect_timeout_s: float = 30.0,
        poll_interval_s: float = 0.2,
        max_in_flight: int | None = None,
        batch_size: int | None = None,
        queue_timeout_s: float | None = None,
    ) -> None:
        if default_timeout_s <= 0 or connect_timeout_s <= 0 or poll_interval_s <= 0:
            raise ValueError("default_timeout_s, connect_timeout_s and poll_interval_s must be > 0")
        if max_in_flight is not None and max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if queue_timeout_s is not None and queue_timeout_s <= 0:
            raise ValueError(f"queue_timeout_s must be > 0, got {queue_timeout_s!r}")
        self.address = address
        self.num_cpus = num_cpus
        self.default_timeout_s = float(default_timeout_s)
        self.connect_timeout_s = float(connect_timeout_s)
        self.poll_interval_s = float(poll_interval_s)
        self.max_in_flight = max_in_flight
        self.batch_size = batch_size
        self.queue_timeout_s = queue_timeout_s
        self._owns_ray = False  # True while Ray was initialised by this engine
        self._entered = 0
        self._node_check: dict[str, Any] | None = None  # set by the preflight of a cluster connection

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

        from quant_meta_assets.ray import cluster as ray_cluster

        if ray.is_initialized():
            return
        address = self.target_address()
        if address is None:
            from quant_meta_assets.ray.notices import quiet_token_auth_notice

            options = ray_cluster.local_init_options(self.num_cpus)
            try:
                with quiet_token_auth_notice():  # token auth stays on; only Ray's notice of it goes
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
            workers = ray_cluster.preflight(address, strategies)
        except BaseException:
            self.close()
            raise
        self._node_check = ray_cluster.node_check(address, strategies, workers)

    def _init_with_deadline(self, address: str, timeout_s: float, options: dict[str, Any]) -> None:
        """``ray.init(address)`` in a helper thread; RayUnavailableError if it is not done in time.

        Ray retries an unresponsive GCS for minutes. If the deadline passes, the helper thread is
        abandoned (a daemon) and disconnects again should it ever finish.
        """
        import ray

        from quant_meta_assets.ray.cluster import client_setup_allowance_s

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
            from quant_meta_assets.ray.cluster import explain_connect_error

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
        self._node_check = None
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
        profiles = self._checked(profiles)
        records: list[dict[str, Any] | None] = [None] * len(profiles)
        position = {p.name: i for i, p in enumerate(profiles)}
        for outcome in self._stream(profiles, prices):
            records[position[outcome.name]] = outcome.to_record()
        return [r for r in records if r is not None]

    def stream_sleeves(self, profiles: Sequence[Any], prices: pd.DataFrame) -> Iterator[SleeveOutcome]:
        """One ``SleeveOutcome`` per profile, as each finishes; consume and drop them one by one.

        Validation (duplicate names) happens here, before the first ``next``. Closing the
        iterator early cancels what is still running.
        """
        return self._stream(self._checked(profiles), prices)

    def _checked(self, profiles: Sequence[Any]) -> list[Any]:
        profiles = list(profiles)
        names = [p.name for p in profiles]
        dups = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) < len(names) else []
        if dups:
            raise RegistryError(f"duplicate sleeve name(s) {dups!r}: records are one per sleeve")
        return profiles

    def _stream(self, profiles: list[Any], prices: pd.DataFrame) -> Iterator[SleeveOutcome]:
        if not profiles:
            return
        self.connect([getattr(p, "strategy", "") for p in profiles])
        try:
            yield from self._execute(profiles, prices)
        finally:
            if self._entered == 0:
                self.close()

    def _window(self) -> int:
        """Tasks in flight: the setting, else the CPUs the cluster has free now (never its total)."""
        from quant_meta_assets import settings

        if self.max_in_flight is not None:
            return self.max_in_flight
        configured = settings.ray_max_in_flight()
        if configured is not None:
            return configured
        import ray

        free = ray.available_resources().get("CPU", 0.0)
        total = ray.cluster_resources().get("CPU", 1.0)
        window = max(1, int(min(free, total)))
        logger.info("in-flight window %d task(s): %g of the cluster's %g CPUs are free", window, free, total)
        return window

    def _queue_timeout(self) -> float:
        from quant_meta_assets import settings

        return self.queue_timeout_s if self.queue_timeout_s is not None else settings.ray_queue_timeout_s()

    def _shared_cluster(self) -> bool:
        """Ray is a cluster others may use (so a submitted task may wait), not this driver's local Ray."""
        return self.target_address() is not None

    def _batch_size(self, n_sleeves: int, window: int) -> int:
        if self.batch_size is not None:
            return self.batch_size
        return max(1, min(8, n_sleeves // (window * 8)))

    def _timeout_of(self, profile: Any) -> float:
        value = getattr(profile, "timeout_s", None)
        return float(value) if value else self.default_timeout_s

    @staticmethod
    def _retries_of(profile: Any) -> int:
        return int(getattr(profile, "max_retries", 0) or 0)

    def _single(self, index: int, profile: Any) -> _Task:
        return _Task([(index, profile)], self._timeout_of(profile), self._retries_of(profile), batched=False)

    def _execute(self, profiles: list[Any], prices: pd.DataFrame) -> Iterator[SleeveOutcome]:
        import ray

        prices_ref = ray.put(prices)
        remote = _remote_batch_task()
        rf = project_risk_free_rate()  # the driver's setting, sent to every worker
        cost_model = load_cost_model()  # the driver's cost file and settings, sent to every worker
        window = self._window()
        queue_timeout = self._queue_timeout()
        size = self._batch_size(len(profiles), window)
        board = board_actor = _start_board_class().remote() if self._shared_cluster() else None
        node_check = ray.put(self._node_check) if self._node_check is not None else None
        queue: deque[_Task] = deque()
        for start in range(0, len(profiles), size):
            members = list(enumerate(profiles))[start:start + size]
            if len(members) == 1:
                queue.append(self._single(*members[0]))
            else:  # a crash or timeout re-runs the members one by one, with their own retries
                queue.append(_Task(members, max(self._timeout_of(p) for _, p in members), 0, batched=True))
        running: dict[Any, _Task] = {}
        by_token: dict[int, _Task] = {}
        tokens = iter(range(1 << 62))
        seen = 0  # start reports read from the board
        poll: list[Any] = []  # the one outstanding board.since call
        progress = time.monotonic()  # last time a task of this call was running or finished
        board_asked = time.monotonic()
        board_ready = board is None

        def mark_started(task: _Task, now: float) -> None:
            if task.started is None:
                task.started = now
                task.deadline = now + task.timeout_s

        def submit() -> None:
            while queue and len(running) < window:
                task = queue.popleft()
                task.token = next(tokens)
                task.ref = remote.options(max_retries=task.retries, retry_exceptions=False).remote(
                    [p for _, p in task.members], prices_ref, rf, board, task.token, node_check, cost_model
                )
                task.submitted = time.monotonic()
                task.started, task.deadline = None, math.inf
                if board is None:  # this driver's own Ray: the window fits its CPUs, the task starts now
                    mark_started(task, task.submitted)
                running[task.ref] = task
                by_token[task.token] = task

        def read_board(now: float) -> None:
            nonlocal seen, board, board_ready
            if board is None:
                return
            if poll and _wait(poll, timeout=0)[0]:
                try:
                    started = ray.get(poll.pop())
                except Exception as exc:  # the actor died: fall back to submit times
                    logger.warning("start reports lost (%s): sleeve budgets count from submission", exc)
                    board = None
                    for task in running.values():
                        mark_started(task, task.submitted)
                    return
                board_ready = True
                seen += len(started)
                for token in started:
                    task = by_token.get(token)
                    if task is not None and task.ref in running:
                        mark_started(task, now)
            elif not board_ready and now - board_asked > BOARD_START_TIMEOUT_S:
                logger.warning("the start-report actor did not come up in %.0f s: sleeve budgets count from "
                               "submission", BOARD_START_TIMEOUT_S)
                board = None
                for task in running.values():
                    mark_started(task, task.submitted)
                return
            if not poll:
                poll.append(board.since.remote(seen))

        def unbatch(task: _Task) -> None:
            for member in reversed(task.members):
                queue.appendleft(self._single(*member))

        try:
            submit()
            while running:
                now = time.monotonic()
                read_board(now)
                next_deadline = min([t.deadline for t in running.values()] + [progress + queue_timeout])
                wait_s = min(self.poll_interval_s, max(0.0, next_deadline - now))
                ready, rest = _wait(list(running), num_returns=1, timeout=wait_s)  # returns at the first
                if ready and rest:  # ... and whatever else is done by now, without waiting
                    ready += _wait(rest, num_returns=len(rest), timeout=0)[0]
                finished = [running.pop(ref) for ref in ready]
                now = time.monotonic()
                if finished or not board_ready or any(t.started is not None for t in running.values()):
                    progress = now
                expired = [running.pop(ref) for ref, t in list(running.items()) if now >= t.deadline]
                starved: list[_Task] = []
                if now - progress >= queue_timeout:  # tasks waiting, none running, for queue_timeout
                    starved = [running.pop(ref) for ref, t in list(running.items()) if t.started is None]
                    starved += list(queue)
                    queue.clear()
                for task in expired + starved:
                    if task.ref is not None:
                        self._cancel(task)
                submit()  # keep the workers busy while the caller writes what came back
                for task in finished:
                    outcomes = self._collect(task)
                    if outcomes is None:
                        unbatch(task)
                        continue
                    task.ref = None
                    yield from outcomes
                for task in expired:
                    if task.batched:
                        unbatch(task)
                    else:
                        yield self._time_out(task)
                for task in starved:
                    yield from self._never_started(task, now - progress, queue_timeout)
                submit()
        finally:
            for ref in running:  # only on an unexpected error or early close: leave nothing running
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # pragma: no cover
                    pass
            if board_actor is not None:
                try:
                    ray.kill(board_actor)
                except Exception:  # pragma: no cover - the actor is gone with the connection
                    pass
            del prices_ref, node_check

    def _finish(self, task: _Task, record: dict[str, Any], attempts: int | None) -> dict[str, Any]:
        record = dict(record)
        record.setdefault("traceback", None)
        record["attempts"] = attempts
        record["max_retries"] = self._retries_of(task.members[0][1]) if not task.batched else 0
        return record

    def _error(self, task: _Task, exc: BaseException, runtime_s: float, attempts: int | None) -> SleeveOutcome:
        name = task.members[0][1].name
        return SleeveOutcome(self._finish(task, _record(name, exc, runtime_s), attempts), {})

    def _collect(self, task: _Task) -> list[SleeveOutcome] | None:
        """The outcomes of a finished task; ``None`` when a batch must be re-run one by one."""
        import ray
        import ray.exceptions

        elapsed = time.monotonic() - task.submitted
        try:
            packed = ray.get(task.ref)
        except ray.exceptions.TaskCancelledError:
            return None if task.batched else [self._time_out(task)]
        except Exception as exc:  # worker crash, RayTaskError (unwrapped), OOM, object lost, ...
            if task.batched:
                return None
            name = task.members[0][1].name
            if isinstance(exc, ray.exceptions.WorkerCrashedError):
                crash = WorkerCrashedError(
                    f"worker process died while running sleeve {name!r} "
                    f"({task.retries + 1} attempt(s), max_retries={task.retries}); ray: {_first_line(str(exc))}"
                )
                return [self._error(task, crash, elapsed, task.retries + 1)]
            original = _unwrap(exc)
            outcome = self._error(task, original, elapsed, None)
            if original is not exc:
                outcome.record["traceback"] = str(exc)[-_TRACEBACK_LIMIT:]
            return [outcome]
        attempts = 1 if task.batched or task.retries == 0 else None
        if not isinstance(packed, list) or len(packed) != len(task.members):
            packed = [None] * len(task.members)
        outcomes = []
        for (_, profile), item in zip(task.members, packed, strict=True):
            record = item.get("record") if isinstance(item, dict) else None
            if not isinstance(record, dict) or record.get("sleeve") != profile.name:
                bad = StrategyOutputError(
                    f"sleeve {profile.name!r}: the worker returned {type(item).__name__}, not this sleeve's record"
                )
                outcomes.append(SleeveOutcome(self._finish(task, _record(profile.name, bad, elapsed), None), {}))
                continue
            outcomes.append(SleeveOutcome(self._finish(task, record, attempts), dict(item.get("parquet") or {})))
        return outcomes

    def _cancel(self, task: _Task) -> None:
        import ray

        try:
            ray.cancel(task.ref, force=True)
        except Exception as exc:  # the task may have finished in between: nothing to kill
            logger.debug("cancel of sleeve(s) %s failed: %s", [p.name for _, p in task.members], exc)

    def _time_out(self, task: _Task) -> SleeveOutcome:
        name = task.members[0][1].name
        timeout = SleeveTimeout(
            f"sleeve {name!r} timed out after {_format_seconds(task.timeout_s)} s of running (worker cancelled)"
        )
        return self._error(task, timeout, time.monotonic() - task.submitted, None)

    def _never_started(self, task: _Task, starved_s: float, queue_timeout: float) -> Iterator[SleeveOutcome]:
        """One SleeveQueueTimeout record per member of a task the cluster never ran."""
        for index, profile in task.members:
            single = self._single(index, profile)
            single.submitted = task.submitted or time.monotonic()
            error = SleeveQueueTimeout(
                f"sleeve {profile.name!r} never started: the Ray cluster ran none of this run's tasks for "
                f"{starved_s:.0f} s (queue deadline queue_timeout_s={_format_seconds(queue_timeout)} s, "
                "$QUANT_META_RAY_QUEUE_TIMEOUT_S); the cluster is busy with other drivers' work"
            )
            yield self._error(single, error, time.monotonic() - single.submitted, 0)
