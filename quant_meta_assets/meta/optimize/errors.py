"""Errors specific to the meta-optimizer, all inside the project's exception family."""

from __future__ import annotations

from quant_meta_assets.errors import InfeasibleConstraintsError, OptimizationError, QuantMetaError

__all__ = [
    "InfeasibleConstraintsError",
    "InsufficientHistoryError",
    "OptimizationError",
    "OptimizerConfigError",
]


class OptimizerConfigError(QuantMetaError, ValueError):
    """An optimizer argument is invalid (unknown method/sleeve/group, bad number...)."""


class InsufficientHistoryError(OptimizerConfigError):
    """``lookback`` is longer than the return history: no rebalance date exists."""
