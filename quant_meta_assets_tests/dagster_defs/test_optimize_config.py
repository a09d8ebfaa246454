"""Every optimizer method and option is reachable from the typed launchpad config of meta/optimize.

The asset hands ``config.optimizer_params(...)`` to the meta.optimize stage (after its gate, which
needs stored sleeves and is tested in faults/); here the same call, on real returns."""

import numpy as np
import pytest
from skfolio.datasets import load_sp500_dataset

from quant_meta_assets.dagster_defs.meta_assets import OptimizeConfig, optimize_metadata
from quant_meta_assets.meta.optimize import METHODS
from quant_meta_assets.stages import StageRegistry


def meta_weights(config: OptimizeConfig, meta_returns, sleeves=None, prices=None):
    """What the meta/optimize asset computes from its config past the gate, with its UI metadata."""
    params = config.optimizer_params(list(meta_returns.columns))
    if sleeves is not None:
        params.update(sleeve_results=[{**r, "sleeve": s} for s, r in sleeves.items()], prices=prices)
    out = StageRegistry.get("meta.optimize").run(meta_returns=meta_returns, **params)
    weights, diagnostics = out["meta_weights"], out["optimizer_diagnostics"]
    return {"weights": weights, "diagnostics": diagnostics,
            "metadata": optimize_metadata(config.method, weights, diagnostics)[0]}


@pytest.fixture(scope="module")
def sleeve_returns():
    prices = load_sp500_dataset().iloc[-600:, :5]
    return prices.pct_change().dropna()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_from_config(method, sleeve_returns):
    config = OptimizeConfig(method=method, lookback=126, rebalance_every=42)
    out = meta_weights(config, sleeve_returns)
    weights = out["weights"]
    assert np.allclose(weights.sum(axis=1), 1.0, atol=1e-9)
    assert len(out["diagnostics"]) == len(weights) == len(range(125, len(sleeve_returns), 42))
    assert set(out["diagnostics"]["method"]) == {method}


def test_options_from_config(sleeve_returns):
    sleeves = list(sleeve_returns.columns)
    config = OptimizeConfig(
        method="min_variance", lookback=126, rebalance_every=42, covariance="ledoit_wolf",
        max_weight=0.5, min_weight_by_sleeve={sleeves[0]: 0.1},
        groups={s: ("a" if i < 2 else "b") for i, s in enumerate(sleeves)}, group_caps={"a": 0.3},
        max_turnover=0.8, fallback=["previous_weights", "equal_weight"],
    )
    weights = meta_weights(config, sleeve_returns)["weights"]
    assert (weights[sleeves[0]] >= 0.1 - 1e-8).all()
    assert (weights[sleeves[:2]].sum(axis=1) <= 0.3 + 1e-8).all()
    assert (weights <= 0.5 + 1e-8).all().all()
    assert (weights.diff().abs().sum(axis=1).iloc[1:] <= 0.8 + 1e-8).all()


def test_config_schema_lists_every_method():
    field = OptimizeConfig.model_fields["method"]
    assert set(field.annotation.__args__) == set(METHODS)


def test_report_config_states_the_book_cost():
    import pydantic

    from quant_meta_assets.dagster_defs.meta_assets import ReportConfig
    from quant_meta_assets.meta.costs import DEFAULT_BOOK_COST_BPS

    assert ReportConfig().cost_bps == DEFAULT_BOOK_COST_BPS == 5.0
    assert "one-way" in ReportConfig.model_fields["cost_bps"].description
    with pytest.raises(pydantic.ValidationError):
        ReportConfig(cost_bps=-1.0)
    from quant_meta_assets.report.plots import DEFAULT_TOP_K

    assert ReportConfig().top_k == DEFAULT_TOP_K == 10
    with pytest.raises(pydantic.ValidationError):
        ReportConfig(top_k=0)


def test_singular_covariance_warning_in_ui_metadata():
    rng = np.random.default_rng(7)
    import pandas as pd

    R = pd.DataFrame(rng.normal(0, 0.01, (90, 40)), index=pd.bdate_range("2020-01-01", periods=90, name="date"),
                     columns=[f"s{i}" for i in range(40)])
    out = meta_weights(OptimizeConfig(method="min_variance", lookback=30, rebalance_every=30, covariance="sample"), R)
    assert (out["diagnostics"]["status"] == "optimal_singular_cov").all()
    meta = out["metadata"]
    assert meta["singular_covariance_rebalances"].value == 3
    assert "WARNING" in meta["covariance_warning"].value and "rank <= 29" in meta["covariance_warning"].value
    assert meta["covariance"].value.startswith("sample; eigenvalues clipped at 3 of 3 rebalances")


def test_default_covariance_rule_and_shrinkage_in_ui_metadata():
    # 40 sleeves > lookback 30 / 4: the default shrinks (well posed) and the UI says so
    rng = np.random.default_rng(7)
    import pandas as pd

    R = pd.DataFrame(rng.normal(0, 0.01, (90, 40)), index=pd.bdate_range("2020-01-01", periods=90, name="date"),
                     columns=[f"s{i}" for i in range(40)])
    out = meta_weights(OptimizeConfig(method="min_variance", lookback=30, rebalance_every=30), R)
    assert (out["diagnostics"]["status"] == "optimal").all()
    meta = out["metadata"]
    assert meta["singular_covariance_rebalances"].value == 0
    text = meta["covariance"].value
    assert text.startswith("auto: ledoit_wolf (40 sleeves > lookback 30 / 4); shrinkage towards mu*I: mean ")
    assert text.endswith("eigenvalues clipped at 0 of 3 rebalances")
    assert 0 < meta["mean_shrinkage"].value <= 1


@pytest.mark.timeout(300)
def test_asset_turnover_space_from_config_prices_the_meta_trade_in_assets():
    from quant_meta_assets.meta.costs import DriftedSleeveHoldings
    from quant_meta_assets.meta.returns import aggregate_returns
    from quant_meta_assets.prices import asset_returns, load_prices
    from quant_meta_assets.sleeves.registry import load_registry
    from quant_meta_assets.sleeves.engine import run_sleeve

    prices = load_prices()
    records = [run_sleeve(p, prices) for p in load_registry()]
    returns = aggregate_returns(records).iloc[-800:]
    sleeves = {r["sleeve"]: r for r in records}
    config = OptimizeConfig(method="risk_parity", lookback=252, rebalance_every=42, max_turnover=0.02,
                            turnover_space="asset")
    out = meta_weights(config, returns, sleeves=sleeves, prices=prices)
    holdings = DriftedSleeveHoldings({s: r["weights"] for s, r in sleeves.items()}, asset_returns(prices))
    weights = out["weights"]
    from quant_meta_assets.meta.drift import drift_weights

    for k in range(1, len(weights)):
        d0, d1 = weights.index[k - 1], weights.index[k]
        held = drift_weights(weights.iloc[k - 1], returns.loc[d0:d1].iloc[1:])
        H = holdings(d1, list(weights.columns))
        assert np.abs(H.T @ (weights.iloc[k].to_numpy() - held.to_numpy())).sum() <= 0.02 + 1e-7
    assert out["diagnostics"]["notes"].iloc[1].startswith("asset-space trade")
