"""Lineage: what each meta output was computed from, and the checks that keep one book one lineage.

Every meta output carries a small JSON-able *lineage* record, stored in its bundle with the value:

- ``asset`` and ``run_id``: which output this is and the run that computed it (run-scoped
  bundles are never rewritten, so the pair names the stored bytes);
- ``computed_at``: when (UTC, ISO 8601);
- ``prices_hash`` and ``as_of``: the content hash of the validated price frame and its last date;
- ``sleeves``: sleeve -> ``"<run id>/<data hash>"``, the exact stored bundle of each sleeve;
- ``inputs``: upstream meta asset -> the run id of the bundle that was read.

A stage derives its lineage from its inputs' (``derive``) and refuses inputs that disagree; the
Dagster gate compares an input's lineage with what is current now (``check_current``); the
publication step checks the four members against each other (``check_set``). Pure core.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from quant_meta_assets.errors import LineageError

__all__ = [
    "KEY",
    "attach",
    "check_current",
    "check_set",
    "derive",
    "detach",
    "digest",
    "for_sleeves",
    "sleeve_ref",
]

KEY = "lineage"  # a mapping value's key, or a DataFrame value's ``attrs`` key
_MAX_NAMED = 10  # disagreements named in one message


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def sleeve_ref(run_id: str | None, data_hash: str | None) -> str:
    """A stored sleeve bundle's identity: the run that stored it and its content hash."""
    return f"{run_id}/{data_hash}"


def digest(sleeves: Mapping[str, str]) -> str:
    """A short hash of a sleeve map (for UI metadata, where the whole map would be too long)."""
    return hashlib.sha256(json.dumps(dict(sorted(sleeves.items()))).encode()).hexdigest()[:16]


def attach(value: Any, lineage: Mapping[str, Any]) -> Any:
    """``value`` carrying ``lineage``: a DataFrame/Series in ``attrs``, a mapping under ``"lineage"``."""
    if isinstance(value, (pd.DataFrame, pd.Series)):
        value.attrs[KEY] = dict(lineage)
        return value
    if isinstance(value, Mapping):
        return {**value, KEY: dict(lineage)}
    raise TypeError(f"cannot attach a lineage to a {type(value).__name__}")


def detach(value: Any) -> dict[str, Any] | None:
    """The lineage a loaded value carries (None if it has none). A frame's ``attrs`` entry is
    removed, so pandas does not copy it through every operation on the frame."""
    if isinstance(value, (pd.DataFrame, pd.Series)):
        return value.attrs.pop(KEY, None)
    if isinstance(value, Mapping):
        found = value.get(KEY)
        return dict(found) if isinstance(found, Mapping) else None
    return None


def _named(items: list[str]) -> str:
    more = f" (and {len(items) - _MAX_NAMED} more)" if len(items) > _MAX_NAMED else ""
    return "; ".join(items[:_MAX_NAMED]) + more


