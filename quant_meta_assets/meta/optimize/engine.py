"""Walk-forward meta-optimizer: estimation windows, method dispatch, fallback chain, validation.

Walk-forward contract (ARCHITECTURE.md): rebalance rows are ``lookback-1, lookback-1+every, ...``
(0-based positions in ``returns.index``); the weights dated ``d`` are estimated from the
``lookback`` rows ending at ``d`` inclusive and apply from the next row (the caller applies them).

Per-rebalance policies (recorded in the ``notes`` diagnostic):

* **NaN window**: a sleeve with any NaN in the window is *inactive*: weight exactly 0, its bounds
  are dropped, the remaining (active) sleeves carry the budget. Bounds/group caps are re-checked on
  the active set; if they are then infeasible, InfeasibleConstraintsError names the date and the
  inactive sleeves (no fallback can help: every fallback must honour the same bounds).
* **Zero variance**: a sleeve whose window variance is 0 (or below 1e-14 x the largest variance)
  carries no risk information; it is treated like a NaN sleeve (inactive, weight 0).
* **Non-PSD / singular covariance**: the covariance is scaled to unit mean variance
  (``s = trace/k``) and its eigenvalues are clipped at ``1e-10`` (relative to that mean);
  ``psd_repaired`` is True when anything was clipped (negative eigenvalues from an estimator, or
  a singular matrix, e.g. more sleeves than rows). ``condition_number`` is cond(Sigma) *before*
  repair (``inf`` when singular). With ``sample`` / ``ledoit_wolf`` and at least as many active
  sleeves as rows, the sample part has rank <= rows - 1 by construction: its nonzero spectrum
  (and the repair) come from the rows x rows Gram matrix, not a sleeves x sleeves decomposition.
* **Singular / near-singular covariance** (repaired, or ``condition_number > COND_WARN``): the
  weights are still the optimum of the (repaired) problem, but that optimum exploits directions
  the window cannot estimate (e.g. 40 sleeves, 30 rows: in-sample variance 0.1x equal weight,
  out-of-sample 2.3x). Such a rebalance never reports a bare "optimal": its ``status`` gets the
  suffix ``_singular_cov`` (``optimal_singular_cov``, ``projected_singular_cov``...) and the
  ``warning`` diagnostic says why and what to do (a shrinkage estimator).
* **Default estimator** (``covariance="auto"``): sample covariance while sleeves <= lookback / 4,
  Ledoit-Wolf above (``resolve_covariance``); the ``covariance`` diagnostic is the estimator
  used, ``covariance_rule`` the rule that chose it and ``shrinkage`` its intensity per rebalance
  (0 for unshrunk estimators).
* **Warm starts**: the exact fast paths (NNLS active set, risk-parity Newton) start from the
  previous rebalance's optimum on the same active set; the optimum is unique and the stopping
  tests are unchanged, so only rounding (~1e-15) depends on the path.
* **Scaling**: solvers see Sigma/s and mu/s (or (mu - rf)/max|mu - rf|); weights are invariant.
* **risk_free_rate** is annual (``None`` = the project's) and converted to daily geometrically,
  ``(1 + rf)^(1/252) - 1``, by ``rates.daily_rate``: the same rf and conversion as the metrics
  and the sleeves' cash.
* **turnover** is two-sided, ``sum |w - w_held|``, where ``w_held`` is the previous rebalance's
  target *drifted* with the sleeve returns up to and including the decision date (the holdings
  known at the close of ``d``; ``meta.drift.drift_weights``), not the previous target. It is what
  ``max_turnover`` caps, what ``turnover_penalty`` charges and what the ``turnover`` diagnostic
  records (first rebalance: bought from cash, turnover 1, unconstrained, no penalty). When the
  drifted holdings break the bounds / group caps (or hold a now-inactive sleeve) by more than
  ``max_turnover`` can repair, the cap is relaxed to the least trade that restores them
  (``min_restoring_trade``) and ``notes`` says so. A held
  sleeve (weight != 0) with a NaN return between two rebalances is a missing input:
  ``StageInputError`` naming the sleeve and the date, except after the sleeve's last live day:
  a sleeve that stops is cash earning ``rf_d`` from then on (``meta.drift``), so it is held as
  cash until the next rebalance, where it is inactive (NaN in its window) and sold out.
* **Sleeves come and go**: the returns frame is the outer join of the sleeves' live spans
  (``meta.returns``). A sleeve is active only when every row of the window is live (it has a full
  ``lookback`` of its own history): before that, and from the first rebalance after its last live
  day, it is at exactly 0 with the note ``inactive (NaN in window)``. The book starts at the first
  rebalance whose active sleeves can be allocated under the bounds (e.g. ``max_weight: 0.6`` needs
  two): the rebalances before it are not emitted, and the first one's ``notes`` say how many and
  why. After the start, a window in which no sleeve is live for all its rows is an
  ``OptimizationError`` and an active set that cannot meet the bounds an ``InfeasibleConstraintsError``. ``turnover_penalty`` is in annualised objective
  units (``252 w'Sigma w + p * turnover`` for min_variance, ``252 (mu'w - lambda/2 w'Sigma w) -
  p * turnover`` for mean_variance) and is only defined for those two methods.

With ``turnover_space="asset"`` the same cap and penalty apply to the meta trade in ASSET space,
``sum_i |sum_s (w_s - w_held,s) H_s,i|`` with ``H_s`` sleeve s's holdings drifted to the decision
date (``constraints.AssetTrade``): reallocating between sleeves that hold the same assets is free,
what the netted book (``meta.costs``) actually pays for. The ``notes`` record the asset-space trade.

The ``previous_weights`` fallback *holds* the drifted weights (zero trade); it is invalid when
they hold a now-inactive sleeve.

Closed-form methods (equal_weight, inverse_vol, hrp) that violate a constraint are replaced by
the Euclidean projection of their weights onto the feasible set (exact water-filling when only
bounds bind, a Clarabel QP with groups/turnover); status ``projected``.

``objective`` diagnostic (at the returned weights, for the method that produced them):
min_variance: annualised variance (+ penalty); mean_variance: annualised utility (- penalty);
max_sharpe: annualised Sharpe ratio; max_diversification: diversification ratio;
risk_parity: max_i |RC_i - b_i|; equal_weight / inverse_vol / hrp / previous_weights:
annualised variance.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from quant_meta_assets import rates
from quant_meta_assets.meta.drift import cash_after_stop, drift_weights
from quant_meta_assets.meta.optimize.constraints import (
    ActiveConstraints,
    AssetTrade,
    ConstraintSet,
    build_constraints,
    check_bounds_feasible,
    min_restoring_trade,
    project_box,
    trade_size,
)
from quant_meta_assets.meta.optimize.errors import (
    InfeasibleConstraintsError,
    InsufficientHistoryError,
    OptimizationError,
    OptimizerConfigError,
)
from quant_meta_assets.meta.optimize.estimators import (
    COVARIANCES,
    EXPECTED_RETURNS,
    centered_cross_product,
    estimate_covariance,
    estimate_expected_returns,
    ewma_weights,
    ledoit_wolf_from_cross_product,
    oas_fit,
)
from quant_meta_assets.meta.optimize.hrp import hrp_weights
from quant_meta_assets.meta.optimize.methods import (
    CvxProblem,
    SolveOutcome,
    chol_lower,
    nnls_direction,
    nnls_warm,
    risk_parity_newton,
)

PERIODS_PER_YEAR = rates.PERIODS_PER_YEAR
METHODS = (
    "equal_weight",
    "inverse_vol",
    "min_variance",
    "risk_parity",
    "max_sharpe",
    "mean_variance",
    "max_diversification",
    "hrp",
)
FALLBACKS = ("previous_weights", *METHODS)
PENALTY_METHODS = ("min_variance", "mean_variance")
TURNOVER_SPACES = ("sleeve", "asset")
EIG_FLOOR = 1e-10
COND_WARN = 1e6  # cond(Sigma) above this is "near-singular" (bundled data: 26-370 at lookback 252)
SINGULAR_SUFFIX = "_singular_cov"
SUCCESS_STATUSES = ("optimal", "closed_form", "projected", "previous_weights")
ZERO_VAR_REL = 1e-14
FAST_TOL = 1e-12
AUTO_SHRINK_RATIO = 4.0  # covariance="auto": Ledoit-Wolf once sleeves > lookback / 4
# estimators the engine computes from one centred cross product Xc'Xc per window
CROSS_PRODUCT_ESTIMATORS = ("sample", "ledoit_wolf")

DIAGNOSTIC_COLUMNS = [
    "method",
    "solver",
    "status",
    "solve_time_s",
    "objective",
    "condition_number",
    "psd_repaired",
    "covariance_rule",
    "shrinkage",
    "fallback_used",
    "fallback_reason",
    "attempts",
    "n_active_sleeves",
    "weights_from",
    "turnover",
    "warning",
    "covariance",
    "halflife",
    "lookback",
    "notes",
]


@dataclass
class OptimizationResult:
    """Plain, picklable result: rebalance-date x sleeve weights and one diagnostics row per date."""

    weights: pd.DataFrame
    diagnostics: pd.DataFrame
    # what a later call needs to resume the walk after the last rebalance (JSON-able; see
    # ``resume_state``): the last target and its row, and the warm starts of the fast paths
    state: dict | None = None


def _mask_hex(mask: bytes) -> str:
    return mask.hex()


def resume_state(eng: "_Engine", last_target: np.ndarray | None, last_row: int, n_rows: int) -> dict:
    """The walk's state after its last rebalance, JSON-able (floats round-trip exactly through
    JSON): the last target and row, the exact fast paths' warm starts and the power iteration's
    top eigenvectors, each keyed by its active set. Resuming from it makes the next rebalances
    follow the same path as one uninterrupted walk."""
    return {
        "version": 1,
        "n_rows": int(n_rows),
        "last_row": int(last_row),
        "last_target": None if last_target is None else [float(x) for x in last_target],
        "warm": [[method, _mask_hex(mask), [float(x) for x in vec]] for (method, mask), vec in eng.warm.items()],
        "top_vector": [[_mask_hex(mask), [float(x) for x in vec]] for mask, vec in eng.top_vector.items()],
    }


def _restore_state(eng: "_Engine", state: Mapping) -> None:
    eng.warm = {(str(method), bytes.fromhex(mask)): np.asarray(vec, dtype=float) for method, mask, vec in state["warm"]}
    eng.top_vector = {bytes.fromhex(mask): np.asarray(vec, dtype=float) for mask, vec in state["top_vector"]}


@dataclass
class _Window:
    active: np.ndarray  # bool over all sleeves
    X: np.ndarray  # window of the active sleeves
    cov: np.ndarray  # daily covariance (repaired, unscaled)
    scale: float
    sigma: np.ndarray  # scaled covariance (mean variance 1), repaired
    cond: float
    repaired: bool
    notes: list[str]
    mu: np.ndarray | None = None
    shrinkage: float = 0.0  # intensity of the shrinkage towards mu*I (ledoit_wolf / oas), else 0
    _chol: np.ndarray | None | bool = False  # False: not computed yet

    @property
    def chol(self) -> np.ndarray | None:
        """Lower Cholesky factor of ``sigma``, computed on first use (the warm-started paths
        never need the full ``k x k`` factor)."""
        if self._chol is False:
            self._chol = chol_lower(self.sigma) if self.sigma.size else None
        return self._chol  # type: ignore[return-value]


def _eigvalsh(A: np.ndarray) -> np.ndarray:
    """Ascending eigenvalues of the symmetric ``A``.

    Small matrices call LAPACK dsyevd directly (numpy's wrapper costs ~3 us of a 20 x 20 solve);
    from 64 sleeves on numpy's eigvalsh is faster (measured 6 ms vs 12 ms at 500).
    """
    if A.shape[0] >= 64:
        return np.linalg.eigvalsh(A)
    evals, _, info = lapack.dsyevd(A, compute_v=0, lower=1)
    return evals if info == 0 else np.linalg.eigvalsh(A)


class _Attempt(Exception):
    """An attempt failed; carries the status and the reason."""

    def __init__(self, status: str, detail: str, solver: str = "", dt: float = 0.0) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.solver = solver
        self.dt = dt


def _validate_returns(returns: pd.DataFrame) -> np.ndarray:
    if not isinstance(returns, pd.DataFrame):
        raise OptimizerConfigError(f"returns must be a pandas DataFrame, got {type(returns).__name__}")
    if returns.shape[1] == 0:
        raise OptimizerConfigError("returns has no sleeve columns")
    if not returns.columns.is_unique:
        dup = sorted(map(str, returns.columns[returns.columns.duplicated()]))
        raise OptimizerConfigError(f"returns has duplicate sleeve columns {dup}")
    if not returns.index.is_unique or not returns.index.is_monotonic_increasing:
        raise OptimizerConfigError("returns index must be sorted ascending and unique")
    try:
        R = returns.to_numpy(dtype=float, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise OptimizerConfigError(f"returns must be numeric: {exc}") from exc
    bad = np.isinf(R)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise OptimizerConfigError(
            f"returns has an infinite value for sleeve {returns.columns[c]!r} on {returns.index[r]}"
        )
    return R


class _Engine:
    def __init__(self, *, sleeves, cs: ConstraintSet, covariance, halflife, expected_returns,
                 risk_aversion, risk_budget, risk_free_rate, solver, lookback):
        self.sleeves = sleeves
        self.cs = cs
        self.covariance = covariance
        self.halflife = halflife
        self.expected_returns = expected_returns
        self.risk_aversion = risk_aversion
        self.risk_budget = risk_budget
        self.rf_daily = rates.daily_rate(risk_free_rate)
        self.solver = solver
        self.problems: dict[tuple, CvxProblem] = {}
        # (method, active-set mask) -> the last exact fast-path optimum: warm start of the next rebalance
        self.warm: dict[tuple, np.ndarray] = {}
        self.top_vector: dict[bytes, np.ndarray] = {}  # active-set mask -> last top eigenvector of Xc'Xc
        self.ew = (
            ewma_weights(lookback, halflife)
            if "ewma" in (covariance, expected_returns)
            else None
        )

    # ------------------------------------------------------------ estimation
    def window(self, Xfull: np.ndarray, active: np.ndarray | None = None) -> _Window:
        """Estimate one window; ``active`` (no NaN in the window) may be precomputed by the caller."""
        notes: list[str] = []
        if active is None:
            active = ~np.isnan(Xfull).any(axis=0)
        all_active = bool(active.all())
        if not all_active:
            notes.append("inactive (NaN in window): " + ", ".join(self.sleeves[i] for i in np.flatnonzero(~active)))
        X = Xfull if all_active else Xfull[:, active]
        n = X.shape[0]
        Xc = S = None  # centred window and its cross product (sample / ledoit_wolf)
        if X.shape[1]:
            if self.covariance in CROSS_PRODUCT_ESTIMATORS:
                Xc, S = centered_cross_product(X)
                var = np.diag(S) / (n - 1)
            else:
                var = X.var(axis=0, ddof=1)
            vmax = float(var.max())
            zero = (var <= ZERO_VAR_REL * vmax) | (var <= 0)
            if zero.any():
                idx = np.flatnonzero(active)[zero]
                notes.append("inactive (zero variance): " + ", ".join(self.sleeves[i] for i in idx))
                active = active.copy()
                active[idx] = False
                X = X[:, ~zero]
                if S is not None:
                    Xc, S = Xc[:, ~zero], S[np.ix_(~zero, ~zero)]
        k = X.shape[1]
        if k == 0:
            return _Window(active, X, np.zeros((0, 0)), 1.0, np.zeros((0, 0)), math.nan, False, notes)
        shrinkage = 0.0
        if self.covariance == "sample":
            cov = S * (1.0 / (n - 1))
        elif self.covariance == "ledoit_wolf":
            cov, shrinkage = ledoit_wolf_from_cross_product(Xc, S)
        elif self.covariance == "oas":
            cov, shrinkage = oas_fit(X)
        else:
            cov = estimate_covariance(X, self.covariance, self.halflife, self.ew)
        scale = float(np.trace(cov)) / k
        sigma = cov / scale
        repaired = False
        gram = None
        if S is not None and k >= n:
            # rank(Xc) <= n - 1 < k: the sample part is singular by construction. Its nonzero
            # spectrum is the n x n Gram matrix's (Xc Xc'), much cheaper than a k x k eigen-
            # decomposition when sleeves outnumber the window's rows; Ledoit-Wolf shifts it by d*mu.
            # Only Ledoit-Wolf needs the top eigenvalue (for cond); the sample case is cond = inf.
            a = (1.0 / (n - 1) if self.covariance == "sample" else (1.0 - shrinkage) / n) / scale
            floor = 0.0 if self.covariance == "sample" else shrinkage * float(np.trace(S)) / (n * k) / scale
            lmin = floor
            if floor < EIG_FLOOR:
                gram = Xc @ Xc.T  # for the repair below
                lmax = math.inf
            else:
                lmax = a * self.top_eigenvalue(S, Xc, active) + floor
        else:
            evals = _eigvalsh(sigma)  # one eigen-decomposition: PSD check and cond(Sigma)
            lmin, lmax = float(evals[0]), float(evals[-1])
        cond = lmax / lmin if lmin > 0 else math.inf
        if lmin < EIG_FLOOR:
            if gram is not None and self.covariance == "sample":
                # clip on the Gram eigenvectors: V = Xc' U / sqrt(lambda) spans the range of S
                lam, U = np.linalg.eigh(gram)
                lam_s = lam * a
                keep = lam_s >= EIG_FLOOR
                V = Xc.T @ (U[:, keep] / np.sqrt(lam[keep]))
                sigma = (V * (lam_s[keep] - EIG_FLOOR)) @ V.T
                sigma = (sigma + sigma.T) * 0.5
                sigma.flat[:: k + 1] += EIG_FLOOR
                n_clipped, kind = k - int(keep.sum()), "near-zero"
            else:
                lam, V = np.linalg.eigh(sigma)
                lam_c = np.maximum(lam, EIG_FLOOR)
                sigma = (V * lam_c) @ V.T
                sigma = (sigma + sigma.T) * 0.5
                n_clipped = int((lam < EIG_FLOOR).sum())
                kind = "negative" if lmin < -1e-12 else "near-zero"
            repaired = True
            notes.append(f"covariance repaired: {n_clipped} {kind} eigenvalue(s) clipped to {EIG_FLOOR:g} x mean variance")
        return _Window(active, X, sigma * scale, scale, sigma, cond, repaired, notes, shrinkage=shrinkage)

    def top_eigenvalue(self, S: np.ndarray, Xc: np.ndarray, active: np.ndarray) -> float:
        """Largest eigenvalue of the PSD ``S = Xc'Xc``: power iteration warm-started from the previous
        rebalance's top eigenvector (a few k x k products instead of an n x n eigen-decomposition).

        Stops when the residual ``||S v - rho v|| <= 1e-9 rho``; the Rayleigh quotient is then within
        ``(1e-9 rho)^2 / gap`` of the eigenvalue. Falls back to the Gram matrix's exact spectrum.
        """
        key = active.tobytes()
        prev = self.top_vector.get(key)
        v = prev if prev is not None else np.full(S.shape[0], 1.0)
        v = v / np.linalg.norm(v)
        for _ in range(300):
            w = S @ v
            rho = float(v @ w)
            norm_w = float(np.linalg.norm(w))
            if rho <= 0 or norm_w == 0:
                break
            if float(np.linalg.norm(w - rho * v)) <= 1e-9 * rho:
                self.top_vector[key] = w / norm_w
                return rho
            v = w / norm_w
        return float(_eigvalsh(Xc @ Xc.T)[-1])

    def mu(self, win: _Window) -> np.ndarray:
        if win.mu is None:
            win.mu = estimate_expected_returns(win.X, self.expected_returns, self.halflife, self.ew)
        return win.mu

    def factor(self, win: _Window) -> np.ndarray:
        chol = win.chol
        if chol is not None:
            return chol
        lam, V = np.linalg.eigh(win.sigma)
        return V * np.sqrt(np.maximum(lam, 0.0))

    def budget(self, win: _Window) -> np.ndarray:
        if self.risk_budget is None:
            k = int(win.active.sum())
            return np.full(k, 1.0 / k)
        b = self.risk_budget[win.active]
        return b / b.sum()

    # ------------------------------------------------------------ solving
    def cvx(self, method, cons, win, vec, w_prev, t_budget, penalty) -> SolveOutcome:
        use_t = t_budget is not None
        use_p = penalty > 0 and w_prev is not None and method in PENALTY_METHODS
        asset_dim = w_prev.anchor.shape[0] if isinstance(w_prev, AssetTrade) and (use_t or use_p) else None
        key = (method, cons.key(), use_t, use_p, asset_dim)
        prob = self.problems.get(key)
        if prob is None:
            prob = CvxProblem(method, cons, use_t, use_p, self.risk_aversion,
                              self.budget(win) if method == "risk_parity" else None, asset_dim)
            self.problems[key] = prob
        return prob.solve(self.factor(win), vec, w_prev, t_budget, penalty if use_p else 0.0, self.solver)

    def project(self, target, cons, win, w_prev, t_budget, solver_label) -> tuple[np.ndarray, str, str]:
        if not cons.violations(target, w_prev, t_budget, tol=FAST_TOL):
            return target, "closed_form", solver_label
        if cons.box_only and t_budget is None:
            return project_box(target, cons.lb, cons.ub), "projected", f"{solver_label}+waterfill"
        out = self.cvx("projection", cons, win, target, w_prev, t_budget, 0.0)
        if out.weights is None:
            raise _Attempt(out.status, f"projection onto the constraints failed: {out.detail}", out.solver, out.solve_time_s)
        return out.weights, "projected", f"{solver_label}+{out.solver}"

    def run_method(self, method, cons, win, w_prev, t_budget, penalty) -> tuple[np.ndarray, str, str]:
        """Return (weights over active sleeves, status, solver label) or raise _Attempt."""
        k = cons.k
        sigma = win.sigma
        if method == "equal_weight":
            return self.project(np.full(k, 1.0 / k), cons, win, w_prev, t_budget, "closed_form")
        if method == "inverse_vol":
            iv = 1.0 / np.sqrt(np.diag(win.cov))
            return self.project(iv / iv.sum(), cons, win, w_prev, t_budget, "closed_form")
        if method == "hrp":
            w = hrp_weights(win.cov, cons.lb, cons.ub)
            return self.project(w, cons, win, w_prev, t_budget, "hrp")
        use_pen = penalty > 0 and w_prev is not None and method in PENALTY_METHODS
        vec = None
        fast: np.ndarray | None = None
        fast_label = ""
        warm_key = (method, win.active.tobytes())
        warm = self.warm.get(warm_key)
        if method == "min_variance":
            if not use_pen:
                x = None if warm is None else nnls_warm(sigma, np.ones(k), warm > 0)
                if x is None:
                    x = nnls_direction(sigma, np.ones(k), win.chol)
                if x is not None and x.sum() > 0:
                    fast, fast_label = x / x.sum(), "nnls-active-set"
        elif method in ("max_sharpe", "max_diversification"):
            if method == "max_sharpe":
                a = self.mu(win) - self.rf_daily
                if not np.any(a > 0):
                    raise _Attempt(
                        "infeasible",
                        f"no sleeve has expected return above the risk-free rate "
                        f"(max daily mu - rf = {float(a.max()):.3g})",
                        "precheck",
                    )
                vec = a / float(np.abs(a).max())
            else:
                vec = np.sqrt(np.diag(sigma))
            x = nnls_direction(sigma, vec, win.chol)
            if x is not None and x.sum() > 0:
                fast, fast_label = x / x.sum(), "nnls-active-set"
        elif method == "mean_variance":
            vec = self.mu(win) / win.scale
        elif method == "risk_parity":
            w = risk_parity_newton(sigma, self.budget(win), start=warm)
            if w is None and warm is not None:
                w = risk_parity_newton(sigma, self.budget(win))
            if w is not None:
                fast, fast_label = w, "newton"
        else:  # pragma: no cover
            raise OptimizerConfigError(f"unknown method {method!r}")
        if fast is not None:
            self.warm[warm_key] = fast  # the next rebalance starts from this optimum
        if fast is not None and not cons.violations(fast, w_prev, t_budget, tol=FAST_TOL):
            return fast, "optimal", fast_label
        out = self.cvx(method, cons, win, vec, w_prev, t_budget, penalty)
        if out.weights is None:
            raise _Attempt(out.status, out.detail, out.solver, out.solve_time_s)
        return out.weights, out.status, out.solver

    def objective(self, method, w, win, w_prev, penalty) -> float:
        cov = win.cov
        var = float(w @ cov @ w)
        to = trade_size(w, w_prev) if w_prev is not None else 0.0
        pen = penalty if (w_prev is not None and method in PENALTY_METHODS) else 0.0
        if method == "min_variance":
            return PERIODS_PER_YEAR * var + pen * to
        if method == "mean_variance":
            return PERIODS_PER_YEAR * (float(self.mu(win) @ w) - 0.5 * self.risk_aversion * var) - pen * to
        if method == "max_sharpe":
            return float((self.mu(win) - self.rf_daily) @ w) / math.sqrt(var) * math.sqrt(PERIODS_PER_YEAR)
        if method == "max_diversification":
            return float(np.sqrt(np.diag(cov)) @ w) / math.sqrt(var)
        if method == "risk_parity":
            rc = w * (cov @ w) / var
            return float(np.max(np.abs(rc - self.budget(win))))
        return PERIODS_PER_YEAR * var


def _covariance_warning(win: _Window, lookback: int, covariance: str) -> str | None:
    """Why this window's covariance cannot be trusted (singular or near-singular), or None."""
    k = int(win.active.sum())
    if k == 0 or (not win.repaired and win.cond <= COND_WARN):
        return None
    why = (f"{k} active sleeves but only {lookback} rows (rank <= {lookback - 1})" if k > lookback - 1
           else f"condition number {win.cond:.3g}")
    return (f"singular or near-singular covariance ({covariance}): {why}; eigenvalues "
            f"{'clipped' if win.repaired else 'not clipped'}. The optimum exploits directions this window "
            "cannot estimate and is unreliable out of sample: use covariance='ledoit_wolf' or 'oas', "
            "a longer lookback, or fewer sleeves")


def resolve_covariance(covariance: str, n_sleeves: int, lookback: int) -> tuple[str, str]:
    """``(estimator, rule)``: the estimator ``covariance`` stands for, and the text the diagnostics record.

    ``auto`` (the default) is the sample covariance while ``n_sleeves <= lookback / 4`` and
    Ledoit-Wolf shrinkage above. The sample covariance of ``k`` sleeves over ``T`` rows is
    singular once ``k >= T`` and badly conditioned well before: for ``k / T = q`` its smallest
    eigenvalue is biased down to about ``(1 - sqrt(q))^2`` of the truth (Marchenko-Pastur), a
    quarter at ``q = 1/4``. Ledoit-Wolf's smallest eigenvalue is at least ``shrinkage x`` the
    mean variance, so the default problem stays well posed at any sleeve count.
    """
    if covariance != "auto":
        return covariance, covariance
    limit = lookback / AUTO_SHRINK_RATIO
    if n_sleeves > limit:
        return "ledoit_wolf", f"auto: ledoit_wolf ({n_sleeves} sleeves > lookback {lookback} / {AUTO_SHRINK_RATIO:g})"
    return "sample", f"auto: sample ({n_sleeves} sleeves <= lookback {lookback} / {AUTO_SHRINK_RATIO:g})"


@functools.cache
def _installed_solvers() -> tuple[str, ...]:
    """cvxpy's installed solvers, asked once per process (the query costs ~1 ms)."""
    import cvxpy as cp

    return tuple(cp.installed_solvers())


def _holdings(provider, date, sleeves) -> np.ndarray:
    """The sleeves' asset holdings at ``date`` (sleeves x assets), checked."""
    H = np.asarray(provider(date, list(sleeves)), dtype=float)
    if H.ndim != 2 or H.shape[0] != len(sleeves):
        raise OptimizerConfigError(
            f"sleeve_holdings({date}) must return one row per sleeve ({len(sleeves)}), got shape {H.shape}")
    if not np.isfinite(H).all():
        raise OptimizerConfigError(f"sleeve_holdings({date}) returned non-finite holdings")
    return H


def _resolve_budget(risk_budget, sleeves) -> np.ndarray | None:
    if risk_budget is None:
        return None
    unknown = sorted(set(risk_budget) - set(sleeves))
    if unknown:
        raise OptimizerConfigError(f"risk_budget names unknown sleeves {unknown}; sleeves are {list(sleeves)}")
    missing = [s for s in sleeves if s not in risk_budget]
    if missing:
        raise OptimizerConfigError(f"risk_budget has no budget for sleeves {missing}")
    b = np.array([float(risk_budget[s]) for s in sleeves])
    bad = [s for s, v in zip(sleeves, b, strict=True) if not (np.isfinite(v) and v > 0)]
    if bad:
        raise OptimizerConfigError(f"risk_budget must be finite and > 0; not for sleeves {bad}")
    return b / b.sum()


# One BLAS thread for the walk: its matrices are at most sleeves x sleeves, where a second
# OpenBLAS thread gains little even on an idle 2-core machine, and costs 5-10x when the cores are
# shared (busy-waiting threads; measured: a 500 x 500 Cholesky 1.9 ms on one thread vs 22 ms on two
# with the other core busy). Restored on return.
@threadpool_limits.wrap(limits=1, user_api="blas")
def optimize_meta_weights(
    returns: pd.DataFrame,
    method: str = "risk_parity",
    lookback: int = 252,
    rebalance_every: int = 21,
    min_weight: float | Mapping[str, float] = 0.0,
    max_weight: float | Mapping[str, float] = 1.0,
    covariance: str = "auto",
    halflife: float | None = None,
    expected_returns: str = "historical",
    risk_aversion: float = 1.0,
    risk_budget: Mapping[str, float] | None = None,
    groups: Mapping[str, str] | None = None,
    group_caps: Mapping[str, float] | None = None,
    max_turnover: float | None = None,
    turnover_penalty: float = 0.0,
    risk_free_rate: float | None = None,
    fallback: Sequence[str] = ("previous_weights", "equal_weight"),
    solver: str = "CLARABEL",
    turnover_space: str = "sleeve",
    sleeve_holdings: Callable[[pd.Timestamp, Sequence[str]], np.ndarray] | None = None,
    resume: OptimizationResult | None = None,
) -> OptimizationResult:
    """Walk-forward meta-weights; see the module docstring for the contract and policies.

    ``turnover_space="asset"`` makes ``max_turnover`` and ``turnover_penalty`` measure the meta
    trade in asset space, ``sum_i |sum_s (w_s - w_held,s) H_s,i|`` (``AssetTrade``), where
    ``sleeve_holdings(date, sleeves)`` returns each sleeve's asset holdings drifted to the decision
    date (sleeves x assets; ``meta.costs.DriftedSleeveHoldings``).

    ``resume``: the result of the same call (same parameters, same code) on a prefix of
    ``returns`` (``meta.incremental`` checks that); its rebalances are kept as they are and the
    walk continues from its ``state``: only the rebalances after its last one are solved, warm-started
    exactly as one uninterrupted walk would be. The result covers every rebalance.
    """
    if method not in METHODS:
        raise OptimizerConfigError(f"unknown method {method!r}; known: {list(METHODS)}")
    if isinstance(fallback, str):
        fallback = (fallback,)
    unknown_fb = [f for f in fallback if f not in FALLBACKS]
    if unknown_fb:
        raise OptimizerConfigError(f"unknown fallback entries {unknown_fb}; known: {list(FALLBACKS)}")
    if covariance not in COVARIANCES:
        raise OptimizerConfigError(f"unknown covariance estimator {covariance!r}; known: {list(COVARIANCES)}")
    if expected_returns not in EXPECTED_RETURNS:
        raise OptimizerConfigError(
            f"unknown expected_returns {expected_returns!r}; known: {list(EXPECTED_RETURNS)}"
        )
    if "ewma" in (covariance, expected_returns) and (halflife is None or not halflife > 0):
        raise OptimizerConfigError(f"covariance/expected_returns 'ewma' needs halflife > 0, got {halflife!r}")
    if not (isinstance(lookback, int | np.integer) and lookback >= 2):
        raise OptimizerConfigError(f"lookback must be an integer >= 2, got {lookback!r}")
    if not (isinstance(rebalance_every, int | np.integer) and rebalance_every >= 1):
        raise OptimizerConfigError(f"rebalance_every must be an integer >= 1, got {rebalance_every!r}")
    if not (np.isfinite(risk_aversion) and risk_aversion > 0):
        raise OptimizerConfigError(f"risk_aversion must be > 0, got {risk_aversion!r}")
    try:
        risk_free_rate = rates.resolve(risk_free_rate)
    except ValueError as exc:
        raise OptimizerConfigError(str(exc)) from None
    if turnover_penalty and method not in PENALTY_METHODS:
        raise OptimizerConfigError(
            f"turnover_penalty={turnover_penalty} is only defined for {list(PENALTY_METHODS)}, not {method!r}"
        )
    if risk_budget is not None and "risk_parity" not in (method, *fallback):
        raise OptimizerConfigError(f"risk_budget is only used by risk_parity, not {method!r}")
    if turnover_space not in TURNOVER_SPACES:
        raise OptimizerConfigError(f"unknown turnover_space {turnover_space!r}; known: {list(TURNOVER_SPACES)}")
    asset_space = turnover_space == "asset" and (max_turnover is not None or bool(turnover_penalty))
    if asset_space and sleeve_holdings is None:
        raise OptimizerConfigError(
            "turnover_space='asset' needs sleeve_holdings (each sleeve's asset holdings at the decision "
            "date); the SDK and the Dagster asset build them from the sleeves' weights and the prices"
        )
    installed = _installed_solvers()
    if solver.upper() not in installed:
        raise OptimizerConfigError(f"solver {solver!r} is not installed; installed: {list(installed)}")
    R = _validate_returns(returns)
    sleeves = tuple(str(c) for c in returns.columns)
    n_rows = R.shape[0]
    if lookback > n_rows:
        raise InsufficientHistoryError(
            f"lookback={lookback} rows needed but returns has only {n_rows} rows: no rebalance date"
        )
    resolved_cov, cov_rule = resolve_covariance(covariance, len(sleeves), lookback)
    cs = build_constraints(sleeves, min_weight, max_weight, groups, group_caps, max_turnover, turnover_penalty)
    budget = _resolve_budget(risk_budget, sleeves)
    eng = _Engine(
        sleeves=sleeves, cs=cs, covariance=resolved_cov, halflife=halflife,
        expected_returns=expected_returns, risk_aversion=float(risk_aversion), risk_budget=budget,
        risk_free_rate=float(risk_free_rate), solver=solver.upper(), lookback=lookback,
    )
    rows = list(range(lookback - 1, n_rows, rebalance_every))
    n = len(sleeves)
    prev: np.ndarray | None = None  # holdings drifted to the decision date (None before the first)
    last_target: np.ndarray | None = None
    last_row = -1
    done = 0  # rebalance-grid rows the ``resume`` result already walked (held or not allocatable)
    if resume is not None:
        done, last_target, last_row = _resume_from(resume, returns, rows)
        _restore_state(eng, resume.state)  # type: ignore[arg-type]
    rows = rows[done:]
    W = np.zeros((len(rows), n))
    # diagnostics are collected column by column and framed once at the end
    cols: dict[str, list] = {c: [] for c in DIAGNOSTIC_COLUMNS}
    chain = (method, *fallback)
    subsets: dict[bytes, ActiveConstraints] = {}
    # NaN bookkeeping once for the whole history: NaNs of column c in rows [a, b) are
    # nan_cum[b, c] - nan_cum[a, c]; without any NaN every sleeve is active in every window
    isnan = np.isnan(R)
    all_active = np.ones(n, dtype=bool)
    nan_cum = None
    if isnan.any():
        nan_cum = np.zeros((n_rows + 1, n), dtype=np.int64)
        np.cumsum(isnan, axis=0, out=nan_cum[1:])
    index = returns.index
    # what the held weights drift with: a sleeve that stopped is cash earning rf_d (meta.drift)
    R_drift = R if nan_cum is None else cash_after_stop(
        pd.DataFrame(R, index=index, columns=sleeves), eng.rf_daily).to_numpy()
    held: list[int] = []  # the rebalances the book holds: from the first one that can be allocated
    not_yet: list[str] = []  # why the rebalances before it could not be
    for j, r in enumerate(rows):
        t_start = time.perf_counter()
        if last_target is not None:
            prev = drift_weights(last_target, R_drift[last_row + 1 : r + 1], sleeves, index[last_row + 1 : r + 1])
        lo = r - lookback + 1
        act = all_active if nan_cum is None else (nan_cum[r + 1] - nan_cum[lo]) == 0
        win = eng.window(R[lo : r + 1], act)
        active = win.active
        if not active.any():
            if last_target is None:  # the book has not started yet: nothing to allocate to
                not_yet.append(f"{index[r].date()}: no active sleeve")
                continue
            raise OptimizationError(
                f"rebalance {index[r]}: no active sleeve (every sleeve has NaN or zero variance in the "
                f"{lookback}-row window); notes: {'; '.join(win.notes)}"
            )
        akey = active.tobytes()
        cons = subsets.get(akey)
        if cons is None:
            cons = subsets[akey] = cs.subset(active)
            if not active.all():  # the feasibility of a subset depends only on the subset
                try:
                    check_bounds_feasible(cons.names, cons.lb, cons.ub, cons.groups)
                except InfeasibleConstraintsError as exc:
                    del subsets[akey]
                    if last_target is None:  # the book starts when its live sleeves can be allocated
                        not_yet.append(f"{index[r].date()}: {exc} ({'; '.join(win.notes)})")
                        continue
                    raise InfeasibleConstraintsError(
                        f"rebalance {index[r]}: with inactive sleeves pinned to 0 ({'; '.join(win.notes)}): {exc}"
                    ) from exc
        full_set = cons.k == n
        w_prev = None if prev is None else (prev if full_set else prev[active])
        trade_ref = w_prev  # what the turnover is measured against: sleeve weights, or an AssetTrade
        if asset_space and prev is not None:
            H = _holdings(sleeve_holdings, index[r], sleeves)
            trade_ref = AssetTrade(H=H[active], anchor=H.T @ prev)
        t_budget = None
        if prev is not None and cs.max_turnover is not None:
            asset_ref = trade_ref if isinstance(trade_ref, AssetTrade) else None
            # in asset space selling an inactive sleeve out is part of the measured trade itself
            forced = 0.0 if (full_set or asset_ref is not None) else float(np.abs(prev[~active]).sum())
            t_budget = cs.max_turnover - forced
            need = min_restoring_trade(cons, w_prev, asset_ref)  # type: ignore[arg-type]
            if need + forced > cs.max_turnover:
                # the drifted holdings sit outside the constraints (or hold a now-inactive sleeve)
                # by more than the cap: trade the least that restores them, and say so
                t_budget = need + max(1e-7, 1e-6 * need)
                win.notes.append(
                    f"max_turnover relaxed to {forced + t_budget:.10f}: the drifted "
                    f"holdings need a trade of {need + forced:.6g} to satisfy the constraints"
                )
        penalty = cs.turnover_penalty / (PERIODS_PER_YEAR * win.scale) if prev is not None else 0.0
        attempts: list[str] = []
        primary_status = None
        chosen = None
        for name in chain:
            t0 = time.perf_counter()
            try:
                if name == "previous_weights":
                    if prev is None:
                        raise _Attempt("unavailable", "no previous weights at the first rebalance")
                    if not full_set and np.any(prev[~active] != 0):
                        raise _Attempt("invalid", "previous weights hold inactive sleeves")
                    # hold the drifted weights: no trade
                    w, status, label = w_prev.copy(), "previous_weights", "held"  # type: ignore[union-attr]
                else:
                    w, status, label = eng.run_method(name, cons, win, trade_ref, t_budget, penalty)
                w, clean_note = cons.clean(w)
                bad = cons.violations(w, trade_ref, t_budget)  # every vector is validated
                if bad:
                    raise _Attempt("invalid", "validation failed: " + "; ".join(bad), label)
            except _Attempt as a:
                if primary_status is None:
                    primary_status = a.status
                solver_txt = f" [{a.solver}]" if a.solver else ""
                attempts.append(f"{name}{solver_txt}: {a.status} ({a.detail})")
                continue
            dt = time.perf_counter() - t0
            if primary_status is None:
                primary_status = status
            attempts.append(f"{name} [{label}]: {status} ({dt:.4f}s)")
            if clean_note:
                win.notes.append(clean_note)
            chosen = (name, w, status, label)
            break
        if chosen is None:
            raise OptimizationError(
                f"rebalance {index[r]}: every attempt of the chain {list(chain)} failed: " + "; ".join(attempts)
            )
        name, w, status, label = chosen
        if full_set:
            full = w
        else:
            full = np.zeros(n)
            full[active] = w
        W[j] = full
        if not held and not_yet:
            win.notes.append(f"the book starts here: {len(not_yet)} earlier rebalance(s) could not be allocated "
                             f"(the first: {not_yet[0]})")
        held.append(j)
        trade = float(np.abs(full).sum()) if prev is None else float(np.abs(full - prev).sum())
        last_target, last_row = full, r
        fb_used = name != method
        warning = _covariance_warning(win, lookback, resolved_cov)
        if warning and primary_status in SUCCESS_STATUSES:
            primary_status += SINGULAR_SUFFIX
        cols["method"].append(method)
        cols["solver"].append(label)
        cols["status"].append(primary_status)
        cols["solve_time_s"].append(time.perf_counter() - t_start)
        cols["objective"].append(eng.objective(name, w, win, trade_ref, cs.turnover_penalty))
        if isinstance(trade_ref, AssetTrade):
            win.notes.append(f"asset-space trade {trade_ref.measure(w):.6g}")
        cols["condition_number"].append(win.cond)
        cols["psd_repaired"].append(bool(win.repaired))
        cols["covariance_rule"].append(cov_rule)
        cols["shrinkage"].append(win.shrinkage)
        cols["fallback_used"].append(fb_used)
        cols["fallback_reason"].append(attempts[0] if fb_used else None)
        cols["attempts"].append("; ".join(attempts))
        cols["n_active_sleeves"].append(cons.k)
        cols["weights_from"].append(name)
        cols["turnover"].append(trade)
        cols["warning"].append(warning)
        cols["covariance"].append(resolved_cov)
        cols["halflife"].append(math.nan if halflife is None else float(halflife))
        cols["lookback"].append(int(lookback))
        cols["notes"].append("; ".join(win.notes) if win.notes else None)
    if not held and resume is None:
        raise InfeasibleConstraintsError(
            f"no rebalance can be allocated: the live sleeves never satisfy the constraints ({len(not_yet)} "
            f"rebalances; the last: {not_yet[-1]})"
        )
    out_index = index[[rows[j] for j in held]]
    weights = pd.DataFrame(W[held], index=out_index, columns=returns.columns)
    diagnostics = pd.DataFrame(cols, index=out_index, columns=DIAGNOSTIC_COLUMNS)
    diagnostics["psd_repaired"] = diagnostics["psd_repaired"].astype(bool)
    diagnostics["fallback_used"] = diagnostics["fallback_used"].astype(bool)
    if resume is not None:
        weights = pd.concat([resume.weights, weights]) if len(held) else resume.weights.copy()
        diagnostics = _concat_diagnostics(resume.diagnostics, diagnostics, len(held))
        weights.index.name = index.name
        diagnostics.index.name = index.name
    state = resume_state(eng, last_target, last_row, n_rows)
    return OptimizationResult(weights=weights, diagnostics=diagnostics, state=state)


def _concat_diagnostics(old: pd.DataFrame, new: pd.DataFrame, n_new: int) -> pd.DataFrame:
    if not n_new:
        return old.copy()
    out = pd.concat([old[DIAGNOSTIC_COLUMNS], new])
    out["psd_repaired"] = out["psd_repaired"].astype(bool)
    out["fallback_used"] = out["fallback_used"].astype(bool)
    return out


def _resume_from(resume: OptimizationResult, returns: pd.DataFrame, rows: list[int]) -> tuple[int, np.ndarray, int]:
    """How many rows of the rebalance grid ``resume`` walked (its rebalances are the grid's rows from
    the first one it could allocate to its last), its last target and row; refuses a result that is
    not this walk's prefix (other sleeves, other rebalance dates, no state)."""
    state = resume.state
    if not state or state.get("version") != 1:
        raise OptimizerConfigError("resume: the previous result carries no resumable state (computed before "
                                   "meta.optimize stored one); recompute in full")
    if list(map(str, resume.weights.columns)) != [str(c) for c in returns.columns]:
        raise OptimizerConfigError("resume: the previous result's sleeves differ from the returns' columns")
    last_row = int(state["last_row"])
    n_held = len(resume.weights)
    done = rows.index(last_row) + 1 if last_row in rows else 0
    if n_held == 0 or done < n_held or not resume.weights.index.equals(returns.index[rows[done - n_held:done]]):
        raise OptimizerConfigError("resume: the previous result's rebalance dates are not the rebalances of this "
                                   "walk up to its last one (the returns are not an append of the previous ones)")
    if int(state["n_rows"]) > len(returns):
        raise OptimizerConfigError("resume: the previous state's last rebalance row does not match its weights")
    return done, np.asarray(state["last_target"], dtype=float), last_row
