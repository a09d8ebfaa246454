"""costs.cost_model: the CSV and environment inputs, and clear errors naming what is wrong."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets.costs.cost_model import CostModel, load_cost_model
from quant_meta_assets.errors import StageInputError
from quant_meta_assets.settings import BORROW_BPS_ENV, COSTS_FILE_ENV, FUNDING_SPREAD_BPS_ENV


def test_csv_and_environment(tmp_path, monkeypatch):
    path = tmp_path / "costs.csv"
    path.write_text("ticker,half_spread_bps,borrow_bps,adv\nAAPL,2,,1e9\nXYZ,25,300,2e6\n")
    monkeypatch.setenv(COSTS_FILE_ENV, str(path))
    monkeypatch.setenv(BORROW_BPS_ENV, "40")
    monkeypatch.setenv(FUNDING_SPREAD_BPS_ENV, "150")
    model = load_cost_model(default_half_spread_bps=7.5)
    np.testing.assert_allclose(model.half_spreads(["AAPL", "XYZ", "MSFT"]), [2e-4, 25e-4, 7.5e-4])
    np.testing.assert_allclose(model.borrow_daily(["AAPL", "XYZ"]),
                               [1.004 ** (1 / 252) - 1, 1.03 ** (1 / 252) - 1], rtol=1e-14)
    assert model.funding_daily == pytest.approx(1.015 ** (1 / 252) - 1, rel=1e-14)
    days = pd.bdate_range("2024-01-01", periods=2)
    np.testing.assert_allclose(model.adv_panel(days, ["XYZ", "AAPL"]), [[2e6, 1e9], [2e6, 1e9]])
    with pytest.raises(StageInputError, match="'MSFT'"):
        model.adv_panel(days, ["MSFT"])


def test_unset_means_the_defaults(monkeypatch):
    for env in (COSTS_FILE_ENV, BORROW_BPS_ENV, FUNDING_SPREAD_BPS_ENV):
        monkeypatch.delenv(env, raising=False)
    model = load_cost_model()
    assert model.default_half_spread_bps == 5.0 and not model.has_holding_costs and model.adv is None


@pytest.mark.parametrize("text, match", [
    ("ticker,half_spread_bps\nAAPL,-1\n", "'AAPL'"),
    ("ticker,half_spread_bps\nAAPL,abc\n", "'AAPL'"),
    ("ticker,spread\nAAPL,1\n", "unknown column"),
    ("symbol,half_spread_bps\nAAPL,1\n", "'ticker'"),
    ("ticker,adv\nAAPL,1e9\nMSFT,\n", "MSFT"),
    ("ticker,adv\nAAPL,0\n", "'AAPL'"),
    ("ticker,half_spread_bps\nAAPL,1\nAAPL,2\n", "AAPL"),
])
def test_bad_csv_is_named(tmp_path, text, match):
    path = tmp_path / "costs.csv"
    path.write_text(text)
    with pytest.raises(StageInputError, match=match):
        load_cost_model(path)


def test_bad_environment_and_missing_file(tmp_path, monkeypatch):
    with pytest.raises(StageInputError, match="no cost file"):
        load_cost_model(tmp_path / "nope.csv")
    for raw in ("-3", "nan", "fifty"):
        monkeypatch.setenv(BORROW_BPS_ENV, raw)
        with pytest.raises(ValueError, match=f"{BORROW_BPS_ENV} must be a finite number of bps per year >= 0, got '{raw}'"):
            load_cost_model()
    monkeypatch.setenv(BORROW_BPS_ENV, " ")  # blank: the default, 0
    assert load_cost_model().default_borrow_bps == 0.0
    with pytest.raises(StageInputError, match="'XYZ'"):
        CostModel(borrow_bps={"XYZ": float("nan")})
