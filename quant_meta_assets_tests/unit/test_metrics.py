"""metrics.py against quantstats (test-only oracle) where the conventions coincide, and against
plain numpy/scipy references everywhere (real data: skfolio S&P 500 daily prices).

Compared with quantstats 0.0.86 to 1e-8:
  cagr (qs uses count/periods years, same as ours), volatility, sharpe (rf=0 and rf>0: qs
  de-annualises rf as (1+rf)^(1/periods)-1, same as ours), sortino (qs downside = sum(neg^2)/count,
  same as mean(min(r,0)^2); with MAR=m ours equals qs with rf=m), max_drawdown (qs adds a phantom
  baseline of 1, same as ours), calmar, skew, kurtosis (pandas estimators), historical CVaR
  (qs ``cvar(method="historical")`` averages r <= quantile, same as ours up to sign), best/worst.
Not compared with quantstats, numpy reference only:
  var_95 (qs ``value_at_risk`` is parametric/normal, ours historical), hit_rate (qs ``win_rate``
  divides by non-zero days, ours by all live days), turnover (qs has none).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import quantstats as qs
import scipy.stats

from quant_meta_assets import metrics as m

TOL = 1e-8


@pytest.fixture(scope="module")
def real_returns() -> pd.DataFrame:
    from skfolio.datasets import load_sp500_dataset

    prices = load_sp500_dataset().loc["2012-01-01":, ["AAPL", "JPM", "XOM", "KO", "AMD"]]
    rets = prices.pct_change(fill_method=None).iloc[1:]
    rets["EW"] = rets[["AAPL", "JPM", "XOM", "KO", "AMD"]].mean(axis=1)  # daily fixed-mix 1/N
    return rets


def _series(real_returns):
    return [real_returns[c].rename(c) for c in real_returns.columns]


def test_against_quantstats(real_returns):
    for r in _series(real_returns):
        assert m.cagr(r) == pytest.approx(float(qs.stats.cagr(r)), abs=TOL)
        assert m.ann_vol(r) == pytest.approx(float(qs.stats.volatility(r)), abs=TOL)
        assert m.sharpe(r) == pytest.approx(float(qs.stats.sharpe(r)), abs=TOL)
        assert m.sharpe(r, 0.03) == pytest.approx(float(qs.stats.sharpe(r, rf=0.03)), abs=TOL)
        assert m.sortino(r) == pytest.approx(float(qs.stats.sortino(r)), abs=TOL)
        assert m.sortino(r, mar=0.05) == pytest.approx(float(qs.stats.sortino(r, rf=0.05)), abs=TOL)
        assert m.max_drawdown(r) == pytest.approx(float(qs.stats.max_drawdown(r)), abs=TOL)
        assert m.calmar(r) == pytest.approx(float(qs.stats.calmar(r)), abs=TOL)
        assert m.skew(r) == pytest.approx(float(qs.stats.skew(r)), abs=TOL)
        assert m.excess_kurtosis(r) == pytest.approx(float(qs.stats.kurtosis(r)), abs=TOL)
        assert m.conditional_value_at_risk(r) == pytest.approx(
            -float(qs.stats.cvar(r, method="historical")), abs=TOL
        )
        assert m.best_day(r) == pytest.approx(float(qs.stats.best(r)), abs=TOL)
        assert m.worst_day(r) == pytest.approx(float(qs.stats.worst(r)), abs=TOL)


def test_against_numpy_references(real_returns):
    for r in _series(real_returns):
        x = r.to_numpy()
        n = x.size
        assert m.cagr(r) == pytest.approx(np.exp(np.log1p(x).sum() * 252 / n) - 1, abs=1e-10)
        assert m.ann_vol(r) == pytest.approx(x.std(ddof=1) * np.sqrt(252), abs=1e-12)
        rf_d = 1.02 ** (1 / 252) - 1
        assert m.sharpe(r, 0.02) == pytest.approx(
            (x - rf_d).mean() / (x - rf_d).std(ddof=1) * np.sqrt(252), abs=1e-10
        )
        assert m.sortino(r) == pytest.approx(
            x.mean() / np.sqrt(np.mean(np.minimum(x, 0) ** 2)) * np.sqrt(252), abs=1e-10
        )
        wealth = np.concatenate([[1.0], np.cumprod(1 + x)])
        mdd = np.min(wealth / np.maximum.accumulate(wealth) - 1)
        assert m.max_drawdown(r) == pytest.approx(mdd, abs=1e-12)
        assert m.max_drawdown(r) < 0
        assert m.calmar(r) == pytest.approx(m.cagr(r) / abs(mdd), abs=1e-10)
        srt = np.sort(x)
        pos = 0.05 * (n - 1)
        lo = int(np.floor(pos))
        q = srt[lo] + (pos - lo) * (srt[lo + 1] - srt[lo])
        assert m.value_at_risk(r) == pytest.approx(-q, abs=1e-12)
        assert m.value_at_risk(r) > 0
        assert m.conditional_value_at_risk(r) == pytest.approx(-x[x <= q].mean(), abs=1e-12)
        assert m.conditional_value_at_risk(r) >= m.value_at_risk(r)
        assert m.skew(r) == pytest.approx(scipy.stats.skew(x, bias=False), abs=1e-10)
        assert m.excess_kurtosis(r) == pytest.approx(
            scipy.stats.kurtosis(x, fisher=True, bias=False), abs=1e-10
        )
        assert m.hit_rate(r) == pytest.approx(np.sum(x > 0) / n, abs=1e-15)


def test_leading_nan_dropped_and_inner_nan_rejected(real_returns):
    r = real_returns["KO"].copy()
    padded = pd.concat([pd.Series(np.nan, index=pd.date_range("2011-01-03", periods=5)), r])
    padded.name = "KO"
    for fn in (m.cagr, m.ann_vol, m.sharpe, m.sortino, m.max_drawdown, m.value_at_risk, m.hit_rate):
        assert fn(padded) == pytest.approx(fn(r), abs=1e-15)
    holed = r.copy()
    holed.iloc[100] = np.nan
    with pytest.raises(m.MetricsInputError, match=str(r.index[100].date())):
        m.cagr(holed)


def test_performance_table(real_returns):
    turnover = {"EW": pd.Series([0.1, 0.3], index=real_returns.index[[0, 20]])}
    table = m.performance_table(real_returns, turnover=turnover, risk_free_rate=0.01)
    assert list(table.index) == list(real_returns.columns)
    assert set(m.METRIC_COLUMNS) <= set(table.columns)
    assert table.loc["EW", "turnover"] == pytest.approx(0.4 / (len(real_returns) / 252))  # annualised sum
    assert np.isnan(table.loc["AAPL", "turnover"])
    assert table.loc["KO", "sharpe"] == pytest.approx(m.sharpe(real_returns["KO"], 0.01))
    assert table.loc["KO", "n_days"] == len(real_returns)
    assert table.loc["KO", "start"] == real_returns.index[0]
    # mapping input gives the same numbers
    table2 = m.performance_table({c: real_returns[c] for c in real_returns}, turnover, 0.01)
    pd.testing.assert_frame_equal(table, table2)


def test_conventions_cover_every_metric():
    text = " ".join(m.CONVENTIONS).lower() + " " + " ".join(m.CONVENTIONS.values()).lower()
    for word in ("252", "rf", "mar", "compounded", "positive", "excess", "two-sided", "negative"):
        assert word in text
    for col in m.METRIC_COLUMNS:
        if col not in ("n_days", "start", "end", "best_day", "worst_day"):
            assert col in m.CONVENTIONS


def test_degenerate_series():
    empty = pd.Series([], dtype=float, name="x")
    assert np.isnan(m.cagr(empty)) and np.isnan(m.ann_vol(empty))
    flat = pd.Series([0.0] * 10, index=pd.date_range("2020-01-01", periods=10), name="flat")
    assert m.max_drawdown(flat) == 0.0
    assert np.isnan(m.calmar(flat)) and np.isnan(m.sharpe(flat)) and np.isnan(m.sortino(flat))
    assert m.hit_rate(flat) == 0.0


def test_sortino_subtracts_rf_like_quantstats(real_returns):
    # issue 13 item 6: with rf = 2% the table's Sortino used MAR = 0 while its Sharpe used rf
    table = m.performance_table(real_returns, risk_free_rate=0.02)
    for c in real_returns.columns:
        assert table.loc[c, "sortino"] == pytest.approx(float(qs.stats.sortino(real_returns[c], rf=0.02)), abs=TOL)
        assert m.sortino(real_returns[c], 0.02) == pytest.approx(float(qs.stats.sortino(real_returns[c], rf=0.02)), abs=TOL)
    # an explicit MAR still overrides rf
    assert m.sortino(real_returns["KO"], 0.02, mar=0.0) == pytest.approx(float(qs.stats.sortino(real_returns["KO"])), abs=TOL)


def test_counted_turnover_rule_and_annualisation():
    from quant_meta_assets.report.portfolio import counted_turnover

    calendar = pd.bdate_range("2024-01-01", periods=10)
    live = calendar[3:]  # 7 live days
    t = pd.Series([1.0, 0.2, 0.3, 0.4], index=calendar[[0, 2, 5, 9]])
    kept = counted_turnover(t, calendar, live)
    # initial allocation (day 0) dropped; day 2 trades into live[0]; day 9 is never held
    assert kept.to_dict() == {calendar[2]: 0.2, calendar[5]: 0.3}
    assert m.annualised_turnover(kept, len(live)) == pytest.approx(0.5 / (7 / 252), rel=1e-15)
    # a weekly book turning over 10% a week reads ~5.2x a year, next to a monthly book's ~1.2x
    weekly = pd.Series(0.1, index=pd.bdate_range("2024-01-05", periods=52, freq="W-FRI"))
    assert m.annualised_turnover(weekly, 252) == pytest.approx(5.2)


# --------------------------------------------------------------------------------------------
# benchmark-relative statistics, calendar tables, drawdown periods, rolling (issue 19 part 3)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def index_returns(real_returns) -> pd.Series:
    """The bundled S&P 500 price index as daily simple returns on the same days."""
    from skfolio.datasets import load_sp500_index

    index = load_sp500_index().iloc[:, 0]
    return index.pct_change(fill_method=None).reindex(real_returns.index).rename("sp500")


def test_benchmark_relative_closed_forms(real_returns, index_returns):
    b = index_returns.to_numpy()
    assert not np.isnan(b).any()
    for r in _series(real_returns):
        x = r.to_numpy()
        beta = np.cov(x, b, ddof=1)[0, 1] / np.var(b, ddof=1)
        assert m.beta(r, index_returns) == pytest.approx(beta, abs=1e-12)
        for rf in (0.0, 0.03):
            rf_d = (1 + rf) ** (1 / 252) - 1
            alpha = 252 * np.mean((x - rf_d) - beta * (b - rf_d))
            assert m.alpha(r, index_returns, rf) == pytest.approx(alpha, abs=1e-12)
        te = np.sqrt(np.sum(((x - b) - (x - b).mean()) ** 2) / (x.size - 1)) * np.sqrt(252)
        assert m.tracking_error(r, index_returns) == pytest.approx(te, abs=1e-12)
        assert m.information_ratio(r, index_returns) == pytest.approx(252 * (x - b).mean() / te, abs=1e-10)
    # the benchmark against itself
    assert m.beta(index_returns, index_returns) == pytest.approx(1.0, abs=1e-12)
    assert m.tracking_error(index_returns, index_returns) == 0.0
    assert np.isnan(m.information_ratio(index_returns, index_returns))


def test_benchmark_relative_against_quantstats(real_returns, index_returns):
    # quantstats' greeks: beta = cov/var (ddof=1), alpha = 252 (mean r - beta mean b) = ours at rf = 0;
    # its information_ratio is the DAILY mean/std of r - b, ours annualised: sqrt(252) times larger
    for r in _series(real_returns):
        greeks = qs.stats.greeks(r, index_returns)
        assert m.beta(r, index_returns) == pytest.approx(float(greeks["beta"]), abs=TOL)
        assert m.alpha(r, index_returns, 0.0) == pytest.approx(float(greeks["alpha"]), abs=TOL)
        assert m.information_ratio(r, index_returns) == pytest.approx(
            float(qs.stats.information_ratio(r, index_returns)) * np.sqrt(252), abs=TOL)


def test_performance_table_benchmark_columns(real_returns, index_returns):
    table = m.performance_table(real_returns, risk_free_rate=0.01, benchmark=index_returns)
    for col, fn in (("beta", m.beta), ("tracking_error", m.tracking_error),
                    ("information_ratio", m.information_ratio)):
        assert table.loc["KO", col] == pytest.approx(fn(real_returns["KO"], index_returns), abs=1e-15)
    assert table.loc["KO", "alpha"] == pytest.approx(m.alpha(real_returns["KO"], index_returns, 0.01), abs=1e-15)
    # a late portfolio is measured on its own live days; the benchmark must cover them
    late = real_returns["AMD"].copy()
    late.iloc[:300] = np.nan
    assert m.beta(late, index_returns) == pytest.approx(m.beta(real_returns["AMD"].iloc[300:], index_returns))
    with pytest.raises(m.MetricsInputError, match="benchmark"):
        m.beta(real_returns["KO"], index_returns.iloc[10:])
    without = m.performance_table(real_returns)
    assert without[["beta", "alpha", "tracking_error", "information_ratio"]].isna().all().all()


def test_yearly_and_monthly_returns(real_returns):
    r = real_returns["JPM"]
    yearly = m.yearly_returns(r)
    monthly = m.monthly_returns(r)
    for year in (2012, 2016, r.index[-1].year):
        x = r[r.index.year == year].to_numpy()
        assert yearly.loc[year] == pytest.approx(np.prod(1 + x) - 1, abs=1e-12)
        for month in (1, 7):
            days = r[(r.index.year == year) & (r.index.month == month)].to_numpy()
            expected = np.prod(1 + days) - 1 if days.size else np.nan
            assert monthly.loc[year, month] == pytest.approx(expected, abs=1e-12, nan_ok=True)
    assert list(monthly.columns) == list(range(1, 13)) and list(monthly.index) == list(yearly.index)
    # the months of a year compound to the year; the years compound to the whole period
    assert np.allclose((1 + monthly.fillna(0.0)).prod(axis=1) - 1, yearly, atol=1e-12)
    assert np.prod(1 + yearly) - 1 == pytest.approx(np.prod(1 + r.to_numpy()) - 1, rel=1e-10)
    # quantstats' monthly table (compounded) on the same data
    qs_monthly = qs.stats.monthly_returns(r, eoy=False, compounded=True)
    np.testing.assert_allclose(monthly.fillna(0.0).to_numpy(), qs_monthly.to_numpy(dtype=float), atol=1e-10)


def test_drawdown_periods_on_a_constructed_series():
    days = pd.bdate_range("2024-01-01", periods=12)
    # wealth: 1.1, 0.99 (start), 0.891 (trough, -19%), 1.0, 1.1 (recovery: back at 1.1), 1.21 (peak),
    # 1.15 (start), 1.21 (recovery), 1.21, 1.0 (start), 0.9 (trough, not recovered), 0.95
    wealth = np.array([1.1, 0.99, 0.891, 1.0, 1.1, 1.21, 1.15, 1.21, 1.21, 1.0, 0.9, 0.95])
    r = pd.Series(wealth / np.concatenate([[1.0], wealth[:-1]]) - 1, index=days, name="x")
    table = m.drawdown_periods(r, top=5)
    assert list(table.columns) == list(m.DRAWDOWN_PERIOD_COLUMNS) and list(table.index) == [1, 2, 3]
    first, second, third = (table.loc[i] for i in (1, 2, 3))
    assert first["depth"] == pytest.approx(0.9 / 1.21 - 1)  # the open one is the deepest
    assert (first["start"], first["trough"]) == (days[9], days[10]) and pd.isna(first["recovery"])
    assert first["days_to_trough"] == 2 and first["duration"] == 3  # under water to the last day
    assert second["depth"] == pytest.approx(0.891 / 1.1 - 1)
    assert (second["start"], second["trough"], second["recovery"]) == (days[1], days[2], days[4])
    assert second["days_to_trough"] == 2 and second["duration"] == 3
    assert third["depth"] == pytest.approx(1.15 / 1.21 - 1)
    assert (third["start"], third["trough"], third["recovery"]) == (days[6], days[6], days[7])
    assert third["duration"] == 1
    assert len(m.drawdown_periods(r, top=2)) == 2
    assert m.drawdown_periods(r)["depth"].min() == pytest.approx(m.max_drawdown(r))
    # a loss on the first day is a drawdown from the starting value 1
    assert m.drawdown_periods(pd.Series([-0.1, 0.2], index=days[:2]))["start"].iloc[0] == days[0]


def test_drawdown_periods_against_quantstats(real_returns):
    for r in _series(real_returns)[:3]:
        ours = m.drawdown_periods(r, top=5)
        theirs = qs.stats.drawdown_details(qs.stats.to_drawdown_series(r)).sort_values("max drawdown").head(5)
        assert list(ours["start"]) == [pd.Timestamp(d) for d in theirs["start"]]
        assert list(ours["trough"]) == [pd.Timestamp(d) for d in theirs["valley"]]
        np.testing.assert_allclose(ours["depth"] * 100, theirs["max drawdown"].astype(float), atol=1e-8)
        # quantstats' "end" is the last day under water; ours the recovery day after it
        for (_, row), end in zip(ours.iterrows(), theirs["end"], strict=True):
            if pd.notna(row["recovery"]):
                assert r.index[r.index.get_loc(row["recovery"]) - 1] == pd.Timestamp(end)


def test_rolling_sharpe_and_vol(real_returns):
    r = real_returns["XOM"]
    rs, rv = m.rolling_sharpe(r, 252, 0.02), m.rolling_vol(r, 252)
    assert rs.iloc[:251].isna().all() and rv.iloc[:251].isna().all() and rs.iloc[251:].notna().all()
    for end in (251, 1000, len(r) - 1):
        window = r.iloc[end - 251: end + 1]
        assert rs.iloc[end] == pytest.approx(m.sharpe(window, 0.02), abs=1e-9)
        assert rv.iloc[end] == pytest.approx(m.ann_vol(window), abs=1e-12)
    # quantstats' rolling statistics at rf = 0 (its rolling std is pandas', ddof=1)
    theirs = qs.stats.rolling_sharpe(r, rolling_period=252, periods_per_year=252)
    np.testing.assert_allclose(m.rolling_sharpe(r, 252, 0.0).iloc[251:], theirs.iloc[251:], atol=1e-8)
    theirs_vol = qs.stats.rolling_volatility(r, rolling_period=252, periods_per_year=252)
    np.testing.assert_allclose(rv.iloc[251:], theirs_vol.iloc[251:], atol=1e-10)
