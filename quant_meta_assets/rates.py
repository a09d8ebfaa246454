"""The one risk-free-rate convention of the project (sleeve cash, optimizer, metrics, report).

* ``rf`` is an ANNUAL decimal rate (0.02 = 2%/yr). The project's rate is
  ``$QUANT_META_RISK_FREE_RATE`` (default 0); every ``risk_free_rate=None`` argument means it.
* It is converted to a DAILY rate geometrically, ``rf_d = (1 + rf)^(1/252) - 1`` (as quantstats
  does), so 252 days of cash compound to exactly ``rf``.
* Uninvested sleeve cash (``1 - sum(w)``) earns ``rf_d`` every day; Sharpe and Sortino subtract
  ``rf_d`` from daily returns; ``max_sharpe`` maximises ``(mu - rf_d)'w / sqrt(w'Sigma w)``.
"""

from __future__ import annotations

import math
import os

from quant_meta_assets.settings import RISK_FREE_RATE_ENV

PERIODS_PER_YEAR = 252

__all__ = ["PERIODS_PER_YEAR", "daily_rate", "project_risk_free_rate", "resolve"]


def project_risk_free_rate() -> float:
    """``$QUANT_META_RISK_FREE_RATE`` as an annual decimal, 0 when unset."""
    raw = os.environ.get(RISK_FREE_RATE_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{RISK_FREE_RATE_ENV}={raw!r} is not a number (annual decimal, e.g. 0.02)") from None
    if not math.isfinite(value) or value <= -1.0:
        raise ValueError(f"{RISK_FREE_RATE_ENV}={raw!r} must be a finite annual rate > -1")
    return value


def resolve(risk_free_rate: float | None) -> float:
    """An explicit annual rate, or the project's when ``None``."""
    if risk_free_rate is None:
        return project_risk_free_rate()
    value = float(risk_free_rate)
    if not math.isfinite(value) or value <= -1.0:
        raise ValueError(f"risk_free_rate must be a finite annual rate > -1, got {risk_free_rate!r}")
    return value


def daily_rate(annual_rate: float | None) -> float:
    """Annual rate (``None`` = the project's) -> daily rate, geometric: (1 + rf)^(1/252) - 1."""
    return float((1.0 + resolve(annual_rate)) ** (1.0 / PERIODS_PER_YEAR) - 1.0)
