"""The benchmark the report compares the book with, and what kind of index it is.

A benchmark is an index level series plus the one fact that decides how to read the comparison:
whether it is a PRICE index (no dividends) or a TOTAL RETURN index (dividends reinvested). The
stocks' prices are dividend-adjusted closes, so against a price index every excess return and
alpha is flattered by the index's dividend yield; the report says which it is near its top.

Where it comes from:

- ``$QUANT_META_BENCHMARK``: a CSV or Parquet file of the index's daily levels (a ``date`` column
  and one value column), with ``$QUANT_META_BENCHMARK_KIND`` = ``total_return`` or ``price``
  (required: the file cannot say) and optionally ``$QUANT_META_BENCHMARK_NAME`` (default: the value
  column's header).
- otherwise, with the bundled prices: skfolio's S&P 500 index, a price index;
- otherwise (a user price file and no benchmark file): none, and the benchmark-relative metrics
  are empty.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from quant_meta_assets.errors import PriceDataError

BENCHMARK_ENV = "QUANT_META_BENCHMARK"
BENCHMARK_KIND_ENV = "QUANT_META_BENCHMARK_KIND"
BENCHMARK_NAME_ENV = "QUANT_META_BENCHMARK_NAME"
KINDS = ("total_return", "price")

__all__ = ["BENCHMARK_ENV", "BENCHMARK_KIND_ENV", "BENCHMARK_NAME_ENV", "Benchmark", "as_benchmark",
           "load_benchmark"]


@dataclass(frozen=True)
class Benchmark:
    """Daily index levels, the index's name and whether it reinvests dividends."""

    levels: pd.Series
    name: str
    total_return: bool
    source: str

    def __post_init__(self) -> None:
        if not isinstance(self.total_return, bool):
            raise PriceDataError(f"benchmark {self.name!r}: total_return must be True or False")

    @property
    def kind(self) -> str:
        return "total_return" if self.total_return else "price"

    @property
    def label(self) -> str:
        """``S&P 500 (price index)`` or ``MSCI World (total return)``: the name a table shows."""
        return f"{self.name} ({'total return' if self.total_return else 'price index'})"

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "label": self.label, "source": self.source}


def as_benchmark(value: Benchmark | pd.Series | pd.DataFrame | None) -> Benchmark | None:
    """A ``Benchmark`` from what a caller passed: a bare series (or one-column frame) is read as a
    PRICE index, the conservative assumption: nothing says it reinvests dividends."""
    if value is None or isinstance(value, Benchmark):
        return value
    if isinstance(value, pd.DataFrame):
        if value.shape[1] != 1:
            raise PriceDataError(f"benchmark must be one level series, got columns {list(value.columns)}")
        value = value.iloc[:, 0]
    if not isinstance(value, pd.Series):
        raise PriceDataError(f"benchmark must be a Benchmark or a pandas Series, got {type(value).__name__}")
    name = str(value.name) if value.name is not None else "benchmark"
    return Benchmark(levels=value, name=name, total_return=False, source="passed in (kind not stated: read as price)")


def _kind_from_env(path: str) -> bool:
    kind = (os.environ.get(BENCHMARK_KIND_ENV) or "").strip().lower()
    if kind not in KINDS:
        shown = f"is {kind!r}" if kind else "is not set"
        raise PriceDataError(
            f"${BENCHMARK_KIND_ENV} {shown}: say what the benchmark file {path!r} is, 'total_return' "
            "(dividends reinvested) or 'price' (a price index, no dividends)"
        )
    return kind == "total_return"


def _read_levels(path: str) -> pd.Series:
    """The one value column of a date x value CSV/Parquet file, validated like the prices."""
    from quant_meta_assets.prices import load_prices  # same parser and checks as a price file

    file = Path(path)
    if not file.is_file():
        raise PriceDataError(f"${BENCHMARK_ENV} = {path!r}: no such file")
    frame = load_prices(file)
    if frame.shape[1] != 1:
        raise PriceDataError(
            f"benchmark file {path!r} must have a date column and ONE value column, got {list(frame.columns)}"
        )
    series = frame.iloc[:, 0]
    if series.isna().any():
        first = series.index[series.isna().to_numpy()][0]
        raise PriceDataError(f"benchmark file {path!r} has no level on {first.date()}")
    return series


def load_benchmark() -> Benchmark | None:
    """The configured benchmark (module docstring), or ``None``."""
    path = (os.environ.get(BENCHMARK_ENV) or "").strip()
    if path:
        total_return = _kind_from_env(path)
        levels = _read_levels(path)
        name = (os.environ.get(BENCHMARK_NAME_ENV) or "").strip() or str(levels.name)
        return Benchmark(levels=levels.rename(name), name=name, total_return=total_return,
                         source=f"benchmark file {Path(path).name!r}")
    from quant_meta_assets.prices import load_benchmark as bundled_index

    levels = bundled_index()
    if levels is None:
        return None
    return Benchmark(levels=levels, name="S&P 500", total_return=False, source="skfolio load_sp500_index()")
