"""meta.flatten against an independent day-by-day loop over sub-account wealth."""

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.errors import StageInputError
from quant_meta_assets.meta.flatten import flatten_weights, held_meta_weights, meta_portfolio_returns


@pytest.fixture
def toy():
    rng = np.random.default_rng(7)
    dates = pd.bdate_range("2020-01-01", periods=60)
    sleeves = ["a", "b", "c"]
    returns = pd.DataFrame(rng.normal(0.0005, 0.01, (60, 3)), index=dates, columns=sleeves)
    meta = pd.DataFrame([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6], [1 / 3, 1 / 3, 1 / 3]],
                        index=dates[[9, 30, 45]], columns=sleeves)
    tickers = ["X", "Y", "Z", "W"]
    sleeve_weights = {
        s: pd.DataFrame(rng.uniform(-0.2, 0.6, (60, 4)), index=dates, columns=tickers) for s in sleeves
    }
    return returns, meta, sleeve_weights


def no_costs(returns):
    return {s: pd.Series(0.0, index=returns.index) for s in returns.columns}


def loop_reference(returns, meta):
    """Sub-account wealth, day by day: reset to the target the day after each rebalance."""
    held = {}
    wealth = None
    rebalance_rows = {returns.index.get_loc(d): meta.loc[d].to_numpy() for d in meta.index}
    for row in range(len(returns)):
        if row - 1 in rebalance_rows:
            wealth = rebalance_rows[row - 1].copy()
        if wealth is not None:
            held[returns.index[row]] = wealth / wealth.sum()
            wealth = wealth * (1 + returns.iloc[row].to_numpy())
    return pd.DataFrame(held, index=returns.columns).T


def test_held_weights_match_wealth_loop(toy):
    returns, meta, _ = toy
    expected = loop_reference(returns, meta)
    got = held_meta_weights(meta, returns)
    pd.testing.assert_frame_equal(got, expected, check_freq=False, check_names=False, atol=1e-14, rtol=0)
    assert got.index[0] == returns.index[10]  # weights dated row 9 apply from row 10: no look-ahead
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-14)


def test_meta_weights_reset_exactly_after_each_rebalance(toy):
    returns, meta, _ = toy
    got = held_meta_weights(meta, returns)
    for date in meta.index:
        next_day = returns.index[returns.index.get_loc(date) + 1]
        np.testing.assert_allclose(got.loc[next_day], meta.loc[date], atol=1e-15)


def test_flatten_identity_and_exposure(toy):
    returns, meta, sleeve_weights = toy
    result = flatten_weights(meta, sleeve_weights, returns, no_costs(returns))
    held = result.meta_weights_daily
    cols = result.asset_weights.columns
    expected = sum(held[s].to_numpy()[:, None] * sleeve_weights[s].loc[held.index, cols].to_numpy() for s in held)
    np.testing.assert_allclose(result.asset_weights.to_numpy(), expected, atol=1e-15)
    np.testing.assert_allclose(result.exposure["net"], result.asset_weights.sum(axis=1), atol=1e-14)
    np.testing.assert_allclose(result.exposure["gross"], result.asset_weights.abs().sum(axis=1), atol=1e-14)
    # overlapping tickers net: a long in one sleeve and a short in another cancel
    assert (result.exposure["gross"] >= result.exposure["net"].abs() - 1e-15).all()


def test_the_books_shares_drift_with_gross_sleeve_returns(toy):
    """Issue 18 item 4: the published holdings are the headline book's. The book pays no sleeve's own
    cost, so its shares ride the sleeves' GROSS returns (net + cost), checked by the wealth loop."""
    returns, meta, sleeve_weights = toy
    rng = np.random.default_rng(3)
    costs = pd.DataFrame(np.where(rng.random(returns.shape) < 0.2, rng.uniform(0, 2e-3, returns.shape), 0.0),
                         index=returns.index, columns=returns.columns)
    result = flatten_weights(meta, sleeve_weights, returns, {s: costs[s] for s in costs})
    expected = loop_reference(returns + costs, meta)
    pd.testing.assert_frame_equal(result.meta_weights_daily, expected, check_freq=False, check_names=False,
                                  atol=1e-14, rtol=0)
    net_drift = loop_reference(returns, meta)
    assert (result.meta_weights_daily - net_drift).abs().to_numpy().max() > 1e-6  # not the net drift
    with pytest.raises(StageInputError, match=r"daily costs of sleeves \['c'\]"):
        flatten_weights(meta, sleeve_weights, returns, {s: costs[s] for s in ("a", "b")})


def test_meta_portfolio_return_is_weighted_sleeve_return(toy):
    returns, meta, _ = toy
    held = held_meta_weights(meta, returns)
    got = meta_portfolio_returns(held, returns)
    wealth = (1 + got).prod()
    # compounding the meta return equals the wealth of the sub-accounts (per segment, reset at rebalance)
    assert np.isfinite(wealth)
    np.testing.assert_allclose(got, (held * returns.loc[held.index]).sum(axis=1), atol=1e-15)


