"""Long-only constraints: bounds, group caps, turnover; feasibility checks; validation; projection.

All weights are long-only and fully invested (``sum(w) == 1``). Groups are disjoint (a mapping
sleeve -> group), so the feasibility of bounds + group caps + budget is decided exactly by
interval arithmetic before any solver runs:

* ``min_i <= max_i`` for every sleeve,
* ``sum(min) <= 1``,
* ``sum over groups of min(cap_g, sum of the group's maxima) + sum of ungrouped maxima >= 1``
  (this covers "sum of maxima < 1" and "caps make the budget unreachable"),
* ``cap_g >= sum of the group's minima``.

Inactive sleeves (NaN in the window, or zero variance) are pinned to weight 0 and their bounds
are dropped; the same checks are re-run on the active set at each rebalance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from quant_meta_assets.meta.optimize.errors import InfeasibleConstraintsError, OptimizerConfigError

SUM_TOL = 1e-9
BOUND_TOL = 1e-8
NOISE_TOL = 1e-7  # violations up to this size are treated as solver noise (clipped, renormalised)
FEAS_TOL = 1e-12
RECORD_TOL = 1e-12  # a renormalisation larger than this is recorded in the diagnostics' notes


@dataclass(frozen=True)
class AssetTrade:
    """The meta trade measured in ASSET space (``turnover_space="asset"``): ``||H' w - anchor||_1``.

    ``H`` (active sleeves x assets) holds each active sleeve's holdings drifted to the decision
    date; ``anchor`` (assets) is the book those sleeves make at the drifted meta-weights (inactive
    sleeves included, so selling one out is counted). Moving capital between sleeves that hold the
    same assets costs nothing here, while in sleeve space it is the full ``|Δm|``.
    """

    H: np.ndarray
    anchor: np.ndarray

    def measure(self, w: np.ndarray) -> float:
        return float(np.abs(self.H.T @ w - self.anchor).sum())


def trade_size(w: np.ndarray, ref: np.ndarray | AssetTrade) -> float:
    """Two-sided turnover of moving to ``w``: ``sum |w - ref|`` in sleeve space, or ``ref.measure(w)``."""
    if isinstance(ref, AssetTrade):
        return ref.measure(w)
    return float(np.abs(w - ref).sum())


def _per_sleeve(value: float | Mapping[str, float], sleeves: Sequence[str], default: float, name: str) -> np.ndarray:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(sleeves))
        if unknown:
            raise OptimizerConfigError(f"{name} names unknown sleeves {unknown}; sleeves are {list(sleeves)}")
        out = np.array([float(value.get(s, default)) for s in sleeves])
    else:
        out = np.full(len(sleeves), float(value))
    bad = [s for s, v in zip(sleeves, out, strict=True) if not np.isfinite(v)]
    if bad:
        raise OptimizerConfigError(f"{name} is not finite for sleeves {bad}")
    return out


@dataclass(frozen=True)
class ConstraintSet:
    """Resolved constraints over the full sleeve list (arrays aligned with ``sleeves``)."""

    sleeves: tuple[str, ...]
    lb: np.ndarray
    ub: np.ndarray
    group_of: np.ndarray  # int per sleeve, -1 = ungrouped
    group_names: tuple[str, ...]
    group_caps: np.ndarray  # cap per group index (inf = no cap)
    max_turnover: float | None
    turnover_penalty: float = 0.0
    _key: tuple = field(default=(), compare=False)

    @property
    def has_groups(self) -> bool:
        return bool(np.isfinite(self.group_caps).any())

    def subset(self, active: np.ndarray) -> ActiveConstraints:
        idx = np.flatnonzero(active)
        g = self.group_of[idx]
        groups = []
        for gi in range(len(self.group_names)):
            members = np.flatnonzero(g == gi)
            if members.size and np.isfinite(self.group_caps[gi]):
                groups.append((self.group_names[gi], members, float(self.group_caps[gi])))
        return ActiveConstraints(
            names=tuple(self.sleeves[i] for i in idx),
            lb=self.lb[idx].copy(),
            ub=np.minimum(self.ub[idx], 1.0),
            groups=tuple(groups),
            max_turnover=self.max_turnover,
        )


@dataclass(frozen=True)
class ActiveConstraints:
    """Constraints restricted to the active sleeves of one rebalance."""

    names: tuple[str, ...]
    lb: np.ndarray
    ub: np.ndarray
    groups: tuple[tuple[str, np.ndarray, float], ...]  # (group name, member positions, cap)
    max_turnover: float | None

    @property
    def k(self) -> int:
        return len(self.names)

    @property
    def box_only(self) -> bool:
        """True when only the bounds (and the budget) constrain the weights."""
        return not self.groups

    @property
    def trivial_bounds(self) -> bool:
        return self._trivial

    def __post_init__(self) -> None:
        object.__setattr__(self, "_trivial", bool(np.all(self.lb <= 0.0) and np.all(self.ub >= 1.0)))

    def key(self) -> tuple:
        return (
            self.names,
            self.lb.tobytes(),
            self.ub.tobytes(),
            tuple((g, m.tobytes(), c) for g, m, c in self.groups),
        )

    def check_feasible(self, where: str) -> None:
        """Raise InfeasibleConstraintsError naming the constraint and the numbers."""
        check_bounds_feasible(self.names, self.lb, self.ub, self.groups, where)

    def violations(
        self, w: np.ndarray, w_prev: np.ndarray | AssetTrade | None, turnover_budget: float | None,
        tol: float = BOUND_TOL,
    ) -> list[str]:
        """Human-readable list of violated constraints (empty when valid)."""
        out: list[str] = []
        if not np.all(np.isfinite(w)):
            return ["weights are not finite"]
        s = float(w.sum())
        if abs(s - 1.0) > min(SUM_TOL, tol):
            out.append(f"weights sum to {s:.12g}, not 1 within {SUM_TOL:g}")
        if self.trivial_bounds and not self.groups and (turnover_budget is None or w_prev is None):
            if float(w.min()) < -tol:
                i = int(np.argmin(w))
                out.append(f"{self.names[i]} weight {w[i]:.10g} < 0 (long-only)")
            return out
        lo = np.flatnonzero(w < self.lb - tol)
        if lo.size:
            i = lo[0]
            out.append(f"{self.names[i]} weight {w[i]:.10g} < min_weight {self.lb[i]:.10g} ({lo.size} sleeves below min)")
        hi = np.flatnonzero(w > self.ub + tol)
        if hi.size:
            i = hi[0]
            out.append(f"{self.names[i]} weight {w[i]:.10g} > max_weight {self.ub[i]:.10g} ({hi.size} sleeves above max)")
        for g, members, cap in self.groups:
            tot = float(w[members].sum())
            if tot > cap + tol:
                out.append(f"group {g!r} weight {tot:.10g} > cap {cap:.10g}")
        if turnover_budget is not None and w_prev is not None:
            to = trade_size(w, w_prev)
            if to > turnover_budget + tol:
                out.append(f"turnover {to:.10g} > max_turnover budget {turnover_budget:.10g}")
        return out

    def clean(self, w: np.ndarray) -> tuple[np.ndarray, str | None]:
        """Remove solver noise: clip violations of at most NOISE_TOL, renormalise to sum 1.

        Returns the cleaned copy and a note saying what changed when it is more than rounding
        (a clip, or a sum off by more than RECORD_TOL); the engine records it in ``notes``.
        """
        w = np.array(w, dtype=float)  # a copy
        if not np.isfinite(w).all():
            return w, None
        parts = []
        if (w < self.lb).any() or (w > self.ub).any():
            below = self.lb - w
            above = w - self.ub
            clip_lo = (below > 0) & (below <= NOISE_TOL)
            clip_hi = (above > 0) & (above <= NOISE_TOL)
            w = np.where(clip_lo, self.lb, w)
            w = np.where(clip_hi, self.ub, w)
            if clip_lo.any() or clip_hi.any():
                worst = float(max(below[clip_lo].max(initial=0.0), above[clip_hi].max(initial=0.0)))
                parts.append(f"clipped {int(clip_lo.sum() + clip_hi.sum())} weight(s) to their bounds "
                             f"(largest violation {worst:.3g})")
        s = w.sum()
        if s > 0 and abs(s - 1.0) <= 1e-6:
            w = w / s
            if abs(s - 1.0) > RECORD_TOL:
                parts.append(f"renormalised: the weights summed to {s:.12g}")
        return w, ("cleaned solver noise: " + "; ".join(parts)) if parts else None


def check_bounds_feasible(
    names: Sequence[str],
    lb: np.ndarray,
    ub: np.ndarray,
    groups: Sequence[tuple[str, np.ndarray, float]],
    where: str = "",
) -> None:
    pre = f"{where}: " if where else ""
    if len(names) == 0:
        raise InfeasibleConstraintsError(f"{pre}no active sleeve to allocate to")
    ub1 = np.minimum(ub, 1.0)
    bad = np.flatnonzero(lb > ub1 + FEAS_TOL)
    if bad.size:
        parts = [f"{names[i]} (min {lb[i]:g} > max {ub[i]:g})" for i in bad]
        raise InfeasibleConstraintsError(f"{pre}min_weight > max_weight for sleeves: {', '.join(parts)}")
    smin = float(lb.sum())
    if smin > 1.0 + FEAS_TOL:
        raise InfeasibleConstraintsError(
            f"{pre}sum of min_weight over {len(names)} sleeves is {smin:.10g} > 1 (budget)"
        )
    smax = float(ub1.sum())
    if smax < 1.0 - FEAS_TOL:
        raise InfeasibleConstraintsError(
            f"{pre}sum of max_weight over {len(names)} sleeves is {smax:.10g} < 1 (budget)"
        )
    grouped = np.zeros(len(names), dtype=bool)
    reach = 0.0
    for g, members, cap in groups:
        gmin = float(lb[members].sum())
        if gmin > cap + FEAS_TOL:
            raise InfeasibleConstraintsError(
                f"{pre}group {g!r} cap {cap:.10g} < sum of its members' min_weight {gmin:.10g} "
                f"(members {[names[i] for i in members]})"
            )
        grouped[members] = True
        reach += min(cap, float(ub1[members].sum()))
    if groups:
        reach += float(ub1[~grouped].sum())
        if reach < 1.0 - FEAS_TOL:
            raise InfeasibleConstraintsError(
                f"{pre}group caps make the budget unreachable: the most that can be invested is "
                f"{reach:.10g} < 1 (caps {{{', '.join(f'{g!r}: {c:g}' for g, _, c in groups)}}})"
            )


def build_constraints(
    sleeves: Sequence[str],
    min_weight: float | Mapping[str, float],
    max_weight: float | Mapping[str, float],
    groups: Mapping[str, str] | None,
    group_caps: Mapping[str, float] | None,
    max_turnover: float | None,
    turnover_penalty: float,
) -> ConstraintSet:
    """Resolve and validate the user's constraints; raise before any solver runs."""
    sleeves = tuple(sleeves)
    lb = _per_sleeve(min_weight, sleeves, 0.0, "min_weight")
    ub = _per_sleeve(max_weight, sleeves, 1.0, "max_weight")
    neg = [s for s, v in zip(sleeves, lb, strict=True) if v < 0]
    if neg:
        raise OptimizerConfigError(
            f"min_weight must be >= 0 (long-only); negative for sleeves {neg}"
        )
    if groups is None and group_caps:
        raise OptimizerConfigError("group_caps given without groups (a sleeve -> group mapping)")
    group_names: list[str] = []
    group_of = np.full(len(sleeves), -1, dtype=int)
    caps: list[float] = []
    if groups:
        unknown = sorted(set(groups) - set(sleeves))
        if unknown:
            raise OptimizerConfigError(f"groups names unknown sleeves {unknown}; sleeves are {list(sleeves)}")
        group_names = sorted(set(groups.values()))
        pos = {g: i for i, g in enumerate(group_names)}
        for i, s in enumerate(sleeves):
            if s in groups:
                group_of[i] = pos[groups[s]]
        group_caps = dict(group_caps or {})
        unknown_g = sorted(set(group_caps) - set(group_names))
        if unknown_g:
            raise OptimizerConfigError(f"group_caps names unknown groups {unknown_g}; groups are {group_names}")
        for g in group_names:
            c = float(group_caps.get(g, np.inf))
            if np.isnan(c) or c < 0:
                raise OptimizerConfigError(f"group cap for {g!r} must be >= 0, got {c}")
            caps.append(c)
    if max_turnover is not None:
        max_turnover = float(max_turnover)
        if not np.isfinite(max_turnover) or max_turnover < 0:
            raise OptimizerConfigError(f"max_turnover must be a finite number >= 0, got {max_turnover}")
    turnover_penalty = float(turnover_penalty)
    if not np.isfinite(turnover_penalty) or turnover_penalty < 0:
        raise OptimizerConfigError(f"turnover_penalty must be a finite number >= 0, got {turnover_penalty}")
    cs = ConstraintSet(
        sleeves=sleeves,
        lb=lb,
        ub=ub,
        group_of=group_of,
        group_names=tuple(group_names),
        group_caps=np.array(caps, dtype=float),
        max_turnover=max_turnover,
        turnover_penalty=turnover_penalty,
    )
    full = cs.subset(np.ones(len(sleeves), dtype=bool))
    full.check_feasible("")
    return cs


