"""Summaries of the optimizer's per-rebalance diagnostics for the UI metadata and the report."""

from __future__ import annotations

import pandas as pd

from quant_meta_assets.meta.optimize.engine import SINGULAR_SUFFIX


def singular_covariance_rebalances(diagnostics: pd.DataFrame | None) -> pd.DataFrame:
    """The rebalances whose covariance was singular or near-singular (status ``*_singular_cov``)."""
    if diagnostics is None or "status" not in diagnostics:
        return pd.DataFrame()
    flagged = diagnostics["status"].astype(str).str.endswith(SINGULAR_SUFFIX)
    return diagnostics.loc[flagged.to_numpy()]


def covariance_warning(diagnostics: pd.DataFrame | None) -> str | None:
    """One sentence for a banner: how many rebalances used a singular covariance, and why; or None."""
    flagged = singular_covariance_rebalances(diagnostics)
    if flagged.empty:
        return None
    first = flagged.index[0]
    first = first.date() if isinstance(first, pd.Timestamp) else first
    why = flagged["warning"].dropna().iloc[0] if "warning" in flagged and flagged["warning"].notna().any() else ""
    return (f"{len(flagged)} of {len(diagnostics)} rebalances (first {first}) were optimised on a singular or "
            f"near-singular covariance: {why}")
