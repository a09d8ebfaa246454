"""Per-method solvers: exact fast paths (numpy/scipy) and DPP cvxpy problems compiled once.

All inputs here are *scaled*: the engine divides the daily covariance by ``s = trace(Sigma)/k``
(mean variance 1) and the daily expected returns by the same ``s`` (mean_variance) or by
``max|mu - rf|`` (max_sharpe); the optimal weights are unchanged by these scalings and Clarabel
then works on O(1) numbers (daily variances of ~1e-4 otherwise cost ~1e-3 in the weights).

Convex formulations (``F`` is a factor of the scaled covariance, ``F F' = Sigma``):

* min_variance:   min ||F'w||^2 + p ||w - w_prev||_1           s.t. w in W
* mean_variance:  min (lambda/2)||F'w||^2 - mu'w + p ||w - w_prev||_1   s.t. w in W
* max_sharpe:     min ||F'y||^2  s.t. (mu - rf)'y = 1, y in kappa*W, kappa >= 0;  w = y / kappa
* max_diversification: the same with sigma (asset vols) in place of mu - rf
* risk_parity:    min 1/2 ||F'y||^2 - sum_i b_i log y_i  s.t. y in cone(W);  w = y / sum(y)
* projection:     min ||w - target||^2  s.t. w in W  (closed-form methods that violate W)

``W`` = {lb <= w <= ub, sum w = 1, group sums <= caps, ||w - w_prev||_1 <= T}; ``kappa*W`` and
``cone(W)`` are its homogenisations (each constraint multiplied through by ``kappa = sum(y)``),
so the risk-parity problem is the "constrained risk budgeting" of Richard & Roncalli (2019).

Fast paths (exact, used when they give the same optimum):

* ``nnls_direction``: min_variance / max_sharpe / max_diversification with only ``w >= 0`` and the
  budget are ``w = x / sum(x)``, ``x = argmin_{x>=0} 1/2 x'Sigma x - a'x`` (a = 1, mu - rf, sigma):
  the KKT systems coincide after scaling by the budget multiplier. Solved by Lawson-Hanson NNLS on
  the Cholesky factor, then polished by solving the KKT system on the support exactly and
  verifying complementary slackness; any doubt -> ``None`` (the cvxpy path runs instead).
* ``risk_parity_newton``: damped Newton on the strictly convex log-barrier objective with a
  fraction-to-boundary + Armijo backtracking line search, to a gradient norm of 1e-13.

If a relaxed (budget-only) optimum happens to satisfy every constraint it is also the constrained
optimum (the feasible set only shrank), so the engine accepts it after validation.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack
from scipy.optimize import nnls

from quant_meta_assets.meta.optimize.constraints import ActiveConstraints, AssetTrade

CVX_METHODS = ("min_variance", "mean_variance", "max_sharpe", "max_diversification", "risk_parity", "projection")

# 1e-9 on scaled data: ~1e-9 weights; 1e-10 makes Clarabel report "inaccurate" on ~0.5% of windows
CLARABEL_OPTS = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9}


@dataclass
class SolveOutcome:
    weights: np.ndarray | None
    status: str  # "optimal" | "infeasible" | "unbounded" | "numerical" | "solver_error"
    solver: str
    solve_time_s: float
    detail: str = ""


# ---------------------------------------------------------------- fast exact paths
# Thin LAPACK calls (float64): the scipy.linalg / numpy.linalg wrappers cost 3-5 us of argument
# checking each, which is most of the time of a 20 x 20 factorisation; the walk-forward calls
# them thousands of times.


def chol_lower(A: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor of the symmetric matrix ``A`` (upper triangle zeroed); None if not PD."""
    c, info = lapack.dpotrf(A, lower=1, clean=1)
    return c if info == 0 else None


