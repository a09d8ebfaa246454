"""meta.costs: hand-computed two-sleeve / two-asset cases, a share-count wealth loop over the
bundled data, the triangle inequality and the reconciliations failing on corrupted input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.errors import ReconciliationError, StageInputError
from quant_meta_assets.meta.costs import BookCosts, cost_views
from quant_meta_assets.sleeves.engine import simulate

SLEEVE_BPS = 10.0
BOOK_BPS = 5.0


def two_sleeves(targets_a, targets_b, meta, asset_returns):
    """Two sleeves simulated by the engine on ``asset_returns``; ``meta`` = meta-weight rows."""
    def rows(mapping, columns):
        return pd.DataFrame(list(mapping.values()), index=pd.DatetimeIndex(list(mapping)), columns=columns,
                            dtype=float)

    sims = {s: simulate(rows(t, ["X", "Y"]), asset_returns, SLEEVE_BPS)
            for s, t in (("A", targets_a), ("B", targets_b))}
    returns = pd.DataFrame({s: sim.returns for s, sim in sims.items()})
    costs = pd.DataFrame({s: sim.costs for s, sim in sims.items()})
    weights = {s: sim.weights for s, sim in sims.items()}
    meta_weights = rows(meta, ["A", "B"])
    return cost_views(meta_weights=meta_weights, sleeve_returns=returns, sleeve_costs=costs,
                      sleeve_weights=weights, asset_returns=asset_returns, cost_bps=BOOK_BPS)


@pytest.fixture
def days():
    return pd.bdate_range("2024-01-01", periods=6)


def flat(days):
    return pd.DataFrame(0.0, index=days, columns=["X", "Y"])


def test_perfectly_opposing_sleeve_trades_cost_the_book_nothing(days):
    # A: all X, then all Y; B: the mirror image. Meta 50/50 from day 1 (earns from day 2).
    views = two_sleeves({days[0]: [1, 0], days[2]: [0, 1]}, {days[0]: [0, 1], days[2]: [1, 0]},
                        {days[1]: [0.5, 0.5]}, flat(days))
    d = views.daily
    assert list(d.index) == list(days[2:])
    switch = days[3]  # both sleeves trade at the close of day 2: first earning day 3
    assert d.loc[switch, "book_volume"] == 0.0
    assert d.loc[switch, "book_cost"] == 0.0
    # stand-alone: each sleeve sells 1 and buys 1 (turnover 2) with half the capital, at 10 bps
    assert d.loc[switch, "standalone_volume"] == pytest.approx(2.0, abs=1e-15)
    assert d.loc[switch, "standalone_cost"] == pytest.approx(2.0 * SLEEVE_BPS / 1e4, abs=1e-15)
    assert d.loc[switch, "savings_cost"] == pytest.approx(2.0 * SLEEVE_BPS / 1e4, abs=1e-15)
    # the first earning day builds the book from cash: 1 of volume in both views, at the book rate
    first = days[2]
    assert d.loc[first, "book_volume"] == pytest.approx(1.0, abs=1e-15)
    assert d.loc[first, "standalone_meta_volume"] == pytest.approx(1.0, abs=1e-15)
    assert d.loc[first, "standalone_sleeve_volume"] == 0.0
    assert d.loc[first, "book_cost"] == pytest.approx(BOOK_BPS / 1e4, abs=1e-15)
    # no trade afterwards; the netted book keeps all it earns (asset returns are 0)
    assert (d.loc[days[4]:, ["book_volume", "standalone_volume"]].abs().to_numpy() < 1e-15).all()
    np.testing.assert_allclose(d["netted_return"], [-BOOK_BPS / 1e4, 0, 0, 0], atol=1e-16)
    np.testing.assert_allclose(d["standalone_return"], [-BOOK_BPS / 1e4, -2 * SLEEVE_BPS / 1e4, 0, 0],
                               atol=1e-16)
    assert views.reconciled


def test_same_direction_trades_net_nothing_and_meta_trade_between_identical_sleeves_is_free(days):
    # A moves X -> Y, B holds X: the book trades exactly A's half, no volume saved.
    views = two_sleeves({days[0]: [1, 0], days[2]: [0, 1]}, {days[0]: [1, 0]},
                        {days[1]: [0.5, 0.5]}, flat(days))
    d = views.daily
    assert d.loc[days[3], "book_volume"] == pytest.approx(1.0, abs=1e-15)
    assert d.loc[days[3], "standalone_volume"] == pytest.approx(1.0, abs=1e-15)
    assert d.loc[days[3], "savings_volume"] == pytest.approx(0.0, abs=1e-15)
    # the same trade costs the same in both views: A's trade pays A's 10 bps in the book too
    assert d.loc[days[3], "book_cost"] == pytest.approx(SLEEVE_BPS / 1e4, abs=1e-15)
    assert d.loc[days[3], "standalone_cost"] == pytest.approx(SLEEVE_BPS / 1e4, abs=1e-15)
    assert d.loc[days[3], "savings_cost"] == pytest.approx(0.0, abs=1e-15)

    # both sleeves hold X; the meta moves all capital from A to B: Δm = 1 but no asset trades
    views = two_sleeves({days[0]: [1, 0]}, {days[0]: [1, 0]},
                        {days[1]: [0.5, 0.5], days[2]: [0.0, 1.0]}, flat(days))
    assert views.daily.loc[days[3], "standalone_meta_volume"] == pytest.approx(0.0, abs=1e-15)
    assert views.daily.loc[days[3], "book_volume"] == pytest.approx(0.0, abs=1e-15)


def test_meta_trade_goes_through_the_sleeves_drifted_holdings(days):
    # X gains 10% on day 2: A (all X) grows; the meta resets 50/50 at the close of day 2.
    rets = flat(days)
    rets.loc[days[2], "X"] = 0.10
    views = two_sleeves({days[0]: [1, 0]}, {days[0]: [0, 1]},
                        {days[1]: [0.5, 0.5], days[2]: [0.5, 0.5]}, rets)
    d = views.daily
    m_a = 0.55 / 1.05  # A's share drifted through day 2
    # sell (m_a - 0.5) of A's X, buy the same of B's Y
    assert d.loc[days[3], "standalone_meta_volume"] == pytest.approx(2 * (m_a - 0.5), abs=1e-15)
    assert d.loc[days[3], "book_volume"] == pytest.approx(2 * (m_a - 0.5), abs=1e-15)
    # day 2: half the book in X earns 10%, minus building the book from cash (volume 1) at 5 bps
    assert d.loc[days[2], "netted_return"] == pytest.approx(0.05 - BOOK_BPS / 1e4, abs=1e-15)
    assert views.reconciled


@pytest.fixture(scope="module")
def bundled():
    """The default registry's sleeves on the bundled data (no Ray) and risk-parity meta-weights."""
    from quant_meta_assets.meta.optimize import optimize_meta_weights
    from quant_meta_assets.meta.returns import aggregate_returns
    from quant_meta_assets.prices import asset_returns, load_prices
    from quant_meta_assets.sleeves.registry import load_registry
    from quant_meta_assets.sleeves.engine import run_sleeve

    prices = load_prices()
    records = [run_sleeve(p, prices) for p in load_registry()]
    meta_returns = aggregate_returns(records)
    weights = optimize_meta_weights(meta_returns, method="risk_parity").weights
    inputs = dict(
        meta_weights=weights, sleeve_returns=meta_returns,
        sleeve_costs=pd.DataFrame({r["sleeve"]: r["costs"] for r in records}),
        sleeve_weights={r["sleeve"]: r["weights"] for r in records},
        asset_returns=asset_returns(prices), cost_bps=BOOK_BPS,
    )
    return {"prices": prices, "records": records, "inputs": inputs, "views": cost_views(**inputs)}