def min_restoring_trade(cons: ActiveConstraints, held: np.ndarray, asset_trade: AssetTrade | None = None) -> float:
    """Smallest two-sided trade ``min ||w - held||_1`` that brings ``held`` into the feasible set.

    0 when the (drifted) holdings already satisfy the budget, bounds and group caps; otherwise a
    small LP (Clarabel). Used to tell "the turnover cap binds" from "the cap cannot be met at all
    because the holdings drifted outside the constraints". With ``asset_trade`` the trade is
    measured in asset space (``AssetTrade.measure``), ``held`` being the active sleeves' drifted
    weights (holding them costs ``asset_trade.measure(held)``: 0 unless an inactive sleeve is held).
    """
    h = np.asarray(held, dtype=float)
    if not cons.violations(h, None, None, tol=FEAS_TOL) and (
            asset_trade is None or asset_trade.measure(h) <= FEAS_TOL):
        return 0.0
    import cvxpy as cp

    w = cp.Variable(cons.k, nonneg=True)
    constraints = [cp.sum(w) == 1, w >= cons.lb, w <= cons.ub]
    constraints += [cp.sum(w[members]) <= cap for _g, members, cap in cons.groups]
    trade = cp.sum(cp.abs(w - h)) if asset_trade is None else \
        cp.sum(cp.abs(asset_trade.H.T @ w - asset_trade.anchor))
    problem = cp.Problem(cp.Minimize(trade), constraints)
    problem.solve(solver="CLARABEL")
    if problem.status != cp.OPTIMAL or problem.value is None:  # pragma: no cover - feasibility checked upstream
        raise InfeasibleConstraintsError(f"no weights satisfy the constraints on {list(cons.names)} ({problem.status})")
    return float(problem.value)


