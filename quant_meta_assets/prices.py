"""Load and validate daily adjusted close prices.

Contract (ARCHITECTURE.md): a ``pd.DataFrame`` with a sorted, unique, tz-naive ``DatetimeIndex``
named ``date`` (microsecond resolution, the pandas 3 default), one float64 column per ticker,
every value finite and > 0.

Missing-data policy (point in time): a ticker exists from its listing to its delisting. Its
price is NaN before its first price (not listed yet) and after its last price (delisted); a NaN
*between* its first and last price is a gap and is refused with a message naming the ticker, the
first missing date and the number of missing cells (we never forward-fill or back-fill: a
silently filled price is a silently wrong return). A ticker with no price at all is refused.
Every present price is finite and > 0. Strategies see a ticker as tradable on a date exactly when
its price on that date is present (``tradable``); the sleeve engine closes a position at the last
price when its ticker delists (``sleeves.engine``).

Sources, in order: the ``path`` argument, the ``QUANT_META_PRICES`` environment variable,
else ``skfolio.datasets.load_sp500_dataset()`` (offline, bundled with skfolio).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from quant_meta_assets import settings
from quant_meta_assets.errors import PriceDataError, RegistryError

PRICES_ENV_VAR = settings.PRICES_ENV
REBALANCE_FREQUENCIES = ("daily", "weekly", "monthly", "quarterly")
_PERIOD_CODE = {"weekly": "W-SUN", "monthly": "M", "quarterly": "Q-DEC"}

__all__ = [
    "PRICES_ENV_VAR",
    "REBALANCE_FREQUENCIES",
    "PriceSource",
    "asset_returns",
    "check_lookback",
    "load_benchmark",
    "load_price_snapshot",
    "load_prices",
    "price_source",
    "period_ends",
    "tradable",
    "validate_prices",
]


# skfolio's bundled files: what load_sp500_dataset() / load_sp500_index() read
_DEFAULT_DATA = "sp500_dataset.csv.gz"
_DEFAULT_INDEX = "sp500_index.csv.gz"


@dataclass(frozen=True)
class PriceSource:
    """Where a price snapshot comes from, and its one identity.

    ``content_hash`` is the content hash of the *validated frame* (``sleeves.status.frame_hash``):
    the one prices hash of the project. It is the observable source's data version, the `prices`
    snapshot's, what every sleeve records as its ``prices_hash`` and what the gate, the sensors
    and the UI compare. Reformatting a file without changing a price changes nothing; any
    changed, added or removed price does. ``as_of`` is the last price date; ``bytes_hash`` the
    sha256 of the exact bytes that were parsed.
    """

    label: str
    content_hash: str
    as_of: str = ""
    bytes_hash: str = ""


def _bundled_bytes(name: str) -> bytes:
    """The bytes of one of skfolio's bundled data files, found without importing skfolio.

    Importing skfolio (scikit-learn, scipy, cvxpy) costs about 1.5 s per process; the prices
    step, the price sensor and the report only need its data files. The tests check the
    parsed frames against skfolio's own loaders.
    """
    from importlib.util import find_spec

    spec = find_spec("skfolio")
    if spec is None or not spec.submodule_search_locations:
        raise PriceDataError("the default price data needs skfolio installed (pip install skfolio)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not path.is_file():
        raise PriceDataError(f"skfolio's bundled data file {name!r} is missing from {path.parent}")
    return path.read_bytes()


def _parse_bundled(data: bytes) -> pd.DataFrame:
    """A bundled file's frame, parsed as skfolio's loaders do (gzip CSV, dated index)."""
    frame = pd.read_csv(io.BytesIO(gzip.decompress(data)), sep=",", index_col=0)
    frame.index = pd.to_datetime(frame.index, format="%Y-%m-%d")
    return frame


def _source_path(path: str | os.PathLike[str] | None) -> Path | None:
    """The user's price file (argument, else $QUANT_META_PRICES), or None for the bundled data."""
    if path is None:
        env = os.environ.get(PRICES_ENV_VAR)
        if env is None or env.strip() == "":
            return None
        path = env
    return Path(path)