def chol_solve(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``(L L') x = b`` given the lower factor ``L``."""
    x, info = lapack.dpotrs(L, b, lower=1)
    if info != 0:  # pragma: no cover - only on malformed arguments
        raise np.linalg.LinAlgError(f"dpotrs failed (info={info})")
    return x


def tri_solve_lower(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``L x = b`` with ``L`` lower triangular."""
    x, info = lapack.dtrtrs(L, b, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"singular triangular factor (dtrtrs info={info})")
    return x



def nnls_direction(sigma: np.ndarray, a: np.ndarray, chol: np.ndarray | None = None) -> np.ndarray | None:
    """x = argmin_{x >= 0} 1/2 x'Sigma x - a'x, exact (KKT-verified); None if not certain.

    Returns the unnormalised x (x = 0 when no a_i > 0 can be exploited).
    """
    k = sigma.shape[0]
    L = chol if chol is not None else chol_lower(sigma)
    if L is None:
        return None
    try:
        c = tri_solve_lower(L, a)
    except np.linalg.LinAlgError:
        return None
    try:
        x, _ = nnls(L.T, c, maxiter=max(50, 10 * k))
    except RuntimeError:
        return None
    support = x > 0
    if not support.any():
        return x
    # polish: exact solve on the support
    for _ in range(5):
        S = np.flatnonzero(support)
        LS = L if S.size == k else chol_lower(sigma[S][:, S])
        if LS is None:
            return None
        xs = chol_solve(LS, a[S])
        if np.all(xs > 0):
            x = np.zeros(k)
            x[S] = xs
            g = sigma @ x - a
            scale = max(1.0, float(np.abs(a).max()))
            viol = np.flatnonzero(g < -1e-11 * scale)
            viol = viol[~support[viol]]
            if viol.size == 0:
                return x
            support[viol[np.argmin(g[viol])]] = True
        else:
            return None
    return None


def nnls_warm(sigma: np.ndarray, a: np.ndarray, support: np.ndarray, max_iter: int = 30) -> np.ndarray | None:
    """``nnls_direction`` warm-started from a guessed support (the previous rebalance's).

    Primal-dual active-set iteration: solve the KKT system on the support exactly, drop the
    variables that come out <= 0, add every variable whose gradient says it should enter; stop
    when the KKT conditions hold (the same certificate as ``nnls_direction``: the optimum is
    unique, so the result is the same point). Between two rebalances the support barely moves, so
    this costs a few Cholesky factors of the support instead of a full ``k x k`` factor and a cold
    Lawson-Hanson run. None when it does not certify within ``max_iter`` (the caller goes cold).
    """
    k = sigma.shape[0]
    support = support.copy()
    scale = max(1.0, float(np.abs(a).max()))
    for _ in range(max_iter):
        S = np.flatnonzero(support)
        if S.size == 0:
            return None
        LS = chol_lower(sigma[np.ix_(S, S)])
        if LS is None:
            return None
        xs = chol_solve(LS, a[S])
        if np.any(xs <= 0):
            support[S[xs <= 0]] = False
            continue
        g = sigma[:, S] @ xs - a
        enter = ~support & (g < -1e-11 * scale)
        if not enter.any():
            x = np.zeros(k)
            x[S] = xs
            return x
        support |= enter
    return None


def risk_parity_newton(
    sigma: np.ndarray, b: np.ndarray, tol: float = 1e-13, max_iter: int = 100, start: np.ndarray | None = None
) -> np.ndarray | None:
    """y = argmin 1/2 y'Sigma y - b'log(y) by damped Newton; returns w = y / sum(y) or None.

    ``start`` (e.g. the previous rebalance's weights, all > 0) is a warm start: it is moved onto
    its optimal scale ``sqrt(sum b / w'Sigma w)`` along its ray, so Newton starts next to the
    optimum; the stopping test is the same, so warm and cold runs agree to the tolerance.
    """
    k = sigma.shape[0]
    d = np.sqrt(np.diag(sigma))
    if np.any(d <= 0):
        return None
    u = 1.0 / d if start is None or start.shape != (k,) or not np.all(start > 0) else start
    t = np.sqrt(b.sum() / float(u @ sigma @ u))
    y = t * u

    def f(v):
        return 0.5 * float(v @ sigma @ v) - float(b @ np.log(v))

    fy = f(y)
    LH = None
    reuse = False  # the last step was a full step in the quadratic-convergence region
    gn_prev = math.inf
    for _ in range(max_iter):
        sy = sigma @ y
        g = sy - b / y
        gn = float(np.max(np.abs(g * y)))
        if gn < tol:
            return y / y.sum()
        if reuse and LH is not None and gn <= 0.1 * gn_prev:
            # chord step: after a full step the Hessian barely moves, so the last factor still
            # gives fast (linear, rate ||H_old^-1 dH||) convergence for a k^2 solve instead of a
            # k^3 factorisation; refactored as soon as a step gains less than 10x
            step = -chol_solve(LH, g)
        else:
            H = sigma.copy()
            H.flat[:: k + 1] += b / y**2
            LH = chol_lower(H)
            if LH is None:
                return None
            step = -chol_solve(LH, g)
        gn_prev = gn
        dec = -float(g @ step)
        if dec < 0:
            return None
        neg = step < 0
        alpha = 1.0
        if neg.any():
            alpha = min(1.0, 0.99 * float(np.min(-y[neg] / step[neg])))
        if dec < 1e-8 and alpha == 1.0:
            # quadratic-convergence region: f differences are below rounding, take the full step
            y = y + step
            fy = f(y)
            reuse = True
            continue
        reuse = False
        while True:
            yn = y + alpha * step
            fn = f(yn)
            if fn <= fy - 1e-4 * alpha * dec or alpha < 1e-12:
                break
            alpha *= 0.5
        if alpha < 1e-12:
            # at machine precision the Armijo test is noise; accept if already converged
            return y / y.sum() if gn < 1e-10 else None
        y, fy = yn, fn
        reuse = alpha == 1.0
    return None


# ---------------------------------------------------------------- cvxpy problems


class CvxProblem:
    """One DPP problem for (method, active constraints, turnover on/off), compiled on first solve."""

    def __init__(
        self,
        method: str,
        cons: ActiveConstraints,
        use_turnover: bool,
        use_penalty: bool,
        risk_aversion: float = 1.0,
        budget: np.ndarray | None = None,
        asset_dim: int | None = None,
    ) -> None:
        import cvxpy as cp

        self.cp = cp
        self.method = method
        k = cons.k
        self.F = cp.Parameter((k, k), name="F")
        self.vec = cp.Parameter(k, name="vec")  # mu / (mu - rf) / sigma / target
        self.w_prev = cp.Parameter(k, name="w_prev")
        self.t_budget = cp.Parameter(nonneg=True, name="turnover_budget")
        self.penalty = cp.Parameter(nonneg=True, name="penalty")
        # turnover in asset space (AssetTrade): ||H' x - anchor||_1, H and anchor set per rebalance
        self.asset_dim = asset_dim
        if asset_dim is not None:
            self.H = cp.Parameter((k, asset_dim), name="holdings")
            self.anchor = cp.Parameter(asset_dim, name="anchor")
        lb, ub = cons.lb, cons.ub
        self.cons = cons
        self.risk_aversion = float(risk_aversion)
        self.budget = budget
        # the polish costs a dense KKT solve per working-set change, O(k^3): above
        # POLISH_MAX_SLEEVES it would push a 500-sleeve rebalance past 0.5 s (measured), so the
        # Clarabel solution is kept as it is there
        self.polishable = k <= POLISH_MAX_SLEEVES and not use_turnover and not (
            use_penalty and method in ("min_variance", "mean_variance")
        )
        homog = method in ("max_sharpe", "max_diversification", "risk_parity")
        x = cp.Variable(k, name="x", nonneg=True)
        self.x = x
        constraints = []
        if homog:
            if method == "risk_parity":
                kappa = cp.sum(x)
            else:
                self.kappa = cp.Variable(nonneg=True, name="kappa")
                kappa = self.kappa
                constraints.append(cp.sum(x) == kappa)
        else:
            kappa = 1.0
            constraints.append(cp.sum(x) == 1)
        if np.any(lb > 0):
            constraints.append(x >= kappa * lb if homog else x >= lb)
        if np.any(ub < 1):
            constraints.append(x <= kappa * ub if homog else x <= ub)
        for _g, members, cap in cons.groups:
            constraints.append(cp.sum(x[members]) <= cap * kappa)

        def trade(scale):  # two-sided turnover of x (scaled by kappa for the homogenised problems)
            if asset_dim is not None:
                return cp.sum(cp.abs(self.H.T @ x - scale * self.anchor))
            return cp.sum(cp.abs(x - scale * self.w_prev))

        if use_turnover:
            constraints.append(trade(kappa) <= self.t_budget * kappa)
        risk = cp.sum_squares(self.F.T @ x)
        if method == "min_variance":
            obj = risk
        elif method == "mean_variance":
            obj = (risk_aversion / 2.0) * risk - self.vec @ x
        elif method in ("max_sharpe", "max_diversification"):
            obj = risk
            constraints.append(self.vec @ x == 1)
        elif method == "risk_parity":
            assert budget is not None
            obj = 0.5 * risk - budget @ cp.log(x)
        elif method == "projection":
            obj = cp.sum_squares(x - self.vec)
        else:  # pragma: no cover - guarded by the engine
            raise ValueError(method)
        if use_penalty and method in ("min_variance", "mean_variance"):
            obj = obj + self.penalty * trade(1.0)
        self.problem = cp.Problem(cp.Minimize(obj), constraints)
        self.homog = homog

    def solve(
        self,
        F: np.ndarray,
        vec: np.ndarray | None,
        w_prev: np.ndarray | AssetTrade | None,
        t_budget: float | None,
        penalty: float,
        solver: str,
    ) -> SolveOutcome:
        cp = self.cp
        self.F.value = F
        k = F.shape[0]
        self.vec.value = np.zeros(k) if vec is None else vec
        if isinstance(w_prev, AssetTrade):
            self.H.value, self.anchor.value = w_prev.H, w_prev.anchor
            w_prev = None
        self.w_prev.value = np.zeros(k) if w_prev is None else w_prev
        self.t_budget.value = 0.0 if t_budget is None else max(float(t_budget), 0.0)
        self.penalty.value = float(penalty)
        opts = dict(CLARABEL_OPTS) if solver.upper() == "CLARABEL" else {}
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # inaccurate status is reported, not warned
                self.problem.solve(solver=solver, warm_start=True, **opts)
        except cp.error.SolverError as exc:
            return SolveOutcome(None, "solver_error", solver, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
        except (ValueError, ArithmeticError, cp.error.DCPError, cp.error.DPPError) as exc:
            return SolveOutcome(None, "solver_error", solver, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
        dt = time.perf_counter() - t0
        status = self.problem.status
        if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
            return SolveOutcome(None, "infeasible", solver, dt, f"solver status {status}")
        if status in (cp.UNBOUNDED, cp.UNBOUNDED_INACCURATE):
            return SolveOutcome(None, "unbounded", solver, dt, f"solver status {status}")
        if status != cp.OPTIMAL:
            return SolveOutcome(None, "numerical", solver, dt, f"solver status {status}")
        x = self.x.value
        if x is None or not np.all(np.isfinite(x)):
            return SolveOutcome(None, "numerical", solver, dt, "solver returned NaN/None weights")
        x = np.maximum(np.asarray(x, dtype=float), 0.0)
        if self.homog:
            s = float(x.sum())
            if not np.isfinite(s) or s <= 0:
                return SolveOutcome(None, "numerical", solver, dt, f"homogenised solution has sum {s}")
            x = x / s
        if self.polishable and self.method == "risk_parity":
            xp = polish_risk_parity(self.cons, F @ F.T, self.budget, x)
            if xp is not None:
                return SolveOutcome(xp, "optimal", f"{solver}+polish", time.perf_counter() - t0)
        elif self.polishable:
            xp = polish_active_set(self.method, self.cons, F @ F.T, self.vec.value, x, self.risk_aversion)
            if xp is not None:
                return SolveOutcome(xp, "optimal", f"{solver}+polish", time.perf_counter() - t0)
        return SolveOutcome(x, "optimal", solver, dt)


# ---------------------------------------------------------------- active-set polish

POLISH_MAX_SLEEVES = 200
POLISH_ACTIVE_TOL = 1e-6  # a constraint this close to binding at the solver's point starts active
POLISH_FEAS_TOL = 1e-12


def _polish_objective(method: str, sigma: np.ndarray, vec: np.ndarray, w: np.ndarray, lam: float) -> float:
    if method == "min_variance":
        return float(w @ sigma @ w)
    if method == "mean_variance":
        return 0.5 * lam * float(w @ sigma @ w) - float(vec @ w)
    if method == "projection":
        return float(np.sum((w - vec) ** 2))
    return -float(vec @ w) / float(np.sqrt(w @ sigma @ w))  # max_sharpe / max_diversification


def polish_active_set(
    method: str, cons: ActiveConstraints, sigma: np.ndarray, vec: np.ndarray, w0: np.ndarray, lam: float = 1.0
) -> np.ndarray | None:
    """Exact optimum of the QP from an interior-point solution, or None.

    Starts from the constraints that (nearly) bind at ``w0``, solves the equality-constrained KKT
    system on that working set exactly, and repairs the set (drop a constraint whose multiplier
    has the wrong sign, add the most violated one) until the KKT conditions hold: the result is
    then the exact optimum (the problems are convex). It is returned only if it is feasible and its
    objective is not worse than ``w0``'s; any doubt returns None (the caller keeps ``w0``).

    Variables are ``w`` (min_variance, mean_variance, projection: ``sum w = 1``) or ``(y, kappa)``
    for the homogenised max_sharpe / max_diversification (``vec'y = 1``, ``sum y = kappa``).
    """
    k = w0.size
    homog = method in ("max_sharpe", "max_diversification")
    m = k + 1 if homog else k
    P = np.zeros((m, m))
    q = np.zeros(m)
    if method == "min_variance":
        P[:k, :k] = 2.0 * sigma
    elif method == "mean_variance":
        P[:k, :k] = lam * sigma
        q[:k] = -vec
    elif method == "projection":
        P[:k, :k] = 2.0 * np.eye(k)
        q[:k] = -2.0 * vec
    elif homog:
        P[:k, :k] = 2.0 * sigma
    else:  # pragma: no cover
        return None
    # equality rows (always active)
    if homog:
        E = np.zeros((2, m))
        E[0, :k] = vec
        E[1, :k] = 1.0
        E[1, k] = -1.0
        e = np.array([1.0, 0.0])
        kappa0 = 1.0 / float(vec @ w0) if float(vec @ w0) > 0 else None
        if kappa0 is None:
            return None
        z0 = np.append(w0 * kappa0, kappa0)
    else:
        E = np.ones((1, m))
        e = np.array([1.0])
        z0 = w0
    # inequality rows a'z <= b
    rows, rhs = [], []
    for i in range(k):
        a = np.zeros(m)
        a[i] = -1.0
        if homog:
            a[k] = cons.lb[i]
            rhs.append(0.0)
        else:
            rhs.append(-cons.lb[i])
        rows.append(a)
        if cons.ub[i] < 1.0:
            a = np.zeros(m)
            a[i] = 1.0
            if homog:
                a[k] = -cons.ub[i]
                rhs.append(0.0)
            else:
                rhs.append(cons.ub[i])
            rows.append(a)
    for _g, members, cap in cons.groups:
        a = np.zeros(m)
        a[members] = 1.0
        if homog:
            a[k] = -cap
            rhs.append(0.0)
        else:
            rhs.append(cap)
        rows.append(a)
    A = np.array(rows)
    b = np.array(rhs)
    zscale = float(z0[k]) if homog else 1.0
    work = set(np.flatnonzero(b - A @ z0 <= POLISH_ACTIVE_TOL * zscale).tolist())
    z = None
    for _ in range(2 * len(rows) + 5):
        act = sorted(work)
        C = np.vstack([E, A[act]]) if act else E
        c = np.concatenate([e, b[act]]) if act else e
        nc = C.shape[0]
        if nc > m:
            return None
        K = np.zeros((m + nc, m + nc))
        K[:m, :m] = P
        K[:m, m:] = C.T
        K[m:, :m] = C
        try:
            sol = np.linalg.solve(K, np.concatenate([-q, c]))
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(sol)) or np.abs(K @ sol - np.concatenate([-q, c])).max() > 1e-9:
            return None
        z, nu = sol[:m], sol[m + E.shape[0]:]
        dscale = max(1.0, float(np.abs(sol[m:]).max()))
        if act and nu.min() < -1e-10 * dscale:
            work.discard(act[int(np.argmin(nu))])  # wrong-sign multiplier: not binding
            continue
        slack = b - A @ z
        zs = float(z[k]) if homog else 1.0
        if slack.min() < -POLISH_FEAS_TOL * max(zs, 1e-300):
            work.add(int(np.argmin(slack)))
            continue
        break
    else:
        return None
    if z is None:
        return None
    if homog:
        if not z[k] > 0:
            return None
        w = z[:k] / z[k]
    else:
        w = z.copy()
    w = np.where(np.abs(w) < 1e-15, 0.0, w)
    w = np.maximum(w, cons.lb) if np.all(w >= cons.lb - 1e-12) else w
    if (
        not np.all(np.isfinite(w))
        or abs(float(w.sum()) - 1.0) > 1e-12
        or np.any(w < cons.lb - 1e-12)
        or np.any(w > cons.ub + 1e-12)
        or any(float(w[mm].sum()) > cap + 1e-12 for _g, mm, cap in cons.groups)
    ):
        return None
    if _polish_objective(method, sigma, vec, w, lam) > _polish_objective(method, sigma, vec, w0, lam) + 1e-14 * max(
        1.0, abs(_polish_objective(method, sigma, vec, w0, lam))
    ):
        return None
    return w


def polish_risk_parity(cons: ActiveConstraints, sigma: np.ndarray, b: np.ndarray, w0: np.ndarray) -> np.ndarray | None:
    """Exact constrained risk budgeting from an interior-point solution, or None.

    The constraints that bind at ``w0`` (within POLISH_ACTIVE_TOL) are homogeneous in ``y``
    (``y_i = lb_i sum(y)``, ``y_i = ub_i sum(y)``, ``sum_g y = cap_g sum(y)``): Newton on the
    log-barrier objective restricted to their null space, to a gradient of 1e-13; accepted only
    if the multipliers have the right sign (KKT), the weights are feasible and the objective on
    the budget ray is not worse than ``w0``'s.
    """
    k = w0.size
    rows = []
    for i in range(k):
        if w0[i] - cons.lb[i] <= POLISH_ACTIVE_TOL:
            a = np.full(k, cons.lb[i])
            a[i] -= 1.0
            rows.append(a)
        if cons.ub[i] < 1.0 and cons.ub[i] - w0[i] <= POLISH_ACTIVE_TOL:
            a = np.full(k, -cons.ub[i])
            a[i] += 1.0
            rows.append(a)
    for _g, members, cap in cons.groups:
        if cap - float(w0[members].sum()) <= POLISH_ACTIVE_TOL:
            a = np.full(k, -cap)
            a[members] += 1.0
            rows.append(a)

    def ray_f(w: np.ndarray) -> float:
        v = w * np.sqrt(b.sum() / float(w @ sigma @ w))
        return 0.5 * float(v @ sigma @ v) - float(b @ np.log(v))

    if not rows:
        w = risk_parity_newton(sigma, b)
    else:
        import scipy.linalg as sla

        A = np.array(rows)
        N = sla.null_space(A)
        if N.shape[1] == 0:
            return None
        y = N @ (N.T @ (w0 * np.sqrt(b.sum() / float(w0 @ sigma @ w0))))
        if np.any(y <= 0):
            return None
        w = None
        for _ in range(100):
            g = sigma @ y - b / y
            gz = N.T @ g
            if np.abs(gz).max() < 1e-13:
                nu = np.linalg.lstsq(A.T, -g, rcond=None)[0]  # grad f = -A' nu, nu >= 0
                if nu.min() < -1e-10 * max(1.0, float(np.abs(nu).max())) or np.abs(A.T @ nu + g).max() > 1e-9:
                    return None
                w = y / y.sum()
                break
            H = N.T @ (sigma + np.diag(b / y**2)) @ N
            try:
                dz = -np.linalg.solve(H, gz)
            except np.linalg.LinAlgError:
                return None
            dy = N @ dz
            alpha = 1.0
            neg = dy < 0
            if neg.any():
                alpha = min(1.0, 0.99 * float(np.min(-y[neg] / dy[neg])))
            fy = 0.5 * float(y @ sigma @ y) - float(b @ np.log(y))
            while alpha > 1e-14:
                yn = y + alpha * dy
                if 0.5 * float(yn @ sigma @ yn) - float(b @ np.log(yn)) <= fy + 1e-4 * alpha * float(gz @ dz) + 1e-15 * abs(fy):
                    break
                alpha *= 0.5
            y = y + alpha * dy
        if w is None:
            return None
    if w is None or not np.all(np.isfinite(w)):
        return None
    if (
        abs(float(w.sum()) - 1.0) > 1e-12
        or np.any(w < cons.lb - 1e-12)
        or np.any(w > cons.ub + 1e-12)
        or any(float(w[mm].sum()) > cap + 1e-12 for _g, mm, cap in cons.groups)
    ):
        return None
    if ray_f(w) > ray_f(w0) + 1e-14 * max(1.0, abs(ray_f(w0))):
        return None
    return w
