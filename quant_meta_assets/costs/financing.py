"""The daily holding cost of a book of weights: borrow on shorts, funding on leverage.

With start-of-day weights ``w`` (fractions of value, cash ``1 - Σ_i w_i`` earning rf as in
``rates.py``; short proceeds are part of that cash):

    holding(t) = Σ_i max(-w_i(t), 0) f_i + max(Σ_i w_i(t) - 1, 0) s

``f_i`` the daily borrow fee of asset i, ``s`` the daily funding spread over rf on borrowed cash
(``CostModel.borrow_daily`` / ``funding_daily``). It is charged on the day itself, as a fraction of
the start-of-day value, like cvxportfolio's ``HoldingCost`` on the positions actually held. A netted
book pays it on its NET position per asset, so a short in one sleeve against a long in another pays
no borrow in the book: that difference is a netting saving.
"""

from __future__ import annotations

import numpy as np

__all__ = ["holding_cost"]


def holding_cost(weights: np.ndarray, borrow_daily: np.ndarray, funding_daily: float) -> np.ndarray:
    """Daily holding cost (decimal) of each row of ``weights`` (days x assets)."""
    w = np.asarray(weights, dtype=float)
    short = np.maximum(-w, 0.0) @ np.asarray(borrow_daily, dtype=float)
    borrowed_cash = np.maximum(w.sum(axis=1) - 1.0, 0.0)
    return short + borrowed_cash * float(funding_daily)
