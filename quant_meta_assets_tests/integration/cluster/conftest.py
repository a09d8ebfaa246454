"""Fixtures of the cluster tests: the cluster venvs, the clusters (one per session, torn down by
process id whatever happens), and a plug-in strategy package that exists only on the driver."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from quant_meta_assets_tests.conftest import REPO_ROOT
from quant_meta_assets_tests.integration.cluster.ray_test_cluster import (
    RAY_AND_WORKER_LIBS,
    RayTestCluster,
    can_run,
    cluster_venv,
)

PLUGIN_PACKAGE = "driver_only_alpha"


def _hidden_paths(tmp_root: Path) -> list[Path]:
    """The checkout, the driver's venv and the tests' temp root, outermost first, no nesting."""
    paths: list[Path] = []
    for path in sorted({REPO_ROOT.resolve(), Path(sys.prefix).resolve(), tmp_root.resolve()}, key=lambda p: len(p.parts)):
        if not any(path == p or p in path.parents for p in paths):
            paths.append(path)
    return paths


@pytest.fixture(scope="session")
def driver_only_plugin(tmp_path_factory) -> Path:
    """``driver_only_alpha`` on a directory the cluster cannot see; returns that directory."""
    root = tmp_path_factory.mktemp("driver_only")
    package = root / PLUGIN_PACKAGE
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_universe.py").write_text("N_NAMES = 5\n")
    (package / "signals.py").write_text(textwrap.dedent('''\
        """A plug-in strategy that only the driver has: the cluster gets it through py_modules."""
        import pandas as pd

        from driver_only_alpha._universe import N_NAMES


        def top_names_equal(prices):
            dates = prices.index[252::21]
            return pd.DataFrame(1.0 / N_NAMES, index=dates, columns=list(prices.columns[:N_NAMES]))


        def from_runtime_env(prices):
            """Holds the number of names given by the user's runtime_env file (env_vars)."""
            import os

            n = int(os.environ["DRIVER_ONLY_N_NAMES"])
            return pd.DataFrame(1.0 / n, index=prices.index[252::21], columns=list(prices.columns[:n]))


        def broken(prices):
            raise ValueError("driver-only alpha is broken on purpose")


        def from_package_data(prices):
            """Holds the number of names in the package's data/params.json, a file its .gitignore lists."""
            import json
            from pathlib import Path

            n = json.loads((Path(__file__).parent / "data" / "params.json").read_text())["n_names"]
            return pd.DataFrame(1.0 / n, index=prices.index[252::21], columns=list(prices.columns[:n]))
    '''))
    # package data behind a .gitignore (Ray's upload leaves out what it lists) and a .rayignore
    (package / "data").mkdir()
    (package / "data" / "params.json").write_text('{"n_names": 4}')
    (package / ".gitignore").write_text("data/\n")
    (package / ".rayignore").write_text("*.json\n")
    return root


def _cluster(tmp_path_factory, packages, workers):
    reason = can_run()
    if reason:
        pytest.skip(f"real Ray cluster tests: {reason}")
    venv = cluster_venv(packages)
    return RayTestCluster(venv=venv, hidden=_hidden_paths(tmp_path_factory.getbasetemp()), workers=workers)


@pytest.fixture(scope="session")
def ray_cluster_2_nodes(tmp_path_factory, driver_only_plugin):
    """Head + one worker node, 1 CPU each, from a venv with Ray and every worker library."""
    cluster = _cluster(tmp_path_factory, RAY_AND_WORKER_LIBS, workers=1)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def ray_cluster_without_sklearn(tmp_path_factory):
    """One node from a venv with Ray and the worker libraries except scikit-learn."""
    packages = tuple(p for p in RAY_AND_WORKER_LIBS if p != "scikit-learn")
    cluster = _cluster(tmp_path_factory, packages, workers=0)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
