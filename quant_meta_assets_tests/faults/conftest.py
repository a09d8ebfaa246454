"""Shared helpers of the fault tests: a small real price file, meta-output digests, Dagster queries."""

from __future__ import annotations

from pathlib import Path

import pytest

from quant_meta_assets_tests.dagster_support import (  # noqa: F401  (re-exported for the fault tests)
    META_DIRS,
    check_evaluation,
    gate_message,
    step_failures,
    report_sleeve,
    materialize_all,
    meta_digest,
    meta_materialization_count,
    meta_materialization_ids,
    tree_digest,
    use_registry,
)
N_PRICE_ROWS = 800  # the last ~3 years of skfolio's S&P 500 prices: keeps every run short


@pytest.fixture(scope="session")
def small_price_file(tmp_path_factory) -> Path:
    """A Parquet price file (``date`` column + one column per ticker) of the last 800 days."""
    from skfolio.datasets import load_sp500_dataset

    prices = load_sp500_dataset().iloc[-N_PRICE_ROWS:]
    frame = prices.rename_axis("date").reset_index()
    path = tmp_path_factory.mktemp("prices") / "prices.parquet"
    frame.to_parquet(path, index=False)
    return path


@pytest.fixture
def small_prices(small_price_file, monkeypatch) -> Path:
    monkeypatch.setenv("QUANT_META_PRICES", str(small_price_file))
    return small_price_file


