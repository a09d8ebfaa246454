"""Built-in sleeve strategies: ``fn(prices, **params) -> target weights (dates x tickers)``.

Conventions shared by every built-in:

* **Causality.** The weight row dated ``t`` uses prices up to and including ``t`` only: every
  signal is a trailing ``rolling``/``shift`` computation. The sleeve engine then trades at the
  close of ``t`` and earns from ``t + 1``.
* **Output dates.** A weight row is returned for every date on which the signal is defined
  (after the warm-up lookback); the engine samples the last row at or before each rebalance
  date. ``min_variance`` is the exception: it is solved only on month-end dates (the last date
  of each calendar month present in the index) to stay fast.
* **Point in time.** Prices follow :mod:`quant_meta_assets.prices`: a ticker's price is NaN
  before it lists and after it delists, never in between. A ticker is tradable on ``t`` exactly
  when its price on ``t`` is present; every built-in gives an untradable ticker weight exactly 0
  (a non-zero one is a ``StrategyOutputError`` in the engine). A trailing-window signal is
  defined for a ticker only when the whole window is inside its listed life (pandas rolling with
  ``min_periods`` equal to the window, or both ends of a price ratio present): pre-listing NaNs
  are never read as data. A date on which no ticker has a signal, after the first date that
  has one, is an all-cash row (weights 0), never a NaN row and never a stale row.
* **Weights.** Long-only and summing to 1, except ``trend_vol_target`` which is long/flat with
  a gross exposure ``<= max_leverage`` (the rest is cash, earning the risk-free rate).
* **Ties** in rankings are broken by column order (``rank(method="first")``), so results are
  deterministic.

Bad parameter values raise :class:`RegistryError` (they come from the sleeve registry); a
lookback longer than the history raises :class:`PriceDataError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from quant_meta_assets.errors import RegistryError
from quant_meta_assets.prices import check_lookback, period_ends

TRADING_DAYS = 252

__all__ = [
    "BUILTIN_STRATEGIES",
    "PARAM_SPECS",
    "ParamSpec",
    "equal_weight",
    "low_volatility",
    "min_variance",
    "momentum_12_1",
    "short_term_reversal",
    "trend_vol_target",
]


def _positive_int(name: str, value: object, strategy: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise RegistryError(f"{strategy}: parameter {name!r} must be a positive integer, got {value!r}")
    return int(value)


def _positive_float(name: str, value: object, strategy: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
        np.isfinite(value) and value > 0
    ):
        raise RegistryError(f"{strategy}: parameter {name!r} must be a finite number > 0, got {value!r}")
    return float(value)


def _daily_returns(prices: pd.DataFrame) -> pd.DataFrame:
    """Simple returns on the full price index (first row NaN), so rolling windows stay aligned."""
    return prices / prices.shift(1) - 1.0


def _from_first_signal(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` from its first row with any defined (non-NaN) value: the warm-up rows are dropped,
    a later row with none stays (it becomes an all-cash row)."""
    defined = frame.notna().any(axis=1).to_numpy()
    return frame.iloc[int(np.argmax(defined)) :] if defined.any() else frame.iloc[0:0]


def _normalise(weights: pd.DataFrame) -> pd.DataFrame:
    """Rows scaled to sum to 1; a row with nothing to hold is all cash (zeros)."""
    total = weights.sum(axis=1)
    return weights.div(total.where(total > 0), axis=0).fillna(0.0)


def _top_n_equal_weight(score: pd.DataFrame, top_n: int, largest: bool) -> pd.DataFrame:
    """Equal weight on the ``top_n`` best defined scores per row (fewer when fewer are defined);
    warm-up rows with no defined score are dropped."""
    score = _from_first_signal(score)
    ranks = score.rank(axis=1, ascending=not largest, method="first")
    return _normalise((ranks <= top_n).astype("float64"))


def momentum_12_1(
    prices: pd.DataFrame, lookback: int = 252, skip: int = 21, top_n: int = 5
) -> pd.DataFrame:
    """Cross-sectional 12-1 momentum: equal weight on the ``top_n`` best ``P[t-skip]/P[t-lookback]-1``.

    Defaults: 252-day formation period, skipping the most recent 21 days (short-term reversal),
    top 5 of the universe. First weight row: the ``lookback``-th row after the start.
    """
    lookback = _positive_int("lookback", lookback, "momentum_12_1")
    top_n = _positive_int("top_n", top_n, "momentum_12_1")
    if isinstance(skip, bool) or not isinstance(skip, (int, np.integer)) or not 0 <= skip < lookback:
        raise RegistryError(f"momentum_12_1: parameter 'skip' must be an integer in [0, lookback), got {skip!r}")
    check_lookback(prices, lookback, "momentum_12_1 lookback")
    score = (prices.shift(int(skip)) / prices.shift(lookback) - 1.0).where(prices.notna())  # tradable at t
    return _top_n_equal_weight(score, top_n, largest=True)


