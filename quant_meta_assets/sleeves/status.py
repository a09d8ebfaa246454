"""Is each registered sleeve's stored output good and current? One pure answer for every caller.

The blocking check, the meta gate, both sensors and the report's lineage all ask the same
question, so they all call ``assess_sleeves`` over the same inputs: the registry (what each
sleeve *should* be, as a config hash), the current prices hash, and the latest stored record of
each sleeve (read from wherever it is recorded; the Dagster driver reads the instance in bulk).

A sleeve is
- ``missing``  no stored record (never materialized, or only by a run that died first);
- ``failed``   its latest record has a status other than success;
- ``stale``    it succeeded, but with another registry entry, risk-free rate, holding costs (borrow,
               funding), strategy code or prices than today's. When today's prices only append
               dates to the ones it was computed on (``price_changes``, incremental/prefix.py),
               the reason says so: ``prices appended (+N days after D): an incremental update``;
               a revision is named (``prices revised on D for T``), anything else is
               ``prices changed``. Stale either way (a run must compute the new days);
- ``current``  it succeeded with today's registry entry, code and prices.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from quant_meta_assets import rates

MISSING, FAILED, STALE, CURRENT = "missing", "failed", "stale", "current"


def frame_hash(*frames: pd.DataFrame | pd.Series) -> str:
    """Content hash of pandas objects (values and index): the data version of a stored output."""
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def extended_frame_hash(previous: str, *new_rows: pd.DataFrame | pd.Series) -> str:
    """The data version of stored frames extended by ``new_rows``: the previous version chained with
    the new rows' hash, so an update need not read what it extends. It identifies the content as
    ``frame_hash`` does, but is not ``frame_hash`` of the whole frames (a full run's version)."""
    return hashlib.sha256(f"{previous}+{frame_hash(*new_rows)}".encode()).hexdigest()[:16]


def _project_costs() -> tuple[dict | None, dict | None]:
    """What of the project's cost model changes a sleeve's output: (holding costs, per-ticker
    half-spreads), each None when there are none (so a book without them keeps the hashes it had
    before they existed)."""
    import os

    from quant_meta_assets.settings import BORROW_BPS_ENV, COSTS_FILE_ENV, FUNDING_SPREAD_BPS_ENV

    path = os.environ.get(COSTS_FILE_ENV) or None
    try:
        stamp = os.stat(path).st_mtime_ns if path else None
    except OSError:
        stamp = None  # load_cost_model names the missing file
    return _project_costs_of(path, stamp, os.environ.get(BORROW_BPS_ENV, ""), os.environ.get(FUNDING_SPREAD_BPS_ENV, ""))


@functools.lru_cache(maxsize=8)
def _project_costs_of(path, stamp, borrow, funding) -> tuple[dict | None, dict | None]:  # noqa: ARG001 - cache key
    from quant_meta_assets.costs.cost_model import load_cost_model

    model = load_cost_model(path)
    holding = ({"default_borrow_bps": model.default_borrow_bps, "borrow_bps": dict(sorted(model.borrow_bps.items())),
                "funding_spread_bps": model.funding_spread_bps} if model.has_holding_costs else None)
    return holding, (dict(sorted(model.half_spread_bps.items())) or None)


def config_hash(profile, risk_free_rate: float | None = None, holding_costs: Mapping | None = None) -> str:
    """Hash of everything that changes a sleeve's output but its prices: the registry entry, the
    risk-free rate its cash earns (``None`` = the project's, which the sleeves step uses), the
    holding costs it pays (``None`` = the project's, ``costs.load_cost_model``) and, for a sleeve
    without ``cost_bps``, the cost file's half-spreads."""
    fields = {k: v for k, v in dataclasses.asdict(profile).items() if k not in ("timeout_s", "max_retries", "check_lookahead")}
    fields["risk_free_rate"] = rates.resolve(risk_free_rate)
    project_holding, spreads = _project_costs()
    holding = project_holding if holding_costs is None else (dict(holding_costs) or None)
    if holding is not None:
        fields["holding_costs"] = holding
    if profile.cost_bps is None and spreads is not None:
        fields["half_spreads"] = spreads
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def code_hash(profile) -> str:
    """Hash of the code that computes the sleeve: its strategy's source and the engine's
    (code_versions.strategy_code_hash)."""
    from quant_meta_assets.code_versions import strategy_code_hash

    return strategy_code_hash(profile.strategy)


def identity(profile, risk_free_rate: float | None = None) -> tuple[str, str]:
    """What a registered sleeve must have been computed with: ``(config hash, code hash)``."""
    return config_hash(profile, risk_free_rate), code_hash(profile)


@dataclass(frozen=True)
class StoredSleeve:
    """What was recorded about a sleeve's latest stored output (metadata of its materialization)."""

    status: str
    config_hash: str | None = None
    prices_hash: str | None = None
    error: str | None = None
    run_id: str | None = None
    timestamp: float | None = None
    storage_id: int | None = None
    code_version: str | None = None
    data_version: str | None = None
    start: str | None = None
    end: str | None = None
    code_hash: str | None = None

    @property
    def ref(self) -> str:
        """The stored bundle's identity (publishing.lineage.sleeve_ref): its run and content hash."""
        return f"{self.run_id}/{self.data_version}"


@dataclass(frozen=True)
class SleeveStatus:
    sleeve: str
    state: str  # MISSING | FAILED | STALE | CURRENT
    reason: str
    stored: StoredSleeve | None = None

    @property
    def ok(self) -> bool:
        return self.state == CURRENT

    def failure_reason(self) -> str:
        return self.reason


def assess_sleeves(
    registered: Mapping[str, tuple[str, str]], prices_hash: str | None, stored: Mapping[str, StoredSleeve],
    price_changes: Mapping[str, object] | None = None,
) -> list[SleeveStatus]:
    """The state of each registered sleeve (``{name: (config hash, code hash)}``, in registry order).

    ``prices_hash`` None means "not known here": prices are then not compared. ``price_changes``:
    for a stored prices hash, how today's prices differ from it (an ``incremental.prefix.AppendCheck``:
    ``is_append``, ``new_days``, ``reason``), when known.
    """
    price_changes = price_changes or {}
    out = []
    for name, (wanted_config, wanted_code) in registered.items():
        record = stored.get(name)
        if record is None:
            out.append(SleeveStatus(name, MISSING, "never materialized"))
            continue
        if record.status != "success":
            out.append(SleeveStatus(name, FAILED, record.error or f"status {record.status!r}", record))
            continue
        changed = []
        if record.config_hash != wanted_config:
            changed.append(f"registry entry, risk-free rate or holding costs changed "
                           f"(config hash {record.config_hash} -> {wanted_config})")
        if record.code_hash != wanted_code:
            changed.append(f"strategy code changed (code hash {record.code_hash} -> {wanted_code})")
        if prices_hash is not None and record.prices_hash != prices_hash:
            change = price_changes.get(record.prices_hash)
            if change is not None and getattr(change, "is_append", False):
                changed.append(f"prices appended (+{change.new_days} days after {record.end or 'its last day'}): "
                               f"an incremental update (prices hash {record.prices_hash} -> {prices_hash})")
            elif change is not None:
                changed.append(f"prices changed ({change.reason}; prices hash {record.prices_hash} -> {prices_hash})")
            else:
                changed.append(f"prices changed (prices hash {record.prices_hash} -> {prices_hash})")
        if changed:
            out.append(SleeveStatus(name, STALE, "stale: " + "; ".join(changed), record))
        else:
            out.append(SleeveStatus(name, CURRENT, "good and current", record))
    return out


def not_good(statuses: Sequence[SleeveStatus]) -> list[SleeveStatus]:
    return [s for s in statuses if not s.ok]


def describe(statuses: Sequence[SleeveStatus]) -> str:
    """One line per sleeve that is not good, naming it and why (empty when all are)."""
    return "\n".join(f"- {s.sleeve}: {s.reason}" for s in not_good(statuses))
