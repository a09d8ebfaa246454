"""The stop-the-line gate, in front of every meta stage and the publication.

A guard in one asset is skipped by a selection that starts after it (`meta/optimize*`) and by a
re-execution from failure, so every meta step calls ``require_current`` itself, before it stores
anything: every registered sleeve must be good and current (registry entry, code and prices of
now), and every meta input must be of that lineage (computed on exactly today's sleeve bundles
and prices). One bulk read of the instance per call, whatever the number of sleeves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from quant_meta_assets.dagster_defs.instance_queries import current_prices_hash, sleeve_statuses
from quant_meta_assets.errors import LineageError
from quant_meta_assets.publishing import lineage
from quant_meta_assets.sleeves.status import describe, not_good


@dataclass(frozen=True)
class CurrentLine:
    """What is current now: each registered sleeve's latest bundle and the prices hash."""

    step: str
    sleeves: dict[str, str]  # sleeve -> "run id/data hash"
    prices_hash: str

    def check(self, key: str, found: Mapping[str, Any] | None) -> None:
        """``dg.Failure`` unless ``found`` (an input's lineage) is of the current line."""
        try:
            if not found:
                raise LineageError(f"{key} carries no lineage (stored before lineage was recorded): run meta_full")
            lineage.check_current(found, key, self.sleeves, self.prices_hash)
        except LineageError as exc:
            raise dg.Failure(description=f"stop the line: {self.step} refuses its inputs: {exc}") from exc


def require_current(
    context: dg.AssetExecutionContext, upstream: Mapping[str, Mapping[str, Any] | None] | None = None
) -> CurrentLine:
    """Raise ``dg.Failure`` (naming each sleeve or input and why) unless the line may go on:
    every registered sleeve good and current, every ``upstream`` lineage (input key -> lineage)
    computed on exactly the current sleeve bundles and prices."""
    prices_hash = current_prices_hash(context.instance)
    statuses = sleeve_statuses(context.instance, prices_hash=prices_hash)
    bad = not_good(statuses)
    step = context.asset_key.to_user_string() if context.has_assets_def else "meta"
    if bad:
        raise dg.Failure(
            description=f"stop the line: {len(bad)} of {len(statuses)} registered sleeves are not good and "
            f"current; {step} does not run:\n" + describe(statuses),
            metadata={f"error/{s.sleeve}": s.reason for s in bad},
        )
    line = CurrentLine(step, {s.sleeve: s.stored.ref for s in statuses}, prices_hash)
    for key, found in (upstream or {}).items():
        line.check(key, found)
    return line


def derive(line: CurrentLine, run_id: str, upstream: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """This step's lineage from its inputs' (``dg.Failure`` if they disagree)."""
    try:
        return lineage.derive(line.step, run_id, upstream)
    except LineageError as exc:
        raise dg.Failure(description=f"stop the line: {exc}") from exc
