"""Shared fixtures: real S&P 500 sleeves (skfolio dataset) and exact-moment synthetic returns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session")
def sp500_returns() -> pd.DataFrame:
    from skfolio.datasets import load_sp500_dataset

    return load_sp500_dataset().pct_change().dropna()


def returns_with_moments(cov: np.ndarray, mu: np.ndarray, n_rows: int, seed: int = 0) -> pd.DataFrame:
    """Returns whose sample mean is exactly ``mu`` and sample covariance (ddof=1) exactly ``cov``."""
    k = cov.shape[0]
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n_rows, k))
    Z -= Z.mean(axis=0)
    Q, _ = np.linalg.qr(Z)  # orthonormal, columns still have zero mean
    Z = Q * np.sqrt(n_rows - 1)
    L = np.linalg.cholesky(cov)
    X = Z @ L.T + mu
    idx = pd.bdate_range("2020-01-01", periods=n_rows, name="date")
    return pd.DataFrame(X, index=idx, columns=[f"s{i}" for i in range(k)])


def factor_returns(n_rows: int, k: int, seed: int = 0, n_factors: int = 3, drift: float = 3e-4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    B = rng.normal(0.0, 1.0, (k, n_factors))
    f = rng.normal(0.0, 0.006, (n_rows, n_factors))
    e = rng.normal(0.0, 0.01, (n_rows, k)) * rng.uniform(0.5, 2.0, k)
    X = f @ B.T + e + drift * rng.uniform(0.2, 1.5, k)
    idx = pd.bdate_range("2015-01-01", periods=n_rows, name="date")
    return pd.DataFrame(X, index=idx, columns=[f"s{i}" for i in range(k)])


def random_spd(k: int, seed: int, corr: float | None = None, vol_range=(0.005, 0.03)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vol = rng.uniform(*vol_range, k)
    if corr is None:
        A = rng.standard_normal((k, 2 * k))
        C = A @ A.T / (2 * k)
        d = np.sqrt(np.diag(C))
        C = C / d[:, None] / d[None, :]
    else:
        C = np.full((k, k), corr)
        np.fill_diagonal(C, 1.0)
    return C * vol[:, None] * vol[None, :]