def test_reconciliations_hold_daily_on_the_bundled_data(bundled):
    checks = bundled["views"].checks
    assert set(checks["check"]) == {"sleeve_gross_returns", "netted_book_return", "standalone_return",
                                    "standalone_cost", "sleeve_costs_priced", "crossing_savings",
                                    "costs_nonnegative", "savings_nonnegative", "triangle_inequality"}
    assert checks["passed"].all(), checks.to_string()
    assert checks["max_abs_diff"].max() < 1e-12


def test_triangle_inequality_book_never_pays_more_than_its_separate_trades(bundled):
    d = bundled["views"].daily
    assert (d["book_volume"] <= d["unnetted_book_volume"] + 1e-12).all()
    assert (d["book_volume"] < d["unnetted_book_volume"] - 1e-6).any()  # crossing happens
    totals = bundled["views"].totals()
    assert 0 < totals["book_cost"] <= totals["unnetted_book_cost"]
    assert (d["savings_cost"] >= -1e-15).all() and (d["savings_volume"] >= -1e-15).all()
    assert 0 < totals["book_volume"] <= totals["standalone_volume"]


def test_sleeve_by_sleeve_iterator_equals_the_mapping(bundled):
    inputs = dict(bundled["inputs"])
    weights = inputs.pop("sleeve_weights")
    chunks = ((s, weights[s]) for s in reversed(list(weights)))  # one at a time, any order
    streamed = cost_views(**inputs, sleeve_weights=chunks)
    pd.testing.assert_frame_equal(streamed.daily, bundled["views"].daily, atol=1e-15, rtol=0)


