"""prices: loading (CSV, Parquet, env var, bundled default) and strict validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.errors import PriceDataError
from quant_meta_assets.prices import (
    PRICES_ENV_VAR,
    asset_returns,
    check_lookback,
    load_benchmark,
    load_prices,
    period_ends,
    tradable,
    validate_prices,
)


def _frame(n: int = 6) -> pd.DataFrame:
    idx = pd.bdate_range("2021-01-04", periods=n, name="date")
    return pd.DataFrame(
        {"AAA": np.linspace(10.0, 15.0, n), "BBB": np.linspace(20.0, 18.0, n)}, index=idx
    )


def _csv_text(rows: list[str], header: str = "date,AAA,BBB") -> str:
    return "\n".join([header, *rows]) + "\n"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRICES_ENV_VAR, raising=False)


def test_default_is_bundled_sp500() -> None:
    prices = load_prices()
    assert prices.shape == (8313, 20)
    assert prices.index.name == "date" and prices.index.tz is None
    assert prices.index.is_monotonic_increasing and prices.index.is_unique
    assert (prices.dtypes == "float64").all()
    assert np.isfinite(prices.to_numpy()).all() and (prices.to_numpy() > 0).all()
    bench = load_benchmark()
    assert isinstance(bench, pd.Series) and bench.name == "SP500"
    assert bench.index.equals(prices.index)


def test_bundled_data_read_without_skfolio_equals_skfolios_loaders() -> None:
    """The default data is read from skfolio's files without importing skfolio (1.5 s a
    process); skfolio's own loaders are the oracle."""
    import subprocess
    import sys

    from skfolio.datasets import load_sp500_dataset, load_sp500_index

    from quant_meta_assets.prices import validate_prices

    pd.testing.assert_frame_equal(load_prices(), validate_prices(load_sp500_dataset(), source="skfolio"))
    index = validate_prices(load_sp500_index(), source="skfolio").iloc[:, 0].rename("SP500")
    pd.testing.assert_series_equal(load_benchmark(), index)
    probe = ("import sys; from quant_meta_assets.prices import load_prices, load_benchmark; "
             "load_prices(); load_benchmark(); print('skfolio' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_csv_and_parquet_round_trip(tmp_path) -> None:
    frame = _frame()
    csv = tmp_path / "p.csv"
    frame.to_csv(csv)
    pd.testing.assert_frame_equal(load_prices(csv), frame, check_freq=False, check_column_type=False)
    pq = tmp_path / "p.parquet"
    frame.to_parquet(pq)  # DatetimeIndex form
    pd.testing.assert_frame_equal(load_prices(pq), frame, check_freq=False, check_column_type=False)
    pq2 = tmp_path / "p2.parquet"
    frame.reset_index().rename(columns={"date": "Date"}).to_parquet(pq2, index=False)  # column form
    pd.testing.assert_frame_equal(load_prices(pq2), frame, check_freq=False, check_column_type=False)


def test_env_var_override_and_no_benchmark(tmp_path, monkeypatch) -> None:
    frame = _frame()
    csv = tmp_path / "p.csv"
    frame.reset_index().rename(columns={"date": "DATE"}).to_csv(csv, index=False)
    monkeypatch.setenv(PRICES_ENV_VAR, str(csv))
    loaded = load_prices()
    assert list(loaded.columns) == ["AAA", "BBB"] and len(loaded) == 6
    assert load_benchmark() is None


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (_csv_text(["2021-01-04,1,2", "2021-01-04,1,2"]), ["duplicate date", "2021-01-04"]),
        (_csv_text(["2021-01-05,1,2", "2021-01-04,1,2"]), ["not sorted", "2021-01-04"]),
        (_csv_text(["2021-01-04,1,2", "not-a-date,1,2"]), ["unparseable date", "not-a-date"]),
        (_csv_text(["2021-01-04,1,2", "2021-01-05,,2", "2021-01-06,1,2"]),
         ["NaN", "'AAA'", "2021-01-05", "1 such", "inside its listed life 2021-01-04..2021-01-06"]),
        (_csv_text(["2021-01-04,,2", "2021-01-05,,2"]), ["'AAA'", "no price at all"]),
        (_csv_text(["2021-01-04,1,inf", "2021-01-05,1,inf"]), ["infinite", "'BBB'", "2021-01-04", "2 such"]),
        (_csv_text(["2021-01-04,1,2", "2021-01-05,0,2"]), ["zero or negative", "'AAA'", "2021-01-05"]),
        (_csv_text(["2021-01-04,1,2", "2021-01-05,1,-3"]), ["zero or negative", "'BBB'", "2021-01-05"]),
        (_csv_text(["2021-01-04,1,x", "2021-01-05,1,2"]), ["not numeric", "'BBB'", "'x'"]),
        (_csv_text(["2021-01-04,1,2"], header="when,AAA,BBB"), ["no date column"]),
        (_csv_text([]), ["empty"]),
    ],
)
def test_bad_csv_is_refused_with_a_precise_message(tmp_path, text: str, needles: list[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(PriceDataError) as info:
        load_prices(path)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    assert "bad.csv" in str(info.value)


def test_empty_file_and_missing_file(tmp_path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(PriceDataError, match="empty"):
        load_prices(empty)
    with pytest.raises(PriceDataError, match="does not exist"):
        load_prices(tmp_path / "nope.csv")


def test_nan_before_listing_and_after_delisting_is_kept() -> None:
    """Point in time: a ticker exists from its first price to its last; NaN outside is normal."""
    frame = _frame()
    frame.iloc[:2, 1] = np.nan  # BBB lists on 2021-01-06
    frame.iloc[4:, 0] = np.nan  # AAA's last price is on 2021-01-07
    out = validate_prices(frame)
    assert out.isna().to_numpy().sum() == 4
    assert tradable(out)["BBB"].tolist() == [False, False, True, True, True, True]
    assert tradable(out)["AAA"].tolist() == [True, True, True, True, False, False]
    rets = asset_returns(out)
    assert rets["BBB"].isna().tolist() == [True, True, False, False, False]  # no return on the listing day
    assert rets["AAA"].isna().tolist() == [False, False, False, True, True]


def test_a_gap_inside_a_listed_life_is_refused_naming_ticker_and_date() -> None:
    frame = _frame()
    frame.iloc[0, 1] = np.nan  # before listing: fine
    frame.iloc[3, 1] = np.nan  # inside BBB's life (2021-01-05..2021-01-11): a gap
    with pytest.raises(PriceDataError, match=r"missing \(NaN\) price for ticker 'BBB' on 2021-01-07.*1 such cell.*"
                                             r"inside its listed life 2021-01-05\.\.2021-01-11"):
        validate_prices(frame)


def test_validate_rejects_empty_frame_and_bool_column() -> None:
    with pytest.raises(PriceDataError, match="empty"):
        validate_prices(pd.DataFrame())
    frame = _frame()
    frame["FLAG"] = True
    with pytest.raises(PriceDataError, match="'FLAG' is not numeric"):
        validate_prices(frame)


def test_tz_aware_index_becomes_naive() -> None:
    frame = _frame()
    frame.index = frame.index.tz_localize("America/New_York")
    out = validate_prices(frame)
    assert out.index.tz is None and out.index[0] == pd.Timestamp("2021-01-04")


def test_asset_returns_simple_and_first_row_dropped() -> None:
    frame = _frame()
    rets = asset_returns(frame)
    assert rets.index.equals(frame.index[1:])
    expected = frame["AAA"].to_numpy()[1:] / frame["AAA"].to_numpy()[:-1] - 1
    np.testing.assert_allclose(rets["AAA"].to_numpy(), expected, rtol=0, atol=1e-15)


def test_check_lookback_names_both_numbers() -> None:
    frame = _frame(6)
    check_lookback(frame, 5)
    with pytest.raises(PriceDataError, match=r"lookback of 6 days.*6 rows"):
        check_lookback(frame, 6)
    with pytest.raises(PriceDataError, match="positive integer"):
        check_lookback(frame, 0)


def test_period_ends_are_last_dates_of_each_period() -> None:
    idx = pd.DatetimeIndex(["2021-01-28", "2021-01-29", "2021-02-01", "2021-03-31", "2021-04-01"])
    assert list(period_ends(idx, "monthly").strftime("%Y-%m-%d")) == [
        "2021-01-29", "2021-02-01", "2021-03-31", "2021-04-01"
    ]
    assert list(period_ends(idx, "quarterly").strftime("%Y-%m-%d")) == ["2021-03-31", "2021-04-01"]
    assert period_ends(idx, "daily").equals(idx)
    week = pd.bdate_range("2021-01-04", "2021-01-15")
    assert list(period_ends(week, "weekly").strftime("%a")) == ["Fri", "Fri"]
