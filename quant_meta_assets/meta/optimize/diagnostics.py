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


def covariance_summary(diagnostics: pd.DataFrame | None) -> str | None:
    """Which covariance estimator the walk used, the rule that chose it and what it did; or None."""
    if diagnostics is None or len(diagnostics) == 0 or "covariance_rule" not in diagnostics:
        return None
    rules = diagnostics["covariance_rule"].astype(str).unique()
    text = "; ".join(rules)
    shrink = pd.to_numeric(diagnostics.get("shrinkage"), errors="coerce") if "shrinkage" in diagnostics else None
    if shrink is not None and shrink.notna().any() and float(shrink.max()) > 0:
        text += (f"; shrinkage towards mu*I: mean {shrink.mean():.3f} (min {shrink.min():.3f}, "
                 f"max {shrink.max():.3f}) over {len(diagnostics)} rebalances")
    if "psd_repaired" in diagnostics:
        text += f"; eigenvalues clipped at {int(diagnostics['psd_repaired'].sum())} of {len(diagnostics)} rebalances"
    return text
