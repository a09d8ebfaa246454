"""Performance metrics on daily simple returns, with every convention stated.

Pure functions (numpy/pandas only). Each function takes a daily simple-return ``pd.Series``,
drops the leading NaN (portfolio not live yet) and rejects any NaN after that: a hole inside
the live period would silently change compounding, so it is an error that names the date.

The conventions are collected in :data:`CONVENTIONS` so the report prints exactly what was
computed. Peer libraries disagree on several of them (see the report's conventions table).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from quant_meta_assets import rates
from quant_meta_assets.errors import QuantMetaError
from quant_meta_assets.rates import PERIODS_PER_YEAR
VAR_LEVEL = 0.95


class MetricsInputError(QuantMetaError, ValueError):
    """A return series cannot be measured (NaN inside the live period, too short, not numeric)."""


CONVENTIONS: dict[str, str] = {
    "returns": "Daily simple returns r_t = P_t/P_{t-1} - 1; leading NaN (not live yet) is dropped, "
    "a NaN after the first live day is an error.",
    "annualisation": f"{PERIODS_PER_YEAR} trading periods per year.",
    "cagr": f"CAGR = (prod(1 + r))^({PERIODS_PER_YEAR}/N) - 1, N = number of live days (compounded, "
    "trading-day count, not calendar years).",
    "ann_vol": f"Annualised volatility = std(r, ddof=1) * sqrt({PERIODS_PER_YEAR}).",
    "risk_free_rate": "ONE rf everywhere (quant_meta_assets/rates.py): an annual decimal rate "
    "(0.02 = 2%/yr; the project's is $QUANT_META_RISK_FREE_RATE, default 0), converted to a daily "
    f"rate geometrically, rf_d = (1 + rf)^(1/{PERIODS_PER_YEAR}) - 1, by the metrics, the optimizer "
    "(max_sharpe) and the sleeves, whose uninvested cash earns rf_d every day.",
    "sharpe": f"Sharpe = mean(r - rf_d) / std(r - rf_d, ddof=1) * sqrt({PERIODS_PER_YEAR}).",
    "sortino": "Sortino = mean(r - rf_d) / sqrt(mean(min(r - rf_d, 0)^2)) * "
    f"sqrt({PERIODS_PER_YEAR}) (quantstats / empyrical): excess returns over rf (the MAR is rf "
    "unless given), the downside deviation averages over ALL days (zeros for days above rf).",
    "max_drawdown": "Max drawdown = min_t(W_t / max_{s<=t} W_s - 1) on the compounded wealth curve "
    "W_t = prod_{s<=t}(1 + r_s) with W_0 = 1 before the first day; reported as a NEGATIVE number "
    "(-0.25 = a 25% peak-to-trough loss).",
    "calmar": "Calmar = CAGR / |max drawdown| (NaN when there is no drawdown).",
    "var_95": "Historical one-day VaR at 95%: -q_5%(r), q by linear interpolation between order "
    "statistics (numpy/pandas default); reported as a POSITIVE loss (0.02 = lose 2% or more on "
    "5% of days).",
    "cvar_95": "Historical one-day CVaR (expected shortfall) at 95%: -mean(r | r <= q_5%(r)); "
    "POSITIVE loss number, >= VaR.",
    "skew": "Sample skewness, bias-corrected (adjusted Fisher-Pearson G1, as pandas Series.skew).",
    "excess_kurtosis": "EXCESS kurtosis (normal = 0), bias-corrected sample estimator "
    "(G2, as pandas Series.kurt).",
    "hit_rate": "Share of live days with r > 0 among non-NaN days (a zero-return day counts as a miss).",
    "best_day / worst_day": "Largest / smallest single daily simple return.",
    "beta": "Beta against the benchmark (see 'benchmark': price or total return) = cov(r, b) / var(b), both ddof=1, "
    "on the days both are live (the benchmark must cover them).",
    "alpha": f"Alpha (annual, additive) = {PERIODS_PER_YEAR} * mean((r - rf_d) - beta * (b - rf_d)); a "
    "decimal per year (0.02 = 2 percentage points a year above what the beta exposure earned).",
    "tracking_error": f"Tracking error = std(r - b, ddof=1) * sqrt({PERIODS_PER_YEAR}).",
    "information_ratio": f"Information ratio = {PERIODS_PER_YEAR} * mean(r - b) / tracking error "
    "(annualised; quantstats' information_ratio is the daily ratio, sqrt(252) times smaller).",
    "yearly_returns": "Yearly / monthly returns = prod(1 + r) - 1 over the live days of each calendar "
    "year / month (compounded); the first and last year may be partial (their day count is shown).",
    "drawdown_periods": "A drawdown period is a maximal run of days with W_t below its running peak: start "
    "= the first day below the peak, trough = the day of the lowest W, recovery = the first day W is back "
    "at (or above) the peak (none if still under water), duration = trading days under water (start up "
    "to, not including, the recovery; to the last day if not recovered). Ranked by depth.",
    "rolling": f"Rolling 1-year statistics on the trailing {PERIODS_PER_YEAR} live days (no value before "
    "a full window): Sharpe and volatility exactly as above on each window.",
    "turnover": "ANNUALISED two-sided turnover, the same rule for sleeves and meta: sum over the "
    "counted rebalances of sum_i |w_new,i - w_held,i| (w_held = the old weights drifted to the "
    f"decision date; NOT halved), divided by the window's years N/{PERIODS_PER_YEAR}. A rebalance "
    "is counted when its trade first earns inside the window (decided on the day before the first "
    "window day up to the day before the last); a book's initial allocation from cash is NOT counted "
    "(meta and sleeves alike), and a rebalance dated on the last row (never held) is not counted. "
    "For the meta portfolios it is the sleeve-level reallocation; sleeve trades are in the sleeve rows.",
}


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------


def live_returns(returns: pd.Series) -> pd.Series:
    """Drop the leading NaN (not live yet) and the trailing NaN (stopped); raise if a NaN or inf
    remains inside the live period."""
    if not isinstance(returns, pd.Series):
        raise MetricsInputError(f"returns must be a pandas Series, got {type(returns).__name__}")
    r = returns if returns.dtype == np.float64 else pd.to_numeric(returns, errors="raise").astype(float)
    values = r.to_numpy()
    finite = np.isfinite(values)
    if finite.all():  # already live (every metric of a row re-checks the row's series): nothing to drop
        return r
    finite_or_nan = finite | np.isnan(values)
    if not finite_or_nan.all():
        bad = r.index[~finite_or_nan][0]
        raise MetricsInputError(f"returns {returns.name!r} contain an infinite value on {bad}")
    first = r.first_valid_index()
    if first is None:
        return r.iloc[0:0]
    r = r.loc[first : r.last_valid_index()]
    if r.isna().any():
        bad = r.index[r.isna().to_numpy()][0]
        raise MetricsInputError(
            f"returns {returns.name!r} have a NaN on {bad}, after the first live day {first}"
        )
    return r


daily_rate = rates.daily_rate  # the one conversion (geometric); re-exported for callers


def _values(returns: pd.Series) -> np.ndarray:
    return live_returns(returns).to_numpy(dtype=float)


# --------------------------------------------------------------------------------------------
# single-series metrics
# --------------------------------------------------------------------------------------------


def cagr(returns: pd.Series) -> float:
    """(prod(1 + r))^(252/N) - 1 over the N live days."""
    r = _values(returns)
    if r.size == 0:
        return float("nan")
    wealth = float(np.prod(1.0 + r))
    if wealth <= 0:
        return -1.0
    return float(wealth ** (PERIODS_PER_YEAR / r.size) - 1.0)


def ann_vol(returns: pd.Series) -> float:
    """std(r, ddof=1) * sqrt(252)."""
    r = _values(returns)
    if r.size < 2:
        return float("nan")
    return float(np.std(r, ddof=1) * np.sqrt(PERIODS_PER_YEAR))


def sharpe(returns: pd.Series, risk_free_rate: float | None = None) -> float:
    """mean(r - rf_d) / std(r - rf_d, ddof=1) * sqrt(252); rf annual (None = the project's), rf_d geometric."""
    r = _values(returns)
    if r.size < 2:
        return float("nan")
    excess = r - daily_rate(risk_free_rate)
    sd = np.std(excess, ddof=1)
    if sd == 0:
        return float("nan")
    return float(np.mean(excess) / sd * np.sqrt(PERIODS_PER_YEAR))


def sortino(returns: pd.Series, risk_free_rate: float | None = None, mar: float | None = None) -> float:
    """mean(r - MAR_d) / sqrt(mean(min(r - MAR_d, 0)^2)) * sqrt(252), MAR = rf unless given (both
    annual, converted like rf): the quantstats / empyrical definition."""
    r = _values(returns)
    if r.size == 0:
        return float("nan")
    excess = r - daily_rate(risk_free_rate if mar is None else mar)
    downside = np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2))
    if downside == 0:
        return float("nan")
    return float(np.mean(excess) / downside * np.sqrt(PERIODS_PER_YEAR))