def test_flatten_errors_name_the_problem(toy):
    returns, meta, sleeve_weights = toy
    with pytest.raises(StageInputError, match="'c'"):
        flatten_weights(meta, {k: v for k, v in sleeve_weights.items() if k != "c"}, returns, no_costs(returns))
    bad = meta.copy()
    bad.index = bad.index + pd.Timedelta(days=1000)
    with pytest.raises(StageInputError, match="not a date"):
        held_meta_weights(bad, returns)


def _late_sleeve_case():
    """Issue 13 item 2: 3 sleeves, 'c' starts at row 250; risk_parity with lookback 100."""
    rng = np.random.default_rng(13)
    dates = pd.bdate_range("2020-01-01", periods=400)
    returns = pd.DataFrame(rng.normal(4e-4, 0.01, (400, 3)), index=dates, columns=["a", "b", "c"])
    returns.iloc[:250, 2] = np.nan
    return returns


def test_not_live_sleeve_with_zero_weight_does_not_poison_the_others():
    from quant_meta_assets.meta.optimize import optimize_meta_weights

    returns = _late_sleeve_case()
    meta = optimize_meta_weights(returns, "risk_parity", lookback=100, rebalance_every=21).weights
    assert (meta.loc[: returns.index[348], "c"] == 0.0).all()  # inactive while its window has NaN
    held = held_meta_weights(meta, returns)
    assert not held.isna().any().any()  # was: 147 of 300 rows NaN
    expected = loop_reference(returns.fillna(0.0), meta)  # c is not held while NaN: its value is irrelevant
    pd.testing.assert_frame_equal(held, expected, check_freq=False, check_names=False, atol=1e-14, rtol=0)
    r = meta_portfolio_returns(held, returns)
    by_hand = (held[["a", "b"]] * returns.loc[held.index, ["a", "b"]]).sum(axis=1)
    early = held.index[held.index <= returns.index[349]]
    np.testing.assert_allclose(r.loc[early], by_hand.loc[early], rtol=0, atol=1e-16)  # was exactly 0.0
    assert (r.loc[early] != 0.0).all()


def test_a_held_sleeve_with_a_nan_return_is_named():
    returns = _late_sleeve_case().iloc[260:].copy()
    meta = pd.DataFrame([[0.4, 0.3, 0.3]], index=returns.index[[5]], columns=["a", "b", "c"])
    returns.iloc[20, 1] = np.nan
    day = returns.index[20].date()
    with pytest.raises(StageInputError, match=rf"sleeve 'b' is held .* return on {day} is nan"):
        held_meta_weights(meta, returns)
    held = held_meta_weights(meta, returns.fillna(0.0))
    with pytest.raises(StageInputError, match=rf"meta return on {day}: sleeve 'b' return is nan while held"):
        meta_portfolio_returns(held, returns)


class CountingWeights(dict):
    """A mapping that counts how often each sleeve's weights are fetched (a lazy store stand-in)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fetches: dict[str, int] = {}

    def __getitem__(self, key):
        self.fetches[key] = self.fetches.get(key, 0) + 1
        return super().__getitem__(key)


def test_each_sleeves_weights_are_fetched_once_and_tickers_may_differ(toy):
    returns, meta, sleeve_weights = toy
    sleeve_weights = dict(sleeve_weights)
    sleeve_weights["b"] = sleeve_weights["b"][["Z", "X"]].rename(columns={"Z": "V"})  # its own tickers
    counting = CountingWeights(sleeve_weights)
    result = flatten_weights(meta, counting, returns, no_costs(returns))
    assert counting.fetches == {"a": 1, "b": 1, "c": 1}
    assert list(result.asset_weights.columns) == ["V", "W", "X", "Y", "Z"]
    # independent reference: the full union frame, every sleeve reindexed with zeros
    held = result.meta_weights_daily
    expected = sum(
        sleeve_weights[s].reindex(index=held.index, columns=["V", "W", "X", "Y", "Z"]).fillna(0.0).mul(held[s], axis=0)
        for s in meta.columns
    )
    np.testing.assert_allclose(result.asset_weights.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-15)


def test_streaming_from_stored_bundles_agrees_with_in_memory(toy, tmp_path):
    """The same flatten over lazily stored sleeves (frames read one at a time) == in memory, 1e-12."""
    from quant_meta_assets.stages import SleeveFrames
    from quant_meta_assets.storage import StoredBundle, write_bundle

    returns, meta, sleeve_weights = toy
    records = []
    for s, weights in sleeve_weights.items():
        write_bundle(tmp_path / s, {"weights": weights, "returns": returns[s]}, {"sleeve": s, "status": "success"})
        records.append(StoredBundle(tmp_path / s))
    streamed = flatten_weights(meta, SleeveFrames(records, "weights"), returns, no_costs(returns))
    in_memory = flatten_weights(meta, sleeve_weights, returns, no_costs(returns))
    for a, b in ((streamed.asset_weights, in_memory.asset_weights), (streamed.exposure, in_memory.exposure)):
        assert list(a.columns) == list(b.columns) and a.index.equals(b.index)
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=1e-12)