def _read_source_bytes(file: Path) -> bytes:
    source = f"price file {str(file)!r}"
    if not file.is_file():
        raise PriceDataError(f"{source} does not exist or is not a file")
    data = file.read_bytes()
    if not data:
        raise PriceDataError(f"{source} is empty (0 bytes)")
    return data


_DEFAULT_LABEL = "skfolio load_sp500_dataset()"


def _default_source_bytes() -> bytes:
    return _bundled_bytes(_DEFAULT_DATA)


_IDENTITY_CACHE: dict[str, tuple[str, str]] = {}  # bytes sha256 -> (frame hash, as_of)


def price_source(path: str | os.PathLike[str] | None = None) -> PriceSource:
    """Identify the current price source by the content of its validated frame.

    Cheap enough to poll: the file's bytes are hashed on every call, and parsed only when those
    bytes were not seen before in this process.
    """
    file = _source_path(path)
    data = _default_source_bytes() if file is None else _read_source_bytes(file)
    label = _DEFAULT_LABEL if file is None else f"price file {str(file)!r}"
    bytes_hash = hashlib.sha256(data).hexdigest()
    known = _IDENTITY_CACHE.get(bytes_hash)
    if known is None:
        return _identify(_parse(file, data), label, bytes_hash)[1]
    return PriceSource(label, known[0], known[1], bytes_hash)


def _identify(frame: pd.DataFrame, label: str, bytes_hash: str) -> tuple[pd.DataFrame, PriceSource]:
    from quant_meta_assets.sleeves.status import frame_hash

    identity = (frame_hash(frame), str(frame.index[-1].date()))
    if len(_IDENTITY_CACHE) > 64:
        _IDENTITY_CACHE.clear()
    _IDENTITY_CACHE[bytes_hash] = identity
    return frame, PriceSource(label, identity[0], identity[1], bytes_hash)


def _parse(file: Path | None, data: bytes) -> pd.DataFrame:
    """The validated frame of ``data`` (the bytes of ``file``, or of the bundled data when None)."""
    if file is None:
        return validate_prices(_parse_bundled(data), source=_DEFAULT_LABEL)
    source = f"price file {str(file)!r}"
    suffix = file.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            raw = pd.read_parquet(io.BytesIO(data))
        elif suffix in (".csv", ".txt"):
            raw = pd.read_csv(io.BytesIO(data))
        else:
            raise PriceDataError(
                f"{source} has unsupported extension {suffix!r}; use .csv or .parquet"
            )
    except PriceDataError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise PriceDataError(f"{source} is empty: {exc}") from exc
    except Exception as exc:  # unreadable file: name it and keep the cause
        raise PriceDataError(f"{source} could not be read: {type(exc).__name__}: {exc}") from exc
    return validate_prices(raw, source=source)


def load_price_snapshot(path: str | os.PathLike[str] | None = None) -> tuple[pd.DataFrame, PriceSource]:
    """Validated prices and their identity; the file is read once, so the identity is of exactly
    the bytes that were parsed even if the file is replaced meanwhile."""
    file = _source_path(path)
    data = _default_source_bytes() if file is None else _read_source_bytes(file)
    label = _DEFAULT_LABEL if file is None else f"price file {str(file)!r}"
    return _identify(_parse(file, data), label, hashlib.sha256(data).hexdigest())