def short_term_reversal(prices: pd.DataFrame, lookback: int = 5, top_n: int = 5) -> pd.DataFrame:
    """Short-term reversal: equal weight on the ``top_n`` worst trailing ``lookback``-day returns."""
    lookback = _positive_int("lookback", lookback, "short_term_reversal")
    top_n = _positive_int("top_n", top_n, "short_term_reversal")
    check_lookback(prices, lookback, "short_term_reversal lookback")
    score = prices / prices.shift(lookback) - 1.0
    return _top_n_equal_weight(score, top_n, largest=False)


def low_volatility(prices: pd.DataFrame, lookback: int = 63, top_n: int | None = 5) -> pd.DataFrame:
    """Low volatility: the ``top_n`` lowest trailing-vol assets, weighted by inverse volatility.

    Volatility is the std (ddof=1) of the last ``lookback`` daily returns. ``top_n=None`` holds
    every asset (plain inverse-vol). An asset with zero trailing vol is skipped on that date.
    """
    lookback = _positive_int("lookback", lookback, "low_volatility")
    if lookback < 2:
        raise RegistryError(f"low_volatility: parameter 'lookback' must be >= 2, got {lookback!r}")
    n = prices.shape[1]
    top_n = n if top_n is None else _positive_int("top_n", top_n, "low_volatility")
    check_lookback(prices, lookback, "low_volatility lookback")
    vol = _daily_returns(prices).rolling(lookback, min_periods=lookback).std(ddof=1)
    vol = _from_first_signal(vol.where(vol > 0))  # defined => the return of t exists => tradable at t
    ranks = vol.rank(axis=1, ascending=True, method="first")
    inv = (1.0 / vol).where(ranks <= top_n, 0.0).fillna(0.0)
    return _normalise(inv)


def trend_vol_target(
    prices: pd.DataFrame,
    lookback: int = 252,
    vol_lookback: int = 63,
    target_vol: float = 0.10,
    max_leverage: float = 1.0,
) -> pd.DataFrame:
    """Time-series trend, long/flat, scaled to an ex-ante portfolio volatility of ``target_vol``.

    Asset ``i`` is held when its trailing ``lookback``-day return is > 0. The held assets get
    inverse-volatility shapes ``1 / sigma_i`` (equal stand-alone risk; ``sigma_i`` the trailing
    ``vol_lookback``-day std, ddof=1), and the whole book is then scaled so that its ex-ante
    volatility under the trailing ``vol_lookback``-day sample covariance (ddof=1, annualised with
    sqrt 252) is exactly ``target_vol``: diversification between the held assets is counted, so the
    parameter means what it says. If that needs a gross exposure above ``max_leverage`` the row is
    scaled down to exactly ``max_leverage`` (the ex-ante volatility is then below target); the rest
    is cash (earning the risk-free rate in the sleeve engine). An asset with zero trailing vol is
    not held; a row with no held asset is all cash.
    """
    lookback = _positive_int("lookback", lookback, "trend_vol_target")
    vol_lookback = _positive_int("vol_lookback", vol_lookback, "trend_vol_target")
    if vol_lookback < 2:
        raise RegistryError(f"trend_vol_target: parameter 'vol_lookback' must be >= 2, got {vol_lookback!r}")
    target_vol = _positive_float("target_vol", target_vol, "trend_vol_target")
    max_leverage = _positive_float("max_leverage", max_leverage, "trend_vol_target")
    check_lookback(prices, max(lookback, vol_lookback), "trend_vol_target lookback")

    rets = _daily_returns(prices)
    trend = prices / prices.shift(lookback) - 1.0
    sigma = rets.rolling(vol_lookback, min_periods=vol_lookback).std(ddof=1)
    signal = trend.notna() & sigma.notna()  # per ticker: both windows inside its listed life
    first = int(np.argmax(signal.any(axis=1).to_numpy())) if signal.to_numpy().any() else len(prices)
    defined = pd.Series(np.arange(len(prices)) >= first, index=prices.index)
    trend, sigma = trend[defined], sigma[defined]
    hold = (trend > 0) & (sigma > 0)  # NaN compares False: a ticker without a signal is not held
    raw = (1.0 / sigma.where(hold)).fillna(0.0).to_numpy()
    # ex-ante variance of each row's book = sample variance (ddof=1) of that book's returns over the
    # trailing window: w' S w without forming S (O(T x window x N) instead of O(T x N^2))
    pos = np.flatnonzero(defined.to_numpy())
    # a held ticker's window is complete (its sigma is defined); the others' NaNs are weighted by 0
    windows = np.lib.stride_tricks.sliding_window_view(np.nan_to_num(rets.to_numpy(), nan=0.0), vol_lookback, axis=0)
    ex_ante_vol = np.empty(len(pos))
    for lo in range(0, len(pos), 512):  # chunks bound the memory at 512 x N x window floats
        book = np.einsum("tnv,tn->tv", windows[pos[lo : lo + 512] - vol_lookback + 1], raw[lo : lo + 512])
        ex_ante_vol[lo : lo + 512] = book.std(axis=1, ddof=1) * np.sqrt(TRADING_DAYS)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(ex_ante_vol > 0, target_vol / ex_ante_vol, 0.0)
    weights = raw * scale[:, None]
    gross = weights.sum(axis=1)
    cap = np.minimum(1.0, max_leverage / np.where(gross > 0, gross, np.inf))
    return pd.DataFrame(weights * cap[:, None], index=trend.index, columns=prices.columns)


