"""Hierarchical Risk Parity (Lopez de Prado 2016), matching skfolio's ``HierarchicalRiskParity``.

Settings (skfolio's defaults, which this module reproduces to ~1e-12):

* distance: ``sqrt(clip(0.5 * (1 - rho), 0, 1))`` on the correlation of the window
  (skfolio ``PearsonDistance()``); the correlation is taken from the engine's covariance
  estimate, which for ``covariance="sample"`` is the Pearson correlation of the window;
* linkage: ``scipy.cluster.hierarchy.linkage(method="ward")`` on the condensed distance
  (skfolio ``HierarchicalClustering()`` default ``LinkageMethod.WARD``);
* leaf order: ``scipy.cluster.hierarchy.optimal_leaf_ordering`` then ``leaves_list``
  (skfolio ``HierarchicalSeriation(optimal_ordering=True)``);
* recursive bisection of the ordered list at ``n // 2``; each half's risk is the variance of its
  inverse-variance portfolio (``RiskMeasure.VARIANCE``); split factor
  ``alpha = 1 - risk_left / (risk_left + risk_right)``;
* weight bounds use skfolio's split-factor rule (``_apply_weight_constraints_to_split_factor``):
  alpha is clipped so each half's total stays within the sums of its members' min/max weights.
  With non-trivial bounds this is a heuristic that can still leave a sleeve outside its bounds;
  the engine then projects onto the feasible set (recorded in diagnostics).

``linkage`` may be set to another scipy method (e.g. ``"single"``, the original paper's choice);
it then matches skfolio with ``HierarchicalClustering(linkage_method=LinkageMethod.SINGLE)``.
"""

from __future__ import annotations

import numpy as np
import scipy.cluster.hierarchy as sch
import scipy.spatial.distance as scd

HRP_LINKAGE = "ward"
HRP_OPTIMAL_ORDERING = True


def correlation_distance(cov: np.ndarray) -> np.ndarray:
    std = np.sqrt(np.diag(cov))
    corr = cov / std[:, None] / std[None, :]
    corr = np.clip(corr, -1.0, 1.0)
    return np.sqrt(np.clip(0.5 * (1.0 - corr), 0.0, 1.0))


def hrp_order(cov: np.ndarray, linkage: str = HRP_LINKAGE, optimal_ordering: bool = HRP_OPTIMAL_ORDERING) -> np.ndarray:
    k = cov.shape[0]
    if k == 1:
        return np.zeros(1, dtype=int)
    dist = correlation_distance(cov)
    condensed = scd.squareform(dist, checks=False)
    link = sch.linkage(condensed, method=linkage, optimal_ordering=False)
    if optimal_ordering:
        link = sch.optimal_leaf_ordering(link, condensed)
    return sch.leaves_list(link)


def _split_alpha(alpha, weights, lb, ub, left, right):
    alpha = min(np.sum(ub[left]) / weights[left[0]], max(np.sum(lb[left]) / weights[left[0]], alpha))
    alpha = 1 - min(
        np.sum(ub[right]) / weights[right[0]],
        max(np.sum(lb[right]) / weights[right[0]], 1 - alpha),
    )
    return alpha


def hrp_weights(
    cov: np.ndarray,
    lb: np.ndarray | None = None,
    ub: np.ndarray | None = None,
    linkage: str = HRP_LINKAGE,
    optimal_ordering: bool = HRP_OPTIMAL_ORDERING,
) -> np.ndarray:
    """HRP weights for covariance ``cov`` (all variances must be > 0)."""
    k = cov.shape[0]
    lb = np.zeros(k) if lb is None else lb
    ub = np.ones(k) if ub is None else ub
    ordering = hrp_order(cov, linkage, optimal_ordering)
    var = np.diag(cov).copy()
    weights = np.ones(k)
    items = [ordering]
    while items:
        new_items = []
        for e in items:
            n = len(e)
            if n <= 1:
                continue
            mid = n // 2
            clusters = [e[:mid], e[mid:]]
            new_items += clusters
            risks = []
            for ids in clusters:
                inv = np.zeros(k)
                inv[ids] = 1 / var[ids]
                inv /= inv.sum()
                risks.append(float(inv @ cov @ inv))
            left_risk, right_risk = risks
            alpha = 1 - left_risk / (left_risk + right_risk)
            alpha = _split_alpha(alpha, weights, lb, ub, clusters[0], clusters[1])
            weights[clusters[0]] *= alpha
            weights[clusters[1]] *= 1 - alpha
        items = new_items
    return weights