def load_prices(path: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Load prices from ``path``, else ``$QUANT_META_PRICES``, else the bundled S&P 500 data.

    A user file is CSV (``.csv``, ``.txt``) or Parquet (``.parquet``, ``.pq``) in wide format: a
    ``date`` column (any case) or, for Parquet, a ``DatetimeIndex``; then one column per ticker.
    """
    return load_price_snapshot(path)[0]


def _extract_dates(frame: pd.DataFrame, source: str) -> tuple[pd.Series, pd.DataFrame]:
    """Return (raw date values, ticker columns) from a wide frame."""
    date_cols = [c for c in frame.columns if isinstance(c, str) and c.strip().lower() == "date"]
    if len(date_cols) > 1:
        raise PriceDataError(f"{source}: several date columns {date_cols!r}; keep exactly one")
    if date_cols:
        col = date_cols[0]
        return pd.Series(frame[col].to_numpy(), name="date"), frame.drop(columns=[col])
    if isinstance(frame.index, pd.DatetimeIndex):
        return pd.Series(frame.index, name="date"), frame
    raise PriceDataError(
        f"{source}: no date column (expected a column named 'date', any case, or a DatetimeIndex); "
        f"columns are {[str(c) for c in frame.columns][:10]!r}"
    )


def _parse_dates(raw: pd.Series, source: str) -> pd.DatetimeIndex:
    if isinstance(raw.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(raw):
        parsed = pd.DatetimeIndex(raw)
    else:
        parsed = pd.DatetimeIndex(pd.to_datetime(raw, errors="coerce", format="mixed"))
        bad = np.flatnonzero(np.asarray(parsed.isna()))
        if bad.size:
            i = int(bad[0])
            raise PriceDataError(
                f"{source}: unparseable date {raw.iloc[i]!r} at row {i} "
                f"({bad.size} unparseable date(s) in total)"
            )
    if parsed.isna().any():
        i = int(np.flatnonzero(parsed.isna())[0])
        raise PriceDataError(f"{source}: missing date (NaT) at row {i}")
    if parsed.tz is not None:  # keep the wall-clock date; the contract is tz-naive
        parsed = parsed.tz_localize(None)
    return parsed.as_unit("us")


def validate_prices(prices: pd.DataFrame, source: str = "prices") -> pd.DataFrame:
    """Return a clean float64 copy of ``prices`` or raise PriceDataError naming the problem."""
    if not isinstance(prices, pd.DataFrame):
        raise PriceDataError(f"{source}: expected a pandas DataFrame, got {type(prices).__name__}")
    if prices.shape[0] == 0 or prices.shape[1] == 0:
        raise PriceDataError(f"{source} is empty (shape {prices.shape})")

    raw_dates, body = _extract_dates(prices, source)
    if body.shape[1] == 0:
        raise PriceDataError(f"{source}: no ticker columns besides the date")
    dates = _parse_dates(raw_dates, source)

    tickers = [str(c) for c in body.columns]
    for c in tickers:
        if c.strip() == "" or c.startswith("Unnamed:"):
            raise PriceDataError(f"{source}: column with no ticker name ({c!r})")
    dup_tickers = sorted({t for t in tickers if tickers.count(t) > 1})
    if dup_tickers:
        raise PriceDataError(f"{source}: duplicate ticker column(s) {dup_tickers!r}")

    dup = dates.duplicated()
    if dup.any():
        first = dates[np.flatnonzero(dup)[0]]
        raise PriceDataError(
            f"{source}: duplicate date {first.date().isoformat()} ({int(dup.sum())} duplicate row(s))"
        )
    order = np.flatnonzero(np.diff(dates.asi8) < 0)
    if order.size:
        i = int(order[0]) + 1
        raise PriceDataError(
            f"{source}: dates not sorted ascending: {dates[i].date().isoformat()} comes after "
            f"{dates[i - 1].date().isoformat()} (row {i})"
        )

    columns: dict[str, np.ndarray] = {}
    for ticker, (_, col) in zip(tickers, body.items(), strict=True):
        if pd.api.types.is_bool_dtype(col) or not (
            pd.api.types.is_numeric_dtype(col) or col.dtype == object or pd.api.types.is_string_dtype(col)
        ):
            raise PriceDataError(f"{source}: column {ticker!r} is not numeric (dtype {col.dtype})")
        if pd.api.types.is_numeric_dtype(col):
            values = col.to_numpy(dtype="float64", na_value=np.nan)
        else:
            coerced = pd.to_numeric(col, errors="coerce")
            text_bad = coerced.isna().to_numpy() & col.notna().to_numpy()
            if text_bad.any():
                i = int(np.flatnonzero(text_bad)[0])
                raise PriceDataError(
                    f"{source}: column {ticker!r} is not numeric: value {col.iloc[i]!r} on "
                    f"{dates[i].date().isoformat()}"
                )
            values = coerced.to_numpy(dtype="float64", na_value=np.nan)
        columns[ticker] = values

    clean = pd.DataFrame(columns, index=pd.DatetimeIndex(dates, name="date"))
    arr = clean.to_numpy()
    present = ~np.isnan(arr)
    never = [tickers[j] for j in np.flatnonzero(~present.any(axis=0))]
    if never:
        raise PriceDataError(f"{source}: ticker(s) {never!r} have no price at all; drop the column(s)")
    for label, mask in (
        ("missing (NaN)", _gaps(present)),
        ("infinite", np.isinf(arr)),
        ("zero or negative", np.isfinite(arr) & (arr <= 0)),
    ):
        if mask.any():
            rows, cols = np.nonzero(mask)
            # report the first bad cell in date order
            k = int(np.lexsort((cols, rows))[0])
            ticker, date = tickers[cols[k]], clean.index[rows[k]].date().isoformat()
            value = arr[rows[k], cols[k]]
            hint = (
                f"; the gap is inside its listed life {clean.index[present[:, cols[k]]][0].date().isoformat()}.."
                f"{clean.index[present[:, cols[k]]][-1].date().isoformat()} (policy: NaN only before a "
                "ticker lists and after it delists; a gap is never filled)"
                if label.startswith("missing")
                else ""
            )
            raise PriceDataError(
                f"{source}: {label} price for ticker {ticker!r} on {date} (value {value!r}); "
                f"{int(mask.sum())} such cell(s) in total{hint}"
            )
    clean.columns = pd.Index(tickers)
    return clean


def _gaps(present: np.ndarray) -> np.ndarray:
    """True at the missing cells between each column's first and last present cell."""
    n = present.shape[0]
    rows = np.arange(n)[:, None]
    first = np.argmax(present, axis=0)
    last = n - 1 - np.argmax(present[::-1], axis=0)
    return ~present & (rows >= first) & (rows <= last)


def tradable(prices: pd.DataFrame) -> pd.DataFrame:
    """Date x ticker booleans: a ticker is tradable on a date when its price on that date is present
    (between its listing and its delisting, both included)."""
    return prices.notna()


def asset_returns(prices: pd.DataFrame) -> pd.DataFrame:
    """Simple daily returns ``P_t / P_{t-1} - 1``; the first row (no previous price) is dropped.

    NaN where either price is missing: before a ticker's second price, and after its last one."""
    return (prices / prices.shift(1) - 1.0).iloc[1:]


def load_benchmark() -> pd.Series | None:
    """S&P 500 index closes (skfolio) when the default price data is in use, else ``None``.

    The benchmark only matches the default universe; a user price file has no benchmark.
    """
    env = os.environ.get(PRICES_ENV_VAR)
    if env is not None and env.strip() != "":
        return None
    frame = validate_prices(_parse_bundled(_bundled_bytes(_DEFAULT_INDEX)), source="skfolio load_sp500_index()")
    series = frame.iloc[:, 0].rename("SP500")
    return series


def check_lookback(prices: pd.DataFrame, lookback: int, what: str = "lookback") -> None:
    """Raise PriceDataError if ``lookback`` (in rows of returns) needs more history than exists.

    A lookback of L returns needs L + 1 prices, so L must be < ``len(prices)``.
    """
    if isinstance(lookback, bool) or not isinstance(lookback, (int, np.integer)) or lookback < 1:
        raise PriceDataError(f"{what} must be a positive integer number of days, got {lookback!r}")
    n = len(prices)
    if lookback >= n:
        raise PriceDataError(
            f"{what} of {int(lookback)} days is longer than the price history: {n} rows "
            f"({n - 1} daily returns) available"
        )


def period_ends(index: pd.DatetimeIndex, rebalance: str) -> pd.DatetimeIndex:
    """Last date of each calendar period present in ``index`` (daily: every date).

    Weeks end on Sunday (so the last trading day is usually Friday), quarters end in
    Mar/Jun/Sep/Dec. The last date of ``index`` always closes its (possibly partial) period.
    """
    if rebalance not in REBALANCE_FREQUENCIES:
        raise RegistryError(
            f"rebalance must be one of {list(REBALANCE_FREQUENCIES)}, got {rebalance!r}"
        )
    index = pd.DatetimeIndex(index)
    if rebalance == "daily" or len(index) == 0:
        return index
    periods = index.to_period(_PERIOD_CODE[rebalance]).asi8
    is_last = np.append(periods[1:] != periods[:-1], True)
    return index[is_last]