@pytest.mark.timeout(120)
def test_share_count_wealth_loop_matches_the_netted_book(bundled):
    """Sub-accounts hold real share counts at real prices; the book trades the net share change.
    Every sleeve trades at the book's rate here, so every netted trade pays that one rate."""
    import dataclasses

    from quant_meta_assets.sleeves.engine import run_sleeve
    from quant_meta_assets.sleeves.registry import load_registry

    prices, inputs = bundled["prices"], dict(bundled["inputs"])
    records = [run_sleeve(dataclasses.replace(p, cost_bps=BOOK_BPS), prices) for p in load_registry()]
    inputs["sleeve_returns"] = pd.DataFrame({r["sleeve"]: r["returns"] for r in records}).loc[
        inputs["sleeve_returns"].index]
    inputs["sleeve_costs"] = pd.DataFrame({r["sleeve"]: r["costs"] for r in records})
    inputs["sleeve_weights"] = {r["sleeve"]: r["weights"] for r in records}
    views = cost_views(**inputs)
    assert views.reconciled, views.checks.to_string()
    net_returns = views.daily["netted_return"]
    live = net_returns.index
    meta = inputs["meta_weights"]
    sleeves = list(meta.columns)
    tickers = list(prices.columns)
    P = prices.loc[:, tickers]
    weights = {r["sleeve"]: r["weights"].reindex(columns=tickers, fill_value=0.0) for r in records}
    trade_days = {r["sleeve"]: {P.index[P.index.get_loc(d) + 1] for d in r["turnover"].index
                                if P.index.get_loc(d) + 1 < len(P.index)} for r in records}
    meta_days = {P.index[P.index.get_loc(d) + 1]: meta.loc[d].to_numpy() for d in meta.index
                 if P.index.get_loc(d) + 1 < len(P.index)}
    shares = {s: np.zeros(len(tickers)) for s in sleeves}
    cash = dict.fromkeys(sleeves, 0.0)
    wealth = 1.0
    got = []
    for day in live:
        p_prev = P.iloc[P.index.get_loc(day) - 1].to_numpy()
        p_now = P.loc[day].to_numpy()
        value = {s: shares[s] @ p_prev + cash[s] for s in sleeves}
        if day == live[0]:
            value = {s: w * wealth for s, w in zip(sleeves, meta_days[day], strict=True)}
        elif day in meta_days:
            total = sum(value.values())
            value = {s: w * total for s, w in zip(sleeves, meta_days[day], strict=True)}
        before = sum(shares.values())
        for s in sleeves:
            if day == live[0] or day in meta_days or day in trade_days[s]:
                w = weights[s].loc[day].to_numpy()
                shares[s] = value[s] * w / p_prev
                cash[s] = value[s] * (1.0 - w.sum())
        v_open = sum(value.values())
        traded = np.abs(sum(shares.values()) - before) @ p_prev
        cost = BOOK_BPS / 1e4 * traded
        v_close = sum(shares[s] @ p_now + cash[s] for s in sleeves)
        got.append((v_close - cost) / v_open - 1.0)
        scale = (v_close - cost) / v_close  # the cost is a proportional drag on every sub-account
        for s in sleeves:
            shares[s] *= scale
            cash[s] *= scale
        wealth = v_close - cost
    diff = np.abs(np.array(got) - net_returns.to_numpy())
    assert diff.max() < 1e-10, (diff.max(), live[int(diff.argmax())])


