"""MetaContext: the state a pipeline run accumulates, stage by stage.

Notebooks build one, fill what they have (say `meta_returns`), and let `QuantSDK.run_stage`
fill the rest. Every field is a plain pandas object or a list of sleeve records, so a context
can be inspected, saved and compared without any framework.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import pandas as pd


@dataclass
class MetaContext:
    prices: pd.DataFrame | None = None  # date x ticker adjusted closes
    sleeve_profiles: list | None = None  # list[SleeveProfile]
    sleeve_results: list | None = None  # one record (a mapping) per sleeve; run_meta_pipeline's are stored, frames read on access
    meta_returns: pd.DataFrame | None = None  # meta.returns: date x sleeve
    meta_weights: pd.DataFrame | None = None  # meta.optimize: rebalance date x sleeve
    optimizer_diagnostics: pd.DataFrame | None = None  # meta.optimize: one row per rebalance
    flattened_weights: pd.DataFrame | None = None  # meta.flatten: date x ticker
    meta_weights_daily: pd.DataFrame | None = None  # meta.flatten: held (drifted) meta-weights
    exposure: pd.DataFrame | None = None  # meta.flatten: gross / net per date
    report: dict | None = None  # meta.report
    extras: dict[str, Any] = field(default_factory=dict)  # lineage, previous report summary, ...

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def filled(self) -> list[str]:
        """Names of the fields that hold a value."""
        return [name for name in self.field_names() if name != "extras" and getattr(self, name) is not None]