def project_box(target: np.ndarray, lb: np.ndarray, ub: np.ndarray) -> np.ndarray:
    """Exact Euclidean projection onto {lb <= w <= ub, sum(w) = 1} (water-filling).

    ``w_i = clip(target_i - nu, lb_i, ub_i)`` with ``nu`` the root of the monotone piecewise-
    linear ``sum(w(nu)) - 1``; the root is located exactly on its linear piece.
    """
    t = np.asarray(target, dtype=float)
    # breakpoints of sum(clip(t - nu, lb, ub)) as a function of nu
    bps = np.unique(np.concatenate([t - lb, t - ub]))

    def total(nu: float) -> float:
        return float(np.clip(t - nu, lb, ub).sum())

    vals = np.array([total(b) for b in bps])  # decreasing in nu
    # find consecutive breakpoints with vals[j] >= 1 >= vals[j+1]
    j = np.searchsorted(-vals, -1.0, side="right") - 1
    j = int(np.clip(j, 0, len(bps) - 2)) if len(bps) > 1 else 0
    if len(bps) == 1:
        nu = bps[0]
    else:
        a, b = bps[j], bps[j + 1]
        fa, fb = vals[j], vals[j + 1]
        nu = a if fa == fb else a + (fa - 1.0) * (b - a) / (fa - fb)
    w = np.clip(t - nu, lb, ub)
    # final exact budget fix on the free coordinates
    free = (w > lb) & (w < ub)
    if free.any():
        w[free] += (1.0 - w.sum()) / free.sum()
    return w
