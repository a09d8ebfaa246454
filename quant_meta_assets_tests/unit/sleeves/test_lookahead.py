"""The look-ahead detector (issue 21 item 6): prefix invariance, checked by one shorter run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.prices import load_prices
from quant_meta_assets.sleeves.engine import validate_target_weights
from quant_meta_assets.sleeves.lookahead import check_prefix_invariance
from quant_meta_assets.sleeves.registry import load_registry, resolve_strategy

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return load_prices().iloc[-800:]


def full_sample_normalised(prices: pd.DataFrame, lookback: int = 20) -> pd.DataFrame:
    """Momentum z-scored by the FULL sample's mean and std: every target moves when a day is added."""
    score = prices.pct_change(lookback, fill_method=None)
    z = (score - score.stack().mean()) / score.stack().std()
    w = z.clip(lower=0.0)
    return w.div(w.sum(axis=1).replace(0.0, np.nan), axis=0).fillna(0.0).iloc[lookback:]


def peeks_at_tomorrow(prices: pd.DataFrame) -> pd.DataFrame:
    """Buys the 3 stocks with the best NEXT-day return: look-ahead by one row."""
    tomorrow = prices.pct_change(fill_method=None).shift(-1)
    ranks = tomorrow.rank(axis=1, ascending=False)
    return (ranks <= 3).astype(float) / 3.0


def honest_momentum(prices: pd.DataFrame, lookback: int = 20) -> pd.DataFrame:
    ranks = prices.pct_change(lookback, fill_method=None).rank(axis=1, ascending=False)
    return ((ranks <= 3).astype(float) / 3.0).iloc[lookback:]


def _check(fn, prices, name, **params):
    validate = lambda raw, p: validate_target_weights(raw, p, None, name)  # noqa: E731
    full = validate(fn(prices, **params), prices)
    return check_prefix_invariance(fn, prices, params, full, strategy=name, sleeve=name, validate=validate)


def test_full_sample_normalisation_is_a_suspect_from_its_first_date(prices):
    result = _check(full_sample_normalised, prices, "full_sample_normalised")
    assert result.suspect
    assert result.first_changed == prices.index[20]  # the first decided date already moved
    assert result.message.startswith(
        f"look-ahead suspect: strategy 'full_sample_normalised' (sleeve 'full_sample_normalised'): its target "
        f"for {prices.index[20].date()} changed when later dates were appended")
    assert result.as_record()["first_changed"] == str(prices.index[20].date())


def test_peeking_at_tomorrow_is_a_suspect_on_the_cut_date(prices):
    result = _check(peeks_at_tomorrow, prices, "peeks_at_tomorrow")
    assert result.suspect
    cut = prices.index[-6]
    assert result.cut == cut and result.first_changed == cut  # tomorrow is missing in the shorter window
    assert result.before != result.after


def test_an_honest_strategy_passes_on_every_shared_date(prices):
    result = _check(honest_momentum, prices, "honest_momentum")
    assert not result.suspect and result.compared == len(prices) - 20 - 5
    assert result.message.startswith("prefix-invariant")


@pytest.mark.parametrize("profile", load_registry(), ids=lambda p: p.name)
def test_every_builtin_of_the_default_registry_is_prefix_invariant(profile, prices):
    fn = resolve_strategy(profile.strategy)
    sub = prices.loc[:, list(profile.universe)] if profile.universe else prices
    result = _check(fn, sub, profile.name, **profile.params)
    assert not result.suspect, result.message
    assert result.compared > 0


def test_too_short_a_history_is_skipped_not_guessed():
    dates = pd.bdate_range("2020-01-01", periods=4)
    prices = pd.DataFrame({"A": [1.0, 1.1, 1.2, 1.3]}, index=dates)
    result = check_prefix_invariance(lambda p: p * 0 + 1.0, prices, {}, prices * 0 + 1.0, strategy="x", sleeve="x")
    assert result.cut is None and not result.suspect and "skipped" in result.message


def test_a_schedule_counted_from_the_end_is_a_suspect():
    """Decision dates picked from the end of the sample (every 10th row back from the last) move when
    days are appended: a date only one run decided is a change, named."""
    dates = pd.bdate_range("2020-01-01", periods=60)
    prices = pd.DataFrame({"A": np.linspace(1, 2, 60), "B": np.linspace(2, 1, 60)}, index=dates)

    def from_the_end(p: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(0.5, index=p.index[::-10][::-1], columns=p.columns)

    result = check_prefix_invariance(from_the_end, prices, {}, from_the_end(prices), strategy="from_the_end",
                                     sleeve="s")
    assert result.suspect and result.ticker is None
    assert result.first_changed == dates[4]  # the shorter run's first decision; the full run's is dates[9]
    assert "only the run on the prices up to" in result.message


def test_run_sleeve_checks_plugins_and_names_a_suspect():
    from quant_meta_assets.sleeves.engine import run_sleeve
    from quant_meta_assets.sleeves.registry import SleeveProfile
    from quant_meta_assets_tests.strategies_for_tests import make_prices, spec

    prices = make_prices()
    record = run_sleeve(SleeveProfile(name="peeker", strategy=spec("peeks_at_tomorrow")), prices)
    assert record["status"] == "success" and record["lookahead"]["suspect"]  # reported, not failed
    assert record["lookahead"]["first_changed"] == str(prices.index[-6].date())
    assert "look-ahead suspect: strategy" in record["lookahead"]["message"] and "'peeker'" in record["lookahead"]["message"]
    honest = run_sleeve(SleeveProfile(name="honest", strategy=spec("good")), prices)
    assert honest["lookahead"]["suspect"] is False and honest["lookahead"]["compared_dates"] > 0
    builtin = run_sleeve(SleeveProfile(name="ew", strategy="equal_weight"), prices)
    assert builtin["lookahead"] is None  # built-ins are checked by the tests above, not at run time


def test_the_check_can_be_turned_off_per_sleeve_and_is_not_part_of_its_identity(tmp_path):
    from quant_meta_assets.sleeves.engine import run_sleeve
    from quant_meta_assets.sleeves.registry import SleeveProfile, load_registry
    from quant_meta_assets.sleeves.status import config_hash
    from quant_meta_assets_tests.strategies_for_tests import make_prices, spec

    off = SleeveProfile(name="peeker", strategy=spec("peeks_at_tomorrow"), check_lookahead=False)
    assert run_sleeve(off, make_prices())["lookahead"] is None
    on = SleeveProfile(name="peeker", strategy=spec("peeks_at_tomorrow"))
    assert config_hash(on) == config_hash(off)  # turning the check on or off recomputes nothing
    path = tmp_path / "sleeves.yaml"
    path.write_text(f"defaults: {{check_lookahead: false}}\nsleeves:\n  - name: p\n    strategy: {spec('good')}\n")
    assert load_registry(path)[0].check_lookahead is False
    path.write_text(f"sleeves:\n  - name: p\n    strategy: {spec('good')}\n    check_lookahead: 'no'\n")
    with pytest.raises(Exception, match=r"'check_lookahead' must be true or false, got 'no'"):
        load_registry(path)
