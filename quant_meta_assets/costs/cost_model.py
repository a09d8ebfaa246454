"""One cost model for every view of the book: a trade's cost belongs to the asset, not to the account.

Formulas (they follow cvxportfolio's ``TransactionCost`` / ``HoldingCost``; no code is taken from it).
Weights, trades and costs are fractions of the book's value at the start of the day.

* **Half-spread** ``h_i`` (one-way bps, per ticker, default ``default_half_spread_bps``): a trade
  ``z_i`` costs ``h_i |z_i|``. A sleeve's registry ``cost_bps`` is that sleeve's ``h`` on every asset
  it trades (in its own account and, for its share of a netted trade, in the book).
* **Market impact** (only when an average daily volume ``ADV_i`` in currency is given, and only in
  the capacity analysis, ``capacity.py``): ``b σ_i |z_i| (|z_i| AUM / ADV_i)^(exponent - 1)``,
  ``σ_i`` the asset's daily volatility, ``exponent = 1.5`` (square root), ``b = impact_coefficient``.
* **Borrow fee** ``f_i`` (bps/yr, per ticker, default ``default_borrow_bps``) on each short position,
  and a **funding spread** ``s`` (bps/yr over rf) on borrowed cash ``max(Σ_i w_i - 1, 0)``; both are
  converted to daily rates geometrically, ``(1 + x)^(1/252) - 1``, like the risk-free rate (``rates.py``).

Inputs: ``load_cost_model()`` reads ``$QUANT_META_COSTS`` (a CSV with a ``ticker`` column and any of
``half_spread_bps``, ``borrow_bps``, ``adv``; an empty cell means the default), the default
borrow fee ``$QUANT_META_BORROW_BPS`` and the funding spread ``$QUANT_META_FUNDING_SPREAD_BPS``.
The default half-spread is the caller's (the report's run config ``cost_bps``, default 5 bps).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from quant_meta_assets.errors import StageInputError
from quant_meta_assets.rates import PERIODS_PER_YEAR
from quant_meta_assets.settings import BORROW_BPS_ENV, COSTS_FILE_ENV, FUNDING_SPREAD_BPS_ENV, env_number

__all__ = ["DEFAULT_HALF_SPREAD_BPS", "CostModel", "annual_bps_to_daily", "load_cost_model"]

DEFAULT_HALF_SPREAD_BPS = 5.0
"""Default one-way cost of a trade (the registry's default sleeve cost and its cheapest sleeve)."""

CSV_COLUMNS = ("half_spread_bps", "borrow_bps", "adv")


def annual_bps_to_daily(bps_per_year):
    """bps per year -> a daily decimal rate, geometric: ``(1 + bps/1e4)^(1/252) - 1``."""
    return (1.0 + np.asarray(bps_per_year, dtype=float) / 1e4) ** (1.0 / PERIODS_PER_YEAR) - 1.0


def _nonnegative(value, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StageInputError(f"cost model: {what} must be a number >= 0, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise StageInputError(f"cost model: {what} must be a finite number >= 0, got {value!r}")
    return number


@dataclass(frozen=True)
class CostModel:
    """Per-asset trading and holding costs (see the module docstring).

    ``half_spread_bps`` / ``borrow_bps``: ticker -> bps (one-way / per year); a ticker not listed
    pays the default. ``adv``: ticker -> average daily volume in currency (a Series), or a date x
    ticker panel (a DataFrame); ``None`` = no impact model.
    """

    default_half_spread_bps: float = DEFAULT_HALF_SPREAD_BPS
    half_spread_bps: Mapping[str, float] = field(default_factory=dict)
    default_borrow_bps: float = 0.0
    borrow_bps: Mapping[str, float] = field(default_factory=dict)
    funding_spread_bps: float = 0.0
    adv: pd.Series | pd.DataFrame | None = None
    impact_coefficient: float = 1.0
    impact_exponent: float = 1.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "default_half_spread_bps",
                           _nonnegative(self.default_half_spread_bps, "the default half-spread (bps)"))
        object.__setattr__(self, "default_borrow_bps",
                           _nonnegative(self.default_borrow_bps, "the default borrow fee (bps/yr)"))
        object.__setattr__(self, "funding_spread_bps", _nonnegative(self.funding_spread_bps, "the funding spread (bps/yr)"))
        object.__setattr__(self, "half_spread_bps", {str(t): _nonnegative(v, f"the half-spread of {t!r} (bps)")
                                                     for t, v in dict(self.half_spread_bps).items()})
        object.__setattr__(self, "borrow_bps", {str(t): _nonnegative(v, f"the borrow fee of {t!r} (bps/yr)")
                                                for t, v in dict(self.borrow_bps).items()})
        object.__setattr__(self, "impact_coefficient", _nonnegative(self.impact_coefficient, "the impact coefficient b"))
        if not (math.isfinite(float(self.impact_exponent)) and float(self.impact_exponent) >= 1.0):
            raise StageInputError(f"cost model: the impact exponent must be >= 1, got {self.impact_exponent!r}")
        if self.adv is not None:
            values = np.asarray(self.adv, dtype=float)
            bad = ~np.isfinite(values) | (values <= 0)
            if bad.any():
                flat = int(np.flatnonzero(bad.ravel())[0])
                if isinstance(self.adv, pd.DataFrame):
                    row, col = divmod(flat, self.adv.shape[1])
                    where = f"{self.adv.columns[col]!r} on {self.adv.index[row]}"
                else:
                    where = repr(self.adv.index[flat])
                raise StageInputError(f"cost model: the average daily volume of {where} must be a finite number > 0, "
                                      f"got {values.ravel()[flat]!r}")

    def with_default_half_spread(self, bps: float) -> CostModel:
        """The same model with another default half-spread (e.g. the report's run config ``cost_bps``)."""
        return CostModel(**{**self.__dict__, "default_half_spread_bps": bps})

    def half_spreads(self, tickers: Iterable[str]) -> np.ndarray:
        """One-way cost per unit traded (decimal) of each ticker."""
        return np.array([self.half_spread_bps.get(str(t), self.default_half_spread_bps) for t in tickers]) / 1e4

    def borrow_daily(self, tickers: Iterable[str]) -> np.ndarray:
        """Daily borrow fee (decimal) on a short position in each ticker."""
        return annual_bps_to_daily([self.borrow_bps.get(str(t), self.default_borrow_bps) for t in tickers]).reshape(-1)

    @property
    def funding_daily(self) -> float:
        """Daily spread over rf (decimal) on borrowed cash."""
        return float(annual_bps_to_daily(self.funding_spread_bps))

    @property
    def has_holding_costs(self) -> bool:
        return bool(self.default_borrow_bps or any(self.borrow_bps.values()) or self.funding_spread_bps)

    def adv_panel(self, index: pd.DatetimeIndex, tickers: Iterable[str]) -> np.ndarray:
        """ADV (currency) on ``index`` x ``tickers``; a StageInputError names a ticker or day without one."""
        if self.adv is None:
            raise StageInputError("cost model: no average daily volume (adv) was given, so there is no impact model")
        tickers = [str(t) for t in tickers]
        if isinstance(self.adv, pd.DataFrame):
            missing = [t for t in tickers if t not in self.adv.columns]
            if missing:
                raise StageInputError(f"cost model: no average daily volume for ticker(s) {missing[:5]}")
            panel = self.adv.reindex(index=index)[tickers]
            if panel.isna().any().any():
                row = int(np.flatnonzero(panel.isna().any(axis=1).to_numpy())[0])
                col = panel.columns[panel.iloc[row].isna().to_numpy()][0]
                raise StageInputError(f"cost model: no average daily volume for {col!r} on {index[row].date()}")
            return panel.to_numpy(dtype=float)
        missing = [t for t in tickers if t not in self.adv.index]
        if missing:
            raise StageInputError(f"cost model: no average daily volume for ticker(s) {missing[:5]}")
        return np.tile(self.adv.reindex(tickers).to_numpy(dtype=float), (len(index), 1))


def _finite_bps(raw: str) -> float:
    """``float(raw)``, blank = 0; a ValueError when it is not finite (``env_number`` names the rule)."""
    value = float(raw) if raw.strip() else 0.0
    if not math.isfinite(value):
        raise ValueError(raw)
    return value


def _env_bps(env: str) -> float:
    """bps per year from ``$env``: unset or blank = 0, else a finite number >= 0."""
    return env_number(env, 0.0, _finite_bps, minimum=0, unit="a finite number of bps per year")


def load_cost_model(path: str | Path | None = None, *,
                    default_half_spread_bps: float = DEFAULT_HALF_SPREAD_BPS) -> CostModel:
    """The project's cost model: per-ticker values from the CSV at ``path`` (``None`` =
    ``$QUANT_META_COSTS``, unset = none), defaults from the environment (see the module docstring)."""
    path = path if path is not None else (os.environ.get(COSTS_FILE_ENV) or None)
    spreads: dict[str, float] = {}
    borrow: dict[str, float] = {}
    adv = None
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise StageInputError(f"cost model: no cost file at {path} (set {COSTS_FILE_ENV} to a CSV)")
        table = pd.read_csv(path, dtype={"ticker": str})
        if "ticker" not in table.columns:
            raise StageInputError(f"cost model: {path.name} needs a 'ticker' column, got {list(table.columns)}")
        unknown = [c for c in table.columns if c != "ticker" and c not in CSV_COLUMNS]
        if unknown:
            raise StageInputError(f"cost model: {path.name} has unknown column(s) {unknown}; known: {list(CSV_COLUMNS)}")
        if table["ticker"].isna().any() or table["ticker"].duplicated().any():
            dup = table["ticker"][table["ticker"].duplicated()].tolist()
            raise StageInputError(f"cost model: {path.name} has empty or repeated tickers {dup[:5]}")
        for row in table.itertuples(index=False):
            ticker = str(row.ticker)
            for column, target in (("half_spread_bps", spreads), ("borrow_bps", borrow)):
                value = getattr(row, column, float("nan"))
                if not pd.isna(value):
                    target[ticker] = _nonnegative(value, f"{column} of {ticker!r} in {path.name}")
        if "adv" in table.columns:
            given = table.dropna(subset=["adv"])
            if len(given):
                if len(given) != len(table):
                    missing = table.loc[table["adv"].isna(), "ticker"].tolist()
                    raise StageInputError(f"cost model: {path.name} gives adv for some tickers but not for {missing[:5]}")
                adv = pd.Series(given["adv"].to_numpy(dtype=float), index=given["ticker"].astype(str), name="adv")
    return CostModel(default_half_spread_bps=default_half_spread_bps, half_spread_bps=spreads,
                     default_borrow_bps=_env_bps(BORROW_BPS_ENV), borrow_bps=borrow,
                     funding_spread_bps=_env_bps(FUNDING_SPREAD_BPS_ENV), adv=adv)