def for_sleeves(asset: str, run_id: str, records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The lineage of an output computed directly from stored sleeve records (``meta/returns``).

    Every record must name its run, content hash and prices; all must share one prices snapshot.
    """
    sleeves: dict[str, str] = {}
    prices: dict[tuple[str, str], list[str]] = {}
    for record in records:
        name = str(record["sleeve"])
        if record.get("status", "success") != "success":
            raise LineageError(f"{name}: {record.get('error') or 'status ' + repr(record.get('status'))}")
        missing = [k for k in ("run_id", "data_hash", "prices_hash", "as_of") if not record.get(k)]
        if missing:
            raise LineageError(f"sleeve {name!r}: its stored bundle does not record {missing}; recompute it")
        sleeves[name] = sleeve_ref(record["run_id"], record["data_hash"])
        prices.setdefault((str(record["prices_hash"]), str(record["as_of"])), []).append(name)
    if len(prices) > 1:
        groups = [f"prices {h} (as of {a}): {_named(names)}" for (h, a), names in prices.items()]
        raise LineageError("the sleeves were computed on different prices snapshots: " + " | ".join(groups))
    if not sleeves:
        raise LineageError(f"{asset}: no sleeves to compute from")
    (prices_hash, as_of), = prices
    return {"asset": asset, "run_id": run_id, "computed_at": _now(), "prices_hash": prices_hash, "as_of": as_of,
            "sleeves": sleeves, "inputs": {}}


def _disagreements(a: Mapping[str, Any], b: Mapping[str, Any], what_a: str, what_b: str) -> list[str]:
    out = []
    if a["prices_hash"] != b["prices_hash"]:
        out.append(f"{what_a} used prices {a['prices_hash']} (as of {a['as_of']}), "
                   f"{what_b} prices {b['prices_hash']} (as of {b['as_of']})")
    sa, sb = a["sleeves"], b["sleeves"]
    if sa != sb:
        names = sorted(set(sa) | set(sb))
        diff = [f"{n}: {sa.get(n, 'absent')} vs {sb.get(n, 'absent')}" for n in names if sa.get(n) != sb.get(n)]
        out.append(f"{what_a} and {what_b} used different sleeve bundles ({_named(diff)})")
    return out


def derive(asset: str, run_id: str, upstream: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """The lineage of ``asset`` computed in ``run_id`` from the meta outputs ``upstream`` (key ->
    lineage). Raises LineageError unless they share one prices snapshot and one set of sleeve
    bundles, and each upstream's own inputs are the very bundles given here."""
    absent = [key for key, lin in upstream.items() if not lin]
    if absent:
        raise LineageError(f"{asset}: input(s) {absent} carry no lineage (stored before lineage was recorded); "
                           "run meta_full")
    problems = []
    keys = list(upstream)
    first = upstream[keys[0]]
    for key in keys[1:]:
        problems += _disagreements(first, upstream[key], keys[0], key)
    for key, lin in upstream.items():
        for inner, inner_run in lin.get("inputs", {}).items():
            if inner in upstream and upstream[inner]["run_id"] != inner_run:
                problems.append(f"{key} (run {lin['run_id']}) was computed from {inner} of run {inner_run}, "
                                f"but {inner} here is from run {upstream[inner]['run_id']}")
    if problems:
        raise LineageError(f"{asset}: inputs from different lineages: " + "; ".join(problems))
    return {"asset": asset, "run_id": run_id, "computed_at": _now(), "prices_hash": first["prices_hash"],
            "as_of": first["as_of"], "sleeves": dict(first["sleeves"]),
            "inputs": {key: lin["run_id"] for key, lin in upstream.items()}}


def check_current(
    lineage: Mapping[str, Any], what: str, current_sleeves: Mapping[str, str], prices_hash: str | None
) -> None:
    """Raise LineageError unless ``lineage`` was computed on exactly today's sleeve bundles (the
    latest stored bundle of every registered sleeve) and today's prices."""
    problems = []
    if prices_hash is not None and lineage["prices_hash"] != prices_hash:
        problems.append(f"computed on prices {lineage['prices_hash']} (as of {lineage['as_of']}), "
                        f"the current prices are {prices_hash}")
    used = lineage["sleeves"]
    changed = [f"{n}: used {used[n]}, current {current_sleeves[n]}"
               for n in current_sleeves if n in used and used[n] != current_sleeves[n]]
    if changed:
        problems.append(f"sleeve bundles changed since: {_named(changed)}")
    added = [n for n in current_sleeves if n not in used]
    if added:
        problems.append(f"registered sleeves it does not include: {_named(added)}")
    removed = [n for n in used if n not in current_sleeves]
    if removed:
        problems.append(f"sleeves no longer registered: {_named(removed)}")
    if problems:
        raise LineageError(f"{what} (run {lineage['run_id']}) is not of the current lineage: " + "; ".join(problems))


def check_set(members: Mapping[str, Mapping[str, Any] | None], order: Iterable[str]) -> None:
    """Raise LineageError unless the members (asset key -> lineage) form one lineage: one prices
    snapshot, one set of sleeve bundles, and every member's inputs are the other members."""
    keys = list(order)
    absent = [k for k in keys if not members.get(k)]
    if absent:
        raise LineageError(f"no lineage recorded for {absent}")
    problems = []
    for key in keys[1:]:
        problems += _disagreements(members[keys[0]], members[key], keys[0], key)
    for key in keys:
        for inner, run_id in members[key].get("inputs", {}).items():
            if inner in members and members[inner]["run_id"] != run_id:
                problems.append(f"{key} (run {members[key]['run_id']}) was computed from {inner} of run {run_id}, "
                                f"not the {inner} of run {members[inner]['run_id']} in this set")
    if problems:
        raise LineageError("the set is not one lineage: " + "; ".join(problems))
