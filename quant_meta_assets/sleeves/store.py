"""SleeveStore: sleeve records on disk, one bundle per sleeve, written as they stream in.

The SDK's twin of what the Dagster `sleeves` asset and its IO manager do: each outcome from
``RayComputeEngine.stream_sleeves`` is staged (its Parquet bytes written, then dropped) as soon
as it arrives, and every bundle is committed once the stream ends, so memory is bounded by
the in-flight window. The records handed back are ``StoredBundle``s: frames are read from
disk when a stage asks for them. Layout per sleeve: ``<directory>/<sleeve>/`` with
``meta.json`` (the record's scalars) and each frame's Parquet files (one per year, see storage);
a failed sleeve has no frame files.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from quant_meta_assets.storage import (
    StagedBundle,
    StoredBundle,
    commit_bundles,
    discard_bundle,
    safe_child,
    stage_appended_bundle,
    stage_bundle,
)

FRAME_KEYS = ("returns", "weights", "costs", "turnover")


class SleeveStore:
    """Sleeve bundles under ``directory`` (names are validated path parts)."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def path(self, sleeve: str) -> Path:
        return safe_child(self.directory, sleeve)

    def stage(self, outcome: Any) -> StagedBundle:
        """Write one ``SleeveOutcome`` next to its bundle (not yet current)."""
        meta = {k: v for k, v in outcome.record.items() if k not in outcome.parquet}
        if getattr(outcome, "appended_to", None) is not None:  # an update: rows appended to its previous bundle
            cuts = {k: pd.Timestamp(v) for k, v in outcome.replace_from.items()}
            return stage_appended_bundle(self.path(outcome.name), outcome.appended_to, dict(outcome.parquet), {}, meta,
                                         replace_from=cuts)
        return stage_bundle(self.path(outcome.name), dict(outcome.parquet), meta)

    def save_stream(self, outcomes: Iterable[Any], order: Sequence[str]) -> list[StoredBundle]:
        """Stage each outcome as it arrives, commit them all, return the stored records in ``order``.

        If the stream raises, what was staged is discarded and the previous bundles stay current.
        """
        staged: dict[str, StagedBundle] = {}
        try:
            for outcome in outcomes:
                staged[outcome.name] = self.stage(outcome)
        except BaseException:
            for item in staged.values():
                discard_bundle(item)
            raise
        missing = [name for name in order if name not in staged]
        if missing:
            for item in staged.values():
                discard_bundle(item)
            raise RuntimeError(f"the sleeve stream ended without sleeves {missing}")
        commit_bundles(staged[name] for name in order)
        return [self.load(name) for name in order]

    def load(self, sleeve: str) -> StoredBundle:
        return StoredBundle(self.path(sleeve)).with_meta(sleeve=sleeve)