def _min_variance_weights(cov: np.ndarray) -> np.ndarray:
    """Exact long-only minimum variance: argmin w'Cw s.t. sum w = 1, w >= 0.

    KKT: C w = lam 1 + nu, nu >= 0, nu'w = 0, lam = w'Cw > 0. With x = w / lam this is exactly
    the KKT system of min_{x >= 0} x'Cx - 2 1'x = ||L'x - L^{-1} 1||^2 + const (C = L L'),
    a non-negative least squares problem solved exactly by Lawson-Hanson; then w = x / sum x.
    """
    from scipy.linalg import cholesky, solve_triangular
    from scipy.optimize import nnls

    lower = cholesky(cov, lower=True)
    b = solve_triangular(lower, np.ones(cov.shape[0]), lower=True)
    x, _ = nnls(lower.T, b, maxiter=50 * cov.shape[0])
    return x / x.sum()


def min_variance(prices: pd.DataFrame, lookback: int = 252) -> pd.DataFrame:
    """Long-only minimum variance on a Ledoit-Wolf covariance of the trailing ``lookback`` returns.

    Solved exactly (NNLS reformulation of the KKT conditions, see ``_min_variance_weights``) on
    month-end dates only, from the first month end with ``lookback`` returns available.
    """
    from sklearn import config_context
    from sklearn.covariance import ledoit_wolf

    lookback = _positive_int("lookback", lookback, "min_variance")
    if lookback < 2:
        raise RegistryError(f"min_variance: parameter 'lookback' must be >= 2, got {lookback!r}")
    check_lookback(prices, lookback, "min_variance lookback")
    rets = _daily_returns(prices).to_numpy()
    positions = np.flatnonzero(prices.index.isin(period_ends(prices.index, "monthly")))
    positions = positions[positions >= lookback]  # rows 1..pos hold returns; need `lookback` of them
    rows, dates = [], []
    # Each window is restricted to the tickers with all its returns (listed for the whole window,
    # hence tradable at its last date), so it is finite: sklearn's input and parameter checks,
    # 60% of each call on a 252 x 20 window, are skipped; same numbers.
    with config_context(assume_finite=True, skip_parameter_validation=True):
        for pos in positions:
            window = rets[pos - lookback + 1 : pos + 1]
            full = np.isfinite(window).all(axis=0)
            row = np.zeros(prices.shape[1])
            if full.sum() == 1:
                row[full] = 1.0
            elif full.any():
                cov, _ = ledoit_wolf(window[:, full] * 100.0)  # percent returns: better conditioned, same argmin
                row[full] = _min_variance_weights(cov)
            elif not rows:
                continue  # warm-up: no ticker has a whole window yet
            rows.append(row)
            dates.append(prices.index[pos])
    return pd.DataFrame(
        np.asarray(rows, dtype="float64").reshape(len(rows), prices.shape[1]),
        index=pd.DatetimeIndex(dates, name=prices.index.name),
        columns=prices.columns,
    )


def equal_weight(prices: pd.DataFrame) -> pd.DataFrame:
    """1/N over the tickers tradable on each date (every ticker when none lists or delists)."""
    listed = prices.notna()
    if listed.to_numpy().all():
        n = prices.shape[1]
        return pd.DataFrame(1.0 / n, index=prices.index, columns=prices.columns, dtype="float64")
    return _normalise(_from_first_signal(listed.astype("float64").where(listed)).fillna(0.0))