def test_corrupted_inputs_fail_the_reconciliations_loudly(bundled):
    inputs = bundled["inputs"]
    day = bundled["views"].daily.index[500]

    # a sleeve's net return that its weights do not earn
    bad_returns = inputs["sleeve_returns"].copy()
    bad_returns.loc[day, "momentum_12_1"] += 1e-6
    views = cost_views(**{**inputs, "sleeve_returns": bad_returns})
    failed = set(views.checks.loc[~views.checks["passed"], "check"])
    assert {"sleeve_gross_returns", "standalone_return"} <= failed
    with pytest.raises(ReconciliationError, match="sleeve_gross_returns"):
        views.raise_if_failed()

    # a cost that was never paid (returns unchanged) and a negative cost
    bad_costs = inputs["sleeve_costs"].copy()
    bad_costs.loc[day, "equal_weight"] = -1e-4
    views = cost_views(**{**inputs, "sleeve_costs": bad_costs})
    failed = set(views.checks.loc[~views.checks["passed"], "check"])
    assert {"sleeve_gross_returns", "netted_book_return"} <= failed
    # a negative cost on a day nothing else trades makes the stand-alone cost negative
    held_from = inputs["meta_weights"]["equal_weight"].ne(0.0).idxmax()  # sleeves come and go: held from here
    quiet = bundled["views"].daily["standalone_volume"].iloc[1:].eq(0.0)
    quiet = quiet & (quiet.index > held_from)
    quiet_day = quiet.index[quiet.to_numpy()][0]
    bad_costs = inputs["sleeve_costs"].copy()
    bad_costs.loc[quiet_day, "equal_weight"] = -1e-4
    views = cost_views(**{**inputs, "sleeve_costs": bad_costs})
    assert "costs_nonnegative" in set(views.checks.loc[~views.checks["passed"], "check"])

    # a tampered result: savings that are not the un-netted cost minus the book's
    good = bundled["views"]
    acc = BookCosts(**{k: v for k, v in inputs.items() if k != "sleeve_weights"})
    for s, w in inputs["sleeve_weights"].items():
        acc.add(s, w)
    daily = good.daily.copy()
    daily.loc[day, "savings_cost"] += 1e-9
    checks = acc._checks(daily, acc.R[1:], acc.rf[1:])
    assert not checks.set_index("check").loc["crossing_savings", "passed"]
    daily = good.daily.copy()
    daily.loc[day, "book_volume"] = daily.loc[day, "unnetted_book_volume"] + 1e-6
    checks = acc._checks(daily, acc.R[1:], acc.rf[1:])
    assert not checks.set_index("check").loc["triangle_inequality", "passed"]


def test_bad_input_is_named(bundled):
    inputs = bundled["inputs"]
    with pytest.raises(StageInputError, match="cost_bps"):
        cost_views(**{**inputs, "cost_bps": -1.0})
    weights = dict(inputs["sleeve_weights"])
    broken = weights["low_volatility"].copy()
    broken.iloc[-1, 0] = np.nan
    with pytest.raises(StageInputError, match="low_volatility"):
        cost_views(**{**inputs, "sleeve_weights": {**weights, "low_volatility": broken}})
    with pytest.raises(StageInputError, match="no weights were added"):
        cost_views(**{**inputs, "sleeve_weights": {"low_volatility": weights["low_volatility"]}})
    acc = BookCosts(**{k: v for k, v in inputs.items() if k != "sleeve_weights"})
    acc.add("low_volatility", weights["low_volatility"])
    with pytest.raises(StageInputError, match="added twice"):
        acc.add("low_volatility", weights["low_volatility"])


