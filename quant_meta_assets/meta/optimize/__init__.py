"""meta.optimize: walk-forward meta-weights over sleeve returns (pure: no dagster, no ray).

``optimize_meta_weights(returns, method=...)`` -> ``OptimizationResult(weights, diagnostics)``.
See ``engine`` for the walk-forward contract and the per-rebalance policies, ``methods`` for the
convex formulations and exact fast paths, ``hrp`` for the HRP settings and ``estimators`` for the
covariance / expected-return estimators.
"""

from __future__ import annotations

from quant_meta_assets.meta.optimize.engine import (
    DIAGNOSTIC_COLUMNS,
    METHODS,
    OptimizationResult,
    optimize_meta_weights,
)
from quant_meta_assets.meta.optimize.errors import (
    InfeasibleConstraintsError,
    InsufficientHistoryError,
    OptimizationError,
    OptimizerConfigError,
)
from quant_meta_assets.meta.optimize.estimators import COVARIANCES, EXPECTED_RETURNS

__all__ = [
    "COVARIANCES",
    "DIAGNOSTIC_COLUMNS",
    "EXPECTED_RETURNS",
    "METHODS",
    "InfeasibleConstraintsError",
    "InsufficientHistoryError",
    "OptimizationError",
    "OptimizationResult",
    "OptimizerConfigError",
    "optimize_meta_weights",
]