# Warm-up declarations (incremental updates, docs/incremental.md): ``fn.warmup(**params)`` is the
# number of price rows ending at ``t`` that decide the target row of ``t`` (and whether there is
# one). A plug-in declares its own the same way; one without it is recomputed in full.
momentum_12_1.warmup = lambda lookback=252, skip=21, top_n=5: int(lookback) + 1  # P[t-lookback] .. P[t]
short_term_reversal.warmup = lambda lookback=5, top_n=5: int(lookback) + 1
low_volatility.warmup = lambda lookback=63, top_n=5: int(lookback) + 1  # lookback returns
trend_vol_target.warmup = (lambda lookback=252, vol_lookback=63, target_vol=0.10, max_leverage=1.0:
                           max(int(lookback), int(vol_lookback)) + 1)
min_variance.warmup = lambda lookback=252: int(lookback) + 1  # lookback returns up to a month end
equal_weight.warmup = lambda: 1  # the tickers tradable on t


BUILTIN_STRATEGIES: dict[str, Callable[..., pd.DataFrame]] = {
    "momentum_12_1": momentum_12_1,
    "short_term_reversal": short_term_reversal,
    "low_volatility": low_volatility,
    "trend_vol_target": trend_vol_target,
    "min_variance": min_variance,
    "equal_weight": equal_weight,
}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of a built-in strategy: its type, its range and what it means.

    The registry checks every value against this at load, before any Ray starts (the strategy
    checks again on the worker); ``docs/strategies.md`` is generated from it.
    """

    kind: str  # "int" or "float"
    minimum: float
    meaning: str
    none_allowed: bool = False  # ``null`` in YAML is a valid value (e.g. top_n: null = every ticker)
    below: str | None = None  # another param of the same strategy this one must stay below

    def describe(self) -> str:
        """The rule in words, e.g. ``integer >= 1`` or ``number > 0``."""
        text = f"integer >= {self.minimum:g}" if self.kind == "int" else f"number > {self.minimum:g}"
        if self.below:
            text += f" and < {self.below}"
        return text + (", or null" if self.none_allowed else "")

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not valid, or None when it is."""
        if value is None:
            return None if self.none_allowed else f"must be an {self.describe()}, got null"
        if self.kind == "int":
            ok = not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= self.minimum
        else:
            ok = (
                not isinstance(value, bool)
                and isinstance(value, (int, float, np.number))
                and bool(np.isfinite(value))
                and value > self.minimum
            )
        article = "an" if self.kind == "int" else "a"
        return None if ok else f"must be {article} {self.describe()}, got {value!r}"


# Every built-in's params: their names and defaults come from the function's signature (a test
# checks that the two agree); the type, range and meaning from here.
PARAM_SPECS: dict[str, dict[str, ParamSpec]] = {
    "momentum_12_1": {
        "lookback": ParamSpec("int", 1, "formation period in trading days: the score is P[t-skip] / P[t-lookback] - 1"),
        "skip": ParamSpec("int", 0, "most recent trading days left out of the score (short-term reversal)",
                          below="lookback"),
        "top_n": ParamSpec("int", 1, "number of tickers held, equally weighted (the best scores)"),
    },
    "short_term_reversal": {
        "lookback": ParamSpec("int", 1, "trading days of the trailing return that is ranked"),
        "top_n": ParamSpec("int", 1, "number of tickers held, equally weighted (the worst trailing returns)"),
    },
    "low_volatility": {
        "lookback": ParamSpec("int", 2, "trading days of the trailing volatility (std of daily returns, ddof=1)"),
        "top_n": ParamSpec("int", 1, "number of lowest-volatility tickers held, weighted by inverse volatility; "
                           "null holds every ticker", none_allowed=True),
    },
    "trend_vol_target": {
        "lookback": ParamSpec("int", 1, "trading days of the trailing return: a ticker is held while it is > 0"),
        "vol_lookback": ParamSpec("int", 2, "trading days of the trailing volatility and covariance"),
        "target_vol": ParamSpec("float", 0, "ex-ante annual volatility of the sleeve (0.10 = 10%)"),
        "max_leverage": ParamSpec("float", 0, "cap on the gross exposure; the rest is cash earning the risk-free rate"),
    },
    "min_variance": {
        "lookback": ParamSpec("int", 2, "trading days of returns in the Ledoit-Wolf covariance, solved at month ends"),
    },
    "equal_weight": {},
}