@pytest.mark.timeout(120)
def test_cash_that_earns_rf_is_credited_in_both_views(bundled):
    """trend_vol_target holds cash: with rf = 3% the sleeves' cash earns it, and so must the book's."""
    from quant_meta_assets import rates
    from quant_meta_assets.prices import load_prices
    from quant_meta_assets.sleeves.registry import load_registry
    from quant_meta_assets.sleeves.engine import run_sleeve

    prices = load_prices()
    records = [run_sleeve(p, prices, risk_free_rate=0.03) for p in load_registry()]
    inputs = {**bundled["inputs"],
              "sleeve_returns": pd.DataFrame({r["sleeve"]: r["returns"] for r in records}).loc[
                  bundled["inputs"]["sleeve_returns"].index],
              "sleeve_costs": pd.DataFrame({r["sleeve"]: r["costs"] for r in records}),
              "sleeve_weights": {r["sleeve"]: r["weights"] for r in records}}
    views = cost_views(**inputs, cash_return=rates.daily_rate(0.03))
    assert views.reconciled, views.checks.to_string()
    assert (views.daily["netted_return"] > bundled["views"].daily["netted_return"] - 1e-12).mean() > 0.5
    forgot_cash = cost_views(**inputs)  # cash assumed to earn 0: the sleeves' own returns disagree
    assert not forgot_cash.checks.set_index("check").loc["sleeve_gross_returns", "passed"]


# --- issue 18 reproductions on the bundled data (each failed before the per-asset cost model) ---

def test_a_10_bps_sleeve_trade_costs_10_bps_in_both_views(bundled):
    """momentum_12_1 pays 10 bps in its own account; alone in the book its trades pay 10 bps too."""
    inputs = bundled["inputs"]
    name = "momentum_12_1"
    first = inputs["meta_weights"].index[0]
    meta = pd.DataFrame({name: [1.0]}, index=[first])
    views = cost_views(**{**inputs, "meta_weights": meta,
                          "sleeve_returns": inputs["sleeve_returns"][[name]]})
    assert views.reconciled, views.checks.to_string()
    assert views.sleeve_totals.loc[name, "rate_bps"] == pytest.approx(10.0, rel=1e-12)
    d = views.daily.iloc[1:]  # after the initial build (a meta trade at the 5 bps half-spread)
    traded = d["book_volume"] > 0
    assert traded.sum() > 100
    np.testing.assert_allclose(d.loc[traded, "book_trading_cost"], 10e-4 * d.loc[traded, "book_volume"],
                               rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(d["book_cost"], d["standalone_cost"], rtol=1e-9, atol=1e-15)


@pytest.mark.timeout(120)
def test_two_sleeve_registry_has_no_negative_crossing_savings(tmp_path):
    """A registry of low_volatility + equal_weight (no cost_bps: the sleeves trade for free) on the
    bundled data: the book charged 5 bps on trades that cost 0 in the sleeves' accounts and the card
    showed -14.1 bps/yr of 'savings'. Now the sleeves' trades pay 0 in the book too."""
    from quant_meta_assets.meta.optimize import optimize_meta_weights
    from quant_meta_assets.meta.returns import aggregate_returns
    from quant_meta_assets.prices import asset_returns, load_prices
    from quant_meta_assets.sleeves.engine import run_sleeve
    from quant_meta_assets.sleeves.registry import load_registry

    registry = tmp_path / "two.yaml"
    registry.write_text("sleeves:\n"
                        "  - {name: low_volatility, strategy: low_volatility, params: {lookback: 63, top_n: 5}}\n"
                        "  - {name: equal_weight, strategy: equal_weight}\n")
    prices = load_prices()
    records = [run_sleeve(p, prices) for p in load_registry(registry)]
    assert len(records) == 2
    meta_returns = aggregate_returns(records)
    views = cost_views(meta_weights=optimize_meta_weights(meta_returns, method="risk_parity").weights,
                       sleeve_returns=meta_returns,
                       sleeve_costs=pd.DataFrame({r["sleeve"]: r["costs"] for r in records}),
                       sleeve_weights={r["sleeve"]: r["weights"] for r in records},
                       asset_returns=asset_returns(prices), cost_bps=BOOK_BPS)
    assert views.reconciled, views.checks.to_string()
    assert views.totals()["savings_bps_per_year"] >= 0.0
    assert views.daily["savings_cost"].min() >= -1e-15


def test_crossed_volume_is_never_negative(bundled):
    d = bundled["views"].daily
    assert d["savings_volume"].min() >= -1e-15, d["savings_volume"].idxmin()
    assert d["savings_cost"].min() >= -1e-15