def wealth_curve(returns: pd.Series) -> pd.Series:
    """Compounded wealth W_t = prod_{s<=t}(1 + r_s), starting from 1 before the first live day."""
    r = live_returns(returns)
    return (1.0 + r).cumprod()


def drawdown_series(returns: pd.Series) -> pd.Series:
    """W_t / running max(W) - 1 (<= 0), with the running max starting at W_0 = 1."""
    wealth = wealth_curve(returns)
    peak = np.maximum.accumulate(np.concatenate([[1.0], wealth.to_numpy()]))[1:]
    return pd.Series(wealth.to_numpy() / peak - 1.0, index=wealth.index, name=returns.name)


def max_drawdown(returns: pd.Series) -> float:
    """Most negative drawdown on the compounded wealth curve (a negative number, 0 if none)."""
    dd = drawdown_series(returns)
    if dd.empty:
        return float("nan")
    return float(min(dd.min(), 0.0))


def calmar(returns: pd.Series) -> float:
    """CAGR / |max drawdown|."""
    mdd = max_drawdown(returns)
    if not np.isfinite(mdd) or mdd == 0:
        return float("nan")
    return float(cagr(returns) / abs(mdd))


def value_at_risk(returns: pd.Series, level: float = VAR_LEVEL) -> float:
    """Historical one-day VaR as a POSITIVE loss: -quantile(r, 1 - level), linear interpolation."""
    r = _values(returns)
    if r.size == 0:
        return float("nan")
    return float(-np.quantile(r, 1.0 - level))


def conditional_value_at_risk(returns: pd.Series, level: float = VAR_LEVEL) -> float:
    """Historical one-day CVaR as a POSITIVE loss: -mean(r | r <= quantile(r, 1 - level))."""
    r = _values(returns)
    if r.size == 0:
        return float("nan")
    q = np.quantile(r, 1.0 - level)
    return float(-np.mean(r[r <= q]))


def skew(returns: pd.Series) -> float:
    """Bias-corrected sample skewness (pandas Series.skew)."""
    return float(live_returns(returns).skew())


def excess_kurtosis(returns: pd.Series) -> float:
    """Bias-corrected sample EXCESS kurtosis (pandas Series.kurt; normal = 0)."""
    return float(live_returns(returns).kurt())


def hit_rate(returns: pd.Series) -> float:
    """Share of live days with r > 0."""
    r = _values(returns)
    if r.size == 0:
        return float("nan")
    return float(np.mean(r > 0))


def best_day(returns: pd.Series) -> float:
    r = _values(returns)
    return float(r.max()) if r.size else float("nan")


def worst_day(returns: pd.Series) -> float:
    r = _values(returns)
    return float(r.min()) if r.size else float("nan")


def _aligned(returns: pd.Series, benchmark: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The live returns and the benchmark on the same days (the benchmark must cover them)."""
    r = live_returns(returns)
    b = benchmark if isinstance(benchmark, pd.Series) and benchmark.dtype == np.float64 else \
        pd.to_numeric(pd.Series(benchmark), errors="raise").astype(float)
    if not b.index.equals(r.index):
        b = b.reindex(r.index)
    if b.isna().any():
        raise MetricsInputError(
            f"benchmark {b.name!r} has no return on {b.index[b.isna().to_numpy()][0]}, a live day of "
            f"{returns.name!r}"
        )
    return r.to_numpy(dtype=float), b.to_numpy(dtype=float)


def beta(returns: pd.Series, benchmark: pd.Series) -> float:
    """cov(r, b) / var(b), ddof=1, on the live days of ``returns``."""
    r, b = _aligned(returns, benchmark)
    if r.size < 2:
        return float("nan")
    var_b = float(np.var(b, ddof=1))
    if var_b == 0:
        return float("nan")
    return float(np.cov(r, b, ddof=1)[0, 1] / var_b)


def alpha(returns: pd.Series, benchmark: pd.Series, risk_free_rate: float | None = None) -> float:
    """252 * mean((r - rf_d) - beta (b - rf_d)): the annual additive (Jensen) alpha."""
    r, b = _aligned(returns, benchmark)
    be = beta(returns, benchmark)
    if not np.isfinite(be):
        return float("nan")
    rf_d = daily_rate(risk_free_rate)
    return float(PERIODS_PER_YEAR * np.mean((r - rf_d) - be * (b - rf_d)))


def tracking_error(returns: pd.Series, benchmark: pd.Series) -> float:
    """std(r - b, ddof=1) * sqrt(252)."""
    r, b = _aligned(returns, benchmark)
    if r.size < 2:
        return float("nan")
    return float(np.std(r - b, ddof=1) * np.sqrt(PERIODS_PER_YEAR))


def information_ratio(returns: pd.Series, benchmark: pd.Series) -> float:
    """252 * mean(r - b) / tracking error (NaN when the tracking error is 0)."""
    r, b = _aligned(returns, benchmark)
    te = tracking_error(returns, benchmark)
    if not np.isfinite(te) or te == 0:
        return float("nan")
    return float(PERIODS_PER_YEAR * np.mean(r - b) / te)


# --------------------------------------------------------------------------------------------
# calendar tables, drawdown periods, rolling statistics
# --------------------------------------------------------------------------------------------


def yearly_returns(returns: pd.Series) -> pd.Series:
    """Compounded return of each calendar year over its live days, indexed by year."""
    r = live_returns(returns)
    out = (1.0 + r).groupby(r.index.year).prod() - 1.0
    out.index.name = "year"
    return out.rename(returns.name)


def monthly_returns(returns: pd.Series) -> pd.DataFrame:
    """Compounded return of each calendar month: rows years, columns months 1..12 (NaN: not live)."""
    r = live_returns(returns)
    grouped = (1.0 + r).groupby([r.index.year, r.index.month]).prod() - 1.0
    table = grouped.unstack().reindex(columns=range(1, 13))
    table.index.name, table.columns.name = "year", "month"
    return table


DRAWDOWN_PERIOD_COLUMNS = ("start", "trough", "recovery", "depth", "days_to_trough", "duration")


def drawdown_periods(returns: pd.Series, top: int | None = 5) -> pd.DataFrame:
    """The ``top`` deepest drawdown periods (see ``CONVENTIONS['drawdown_periods']``), deepest first.

    Columns: ``start`` (first day under water), ``trough``, ``recovery`` (first day back at the peak,
    NaT if not recovered), ``depth`` (negative), ``days_to_trough`` (trading days from start to trough,
    both included) and ``duration`` (trading days under water).
    """
    dd = drawdown_series(returns)
    values = dd.to_numpy()
    under = values < 0
    rows = []
    n = len(values)
    i = 0
    while i < n:
        if not under[i]:
            i += 1
            continue
        j = i
        while j < n and under[j]:
            j += 1  # j = the recovery position (or n)
        k = i + int(np.argmin(values[i:j]))
        rows.append({
            "start": dd.index[i], "trough": dd.index[k],
            "recovery": dd.index[j] if j < n else pd.NaT,
            "depth": float(values[k]), "days_to_trough": k - i + 1, "duration": j - i,
        })
        i = j
    table = pd.DataFrame(rows, columns=list(DRAWDOWN_PERIOD_COLUMNS))
    if len(table):
        table = table.sort_values(["depth", "start"], kind="stable").reset_index(drop=True)
    table = table.head(top) if top else table
    table.index = pd.RangeIndex(1, len(table) + 1, name="rank")
    return table.astype({"depth": float, "days_to_trough": int, "duration": int})


def rolling_sharpe(returns: pd.Series, window: int = PERIODS_PER_YEAR,
                   risk_free_rate: float | None = None) -> pd.Series:
    """Sharpe (as :func:`sharpe`) on each trailing ``window`` of live days; NaN before a full window."""
    excess = live_returns(returns) - daily_rate(risk_free_rate)
    roll = excess.rolling(window, min_periods=window)
    sd = roll.std(ddof=1)
    return (roll.mean() / sd.where(sd > 0) * np.sqrt(PERIODS_PER_YEAR)).rename(returns.name)


def rolling_vol(returns: pd.Series, window: int = PERIODS_PER_YEAR) -> pd.Series:
    """Annualised volatility (as :func:`ann_vol`) on each trailing ``window`` of live days."""
    r = live_returns(returns)
    return (r.rolling(window, min_periods=window).std(ddof=1) * np.sqrt(PERIODS_PER_YEAR)).rename(returns.name)


def annualised_turnover(turnover: pd.Series | None, n_days: int) -> float:
    """Sum of the (already selected) two-sided turnovers / (n_days / 252); NaN without any series.

    The caller selects the rebalances that count (see ``CONVENTIONS['turnover']`` and
    ``report.portfolio.counted_turnover``); an empty selection is 0 (the book did not trade).
    """
    if turnover is None or n_days <= 0:
        return float("nan")
    t = pd.to_numeric(pd.Series(turnover, dtype=float), errors="raise")
    if t.isna().any():
        raise MetricsInputError(f"turnover {t.name!r} has a NaN on {t.index[t.isna().to_numpy()][0]}")
    return float(t.sum() / (n_days / PERIODS_PER_YEAR))


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------

METRIC_COLUMNS: tuple[str, ...] = (
    "cagr",
    "ann_vol",
    "sharpe",
    "sortino",
    "max_drawdown",
    "calmar",
    "var_95",
    "cvar_95",
    "skew",
    "excess_kurtosis",
    "hit_rate",
    "best_day",
    "worst_day",
    "beta",
    "alpha",
    "tracking_error",
    "information_ratio",
    "turnover",
    "n_days",
    "start",
    "end",
)


def metrics_row(
    returns: pd.Series,
    turnover: pd.Series | None = None,
    risk_free_rate: float | None = None,
    mar: float | None = None,
    benchmark: pd.Series | None = None,
) -> dict[str, object]:
    """Every metric of one return series, as a dict keyed like :data:`METRIC_COLUMNS`; the
    benchmark-relative ones are NaN without a ``benchmark`` (daily simple returns)."""
    r = live_returns(returns)
    relative = dict.fromkeys(("beta", "alpha", "tracking_error", "information_ratio"), float("nan"))
    if benchmark is not None and r.size:
        benchmark = pd.to_numeric(pd.Series(benchmark), errors="raise").astype(float).reindex(r.index)  # aligned once
        relative = {"beta": beta(r, benchmark), "alpha": alpha(r, benchmark, risk_free_rate),
                    "tracking_error": tracking_error(r, benchmark),
                    "information_ratio": information_ratio(r, benchmark)}
    return {
        "cagr": cagr(r),
        "ann_vol": ann_vol(r),
        "sharpe": sharpe(r, risk_free_rate),
        "sortino": sortino(r, risk_free_rate, mar),
        "max_drawdown": max_drawdown(r),
        "calmar": calmar(r),
        "var_95": value_at_risk(r),
        "cvar_95": conditional_value_at_risk(r),
        "skew": skew(r),
        "excess_kurtosis": excess_kurtosis(r),
        "hit_rate": hit_rate(r),
        "best_day": best_day(r),
        "worst_day": worst_day(r),
        **relative,
        "turnover": annualised_turnover(turnover, int(r.size)),
        "n_days": int(r.size),
        "start": r.index[0] if r.size else pd.NaT,
        "end": r.index[-1] if r.size else pd.NaT,
    }


def performance_table(
    returns: pd.DataFrame | Mapping[str, pd.Series],
    turnover: Mapping[str, pd.Series] | None = None,
    risk_free_rate: float | None = None,
    mar: float | None = None,
    benchmark: pd.Series | None = None,
) -> pd.DataFrame:
    """Metrics for each portfolio (column of ``returns`` / key of the mapping), indexed by name.

    ``turnover`` maps portfolio name -> the two-sided turnover of its COUNTED rebalances (see
    ``CONVENTIONS['turnover']``), annualised over the portfolio's live days; no entry -> NaN.
    ``risk_free_rate`` (None = the project's) and ``mar`` (None = rf) are annual decimals (see
    :data:`CONVENTIONS`). ``benchmark`` (daily simple returns covering every portfolio's live days)
    fills ``beta``, ``alpha``, ``tracking_error`` and ``information_ratio``; NaN without it.
    """
    if isinstance(returns, pd.DataFrame):
        items = [(str(c), returns[c]) for c in returns.columns]
    elif isinstance(returns, Mapping):
        items = [(str(k), pd.Series(v)) for k, v in returns.items()]
    else:
        raise MetricsInputError(
            f"returns must be a DataFrame or a mapping name -> Series, got {type(returns).__name__}"
        )
    turnover = turnover or {}
    rows = {
        name: metrics_row(series.rename(name), turnover.get(name), risk_free_rate, mar, benchmark)
        for name, series in items
    }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(METRIC_COLUMNS))
    table.index.name = "portfolio"
    float_cols = [c for c in METRIC_COLUMNS if c not in ("n_days", "start", "end")]
    table[float_cols] = table[float_cols].astype(float)
    table["n_days"] = table["n_days"].astype(int)
    return table
