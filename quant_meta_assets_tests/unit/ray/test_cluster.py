"""ray.cluster without a cluster: what is shipped, how the user's runtime_env is merged, how the
preflight compares a node with the driver, and how connection errors are explained."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import quant_meta_assets
from quant_meta_assets import settings
from quant_meta_assets.ray import cluster as ray_cluster
from quant_meta_assets.ray.cluster import ClusterConfigError, RayAuthError


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """A driver-only plug-in package ``acme_alpha`` (with a submodule) and a single-file module."""
    root = tmp_path / "plugins"
    (root / "acme_alpha").mkdir(parents=True)
    (root / "acme_alpha" / "__init__.py").write_text("")
    (root / "acme_alpha" / "signals.py").write_text("def weights(prices):\n    return prices\n")
    (root / "solo_signal.py").write_text("def weights(prices):\n    return prices\n")
    monkeypatch.syspath_prepend(str(root))
    return root


def test_ships_the_project_and_each_plugin_top_level_once(plugin_dir):
    paths = ray_cluster.shipped_paths([
        "momentum_12_1",  # built-in: nothing extra
        "acme_alpha.signals:weights",
        "acme_alpha.signals:other",  # same package: shipped once
        "solo_signal:weights",
        "quant_meta_assets.sleeves.strategies:momentum_12_1",  # inside the project: already shipped
        "numpy.linalg:norm",  # a worker package: on the cluster already
    ])
    assert paths == [
        str(Path(quant_meta_assets.__file__).parent),
        str(plugin_dir / "acme_alpha"),
        str(plugin_dir / "solo_signal.py"),
    ]


def test_unknown_plugin_module_is_named():
    with pytest.raises(ClusterConfigError, match="'no_such_pkg_xyz.mod'.*not found on the driver"):
        ray_cluster.shipped_paths(["no_such_pkg_xyz.mod:fn"])


def test_runtime_env_without_a_user_file_is_the_shipped_code(plugin_dir, monkeypatch):
    monkeypatch.delenv(settings.RAY_RUNTIME_ENV_ENV, raising=False)
    env = ray_cluster.cluster_runtime_env(["solo_signal:weights"])
    sources = [Path(quant_meta_assets.__file__).parent, plugin_dir / "solo_signal.py"]
    assert list(env) == ["py_modules"] and len(env["py_modules"]) == 2
    for staged, source in zip(env["py_modules"], sources, strict=True):  # staged copies of the same content
        assert Path(staged).name == source.name and staged != str(source)
        assert ray_cluster.tree_files(staged) == ray_cluster.tree_files(source)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_user_runtime_env_file_is_merged(tmp_path, monkeypatch, suffix):
    user = {"pip": ["scikit-learn==1.9.1"], "env_vars": {"OMP_NUM_THREADS": 1}, "py_modules": ["s3://b/x.zip"]}
    path = tmp_path / f"runtime_env{suffix}"
    path.write_text(json.dumps(user) if suffix == ".json" else textwrap.dedent("""\
        pip: ["scikit-learn==1.9.1"]
        env_vars: {OMP_NUM_THREADS: 1}
        py_modules: ["s3://b/x.zip"]
    """))
    monkeypatch.setenv(settings.RAY_RUNTIME_ENV_ENV, str(path))
    env = ray_cluster.cluster_runtime_env()
    assert env["py_modules"][1:] == ["s3://b/x.zip"]
    assert ray_cluster.tree_files(env["py_modules"][0]) == ray_cluster.tree_files(Path(quant_meta_assets.__file__).parent)
    assert env["pip"] == ["scikit-learn==1.9.1"]
    assert env["env_vars"] == {"OMP_NUM_THREADS": "1"}  # Ray wants strings


def test_merge_keeps_base_env_vars_and_user_wins():
    merged = ray_cluster.merge_runtime_env({"env_vars": {"A": "1", "B": "2"}, "py_modules": ["p"]},
                                           {"env_vars": {"B": "3"}, "py_modules": ["p", "q"], "working_dir": "w"})
    assert merged == {"env_vars": {"A": "1", "B": "3"}, "py_modules": ["p", "q"], "working_dir": "w"}


@pytest.mark.parametrize(("text", "match"), [
    ("pip: [unclosed", "not valid JSON/YAML"),
    ("- just\n- a list\n", "must be a mapping"),
    ("py_modules: notalist\n", "'py_modules' must be a list"),
])
def test_bad_user_runtime_env_names_the_variable_and_file(tmp_path, monkeypatch, text, match):
    path = tmp_path / "env.yaml"
    path.write_text(text)
    monkeypatch.setenv(settings.RAY_RUNTIME_ENV_ENV, str(path))
    with pytest.raises(ClusterConfigError, match=match) as info:
        ray_cluster.cluster_runtime_env()
    if "py_modules" not in match:
        assert settings.RAY_RUNTIME_ENV_ENV in str(info.value) and str(path) in str(info.value)


def test_missing_user_runtime_env_file(tmp_path, monkeypatch):
    monkeypatch.setenv(settings.RAY_RUNTIME_ENV_ENV, str(tmp_path / "absent.yaml"))
    with pytest.raises(ClusterConfigError, match="QUANT_META_RAY_RUNTIME_ENV=.*absent.yaml.*cannot read"):
        ray_cluster.cluster_runtime_env()


def test_local_options_have_no_dashboard_and_never_disable_auth():
    options = ray_cluster.local_init_options(2)
    assert options["include_dashboard"] is False and options["num_cpus"] == 2
    assert "RAY_AUTH_MODE" not in json.dumps(options)


# --------------------------------------------------------------------------- preflight comparison


def _node(driver: dict, **changes) -> dict:
    facts = json.loads(json.dumps(driver))
    facts["node"] = changes.pop("node", "n1")
    facts["imports"] = changes.pop("imports", {})
    for dist, value in changes.pop("packages", {}).items():
        facts["packages"][dist] = value
    facts.update(changes)
    return facts


def test_an_identical_node_passes():
    driver = ray_cluster.driver_facts()
    assert ray_cluster.compare(driver, [_node(driver)]) == []


def test_every_problem_is_named_once_with_its_fix():
    driver = ray_cluster.driver_facts(["acme.x:fn"])
    sk = driver["packages"]["scikit-learn"]["version"]
    pd_version = driver["packages"]["pandas"]["version"]
    missing = {"scikit-learn": {"version": None, "error": "distribution 'scikit-learn' is not installed"}}
    old_pandas = {"pandas": {"version": "2.2.3", "error": None}}
    nodes = [
        _node(driver, node="head", packages={**missing, **old_pandas}),
        _node(driver, node="worker", packages=missing, python="3.10.14", ray="2.9.0",
              imports={"acme.x": "ModuleNotFoundError: No module named 'acme'"}),
    ]
    problems = ray_cluster.compare(driver, nodes)
    text = "\n".join(problems)
    assert len(problems) == 5, text
    assert f"scikit-learn: missing (distribution 'scikit-learn' is not installed); driver has {sk}: " \
           f"pip install 'scikit-learn=={sk}' [2 of 2 node(s)]" in problems
    assert f"pandas: 2.2.3 on the cluster, driver has {pd_version}" in text and "[1 of 2 node(s)]" in text
    assert "Python 3.10.14 on the cluster" in text and "ray 2.9.0 on the cluster" in text
    assert "module 'acme.x' does not import on the cluster: ModuleNotFoundError" in text
    assert ray_cluster.pins_to_install(driver, nodes) == sorted([f"pandas=={pd_version}", f"scikit-learn=={sk}"])


def test_patch_versions_may_differ():
    driver = ray_cluster.driver_facts()
    major, minor = driver["packages"]["numpy"]["version"].split(".")[:2]
    node = _node(driver, packages={"numpy": {"version": f"{major}.{minor}.999", "error": None}})
    assert ray_cluster.compare(driver, [node]) == []


@pytest.mark.slow  # ~9 s (a fresh interpreter per probe): out of make test-fast (<= 3 min)
def test_the_probe_reports_a_package_that_does_not_import():
    """The worker-side probe really imports: a blocked sklearn is reported, not raised."""
    code = ("import sys, json; sys.modules['sklearn'] = None\n"
            "from quant_meta_assets.ray.cluster import _probe\n"
            "print(json.dumps(_probe([])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    facts = json.loads(out.stdout.strip().splitlines()[-1])
    assert "import sklearn failed: ModuleNotFoundError" in facts["packages"]["scikit-learn"]["error"]
    assert facts["packages"]["pandas"]["error"] is None
    assert facts["imports"] == {"quant_meta_assets.sleeves.engine": None}


# --------------------------------------------------------------------------- auth errors


def test_missing_token_error_says_what_to_set(monkeypatch):
    from ray.exceptions import AuthenticationError

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    error = ray_cluster.explain_connect_error("10.0.0.1:6379", AuthenticationError("no token found"))
    assert isinstance(error, RayAuthError)
    for needle in ("'10.0.0.1:6379'", "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN=<token>", "RAY_AUTH_TOKEN_PATH"):
        assert needle in str(error)


def test_refused_connection_without_token_mode_names_it(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    error = ray_cluster.explain_connect_error("h:1", ConnectionError("Failed to connect to Ray cluster at h:1"))
    assert isinstance(error, RayAuthError) and "RAY_AUTH_MODE is not 'token'" in str(error)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret-value-never-printed")
    error = ray_cluster.explain_connect_error("h:1", ConnectionError("Failed to connect to Ray cluster at h:1"))
    assert "may not be the cluster's" in str(error) and "secret-value-never-printed" not in str(error)


def test_other_errors_are_not_called_auth():
    assert ray_cluster.explain_connect_error("h:1", RuntimeError("Version mismatch")) is None


def test_ray_client_gets_time_to_build_its_server_side_runtime_env():
    assert ray_cluster.client_setup_allowance_s("ray://head:10001") > 0
    assert ray_cluster.client_setup_allowance_s("head:6379") == 0


# --------------------------------------------------------------------------- package data and content hashes


def _package_with_ignored_data(root: Path) -> Path:
    package = root / "mystrats"
    (package / "sub").mkdir(parents=True)
    (package / "data").mkdir()
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "strat.py").write_text("from ..data_path import PARAMS\n")
    (package / "data_path.py").write_text("from pathlib import Path\nPARAMS = Path(__file__).parent / 'data' / 'params.json'\n")
    (package / "data" / "params.json").write_text('{"n": 3}')
    (package / "local.cfg").write_text("x")
    (package / ".gitignore").write_text("data/\n")
    (package / ".rayignore").write_text("local.cfg\n")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "data_path.cpython-311.pyc").write_bytes(b"\0")
    return package


def test_staging_ships_what_gitignore_and_rayignore_list_and_only_that(tmp_path):
    package = _package_with_ignored_data(tmp_path)
    staged = Path(ray_cluster.stage_for_shipping(package))
    assert staged.name == "mystrats" and staged != package
    shipped = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    assert shipped == ["__init__.py", "data/params.json", "data_path.py", "local.cfg", "sub/__init__.py",
                       "sub/strat.py"]
    assert ray_cluster.tree_files(staged) == ray_cluster.tree_files(package)
    assert ray_cluster.stage_for_shipping(package) == str(staged)  # same content: staged once
    (package / "data" / "params.json").write_text('{"n": 4}')
    assert ray_cluster.stage_for_shipping(package) != str(staged)  # new content: a new copy


def test_a_shipped_package_that_differs_on_the_cluster_is_named_with_its_files(tmp_path):
    package = _package_with_ignored_data(tmp_path)
    driver = ray_cluster.driver_facts()
    driver["trees"]["mystrats"] = ray_cluster.tree_files(package)
    worker_view = dict(driver["trees"]["mystrats"])
    del worker_view["data/params.json"]  # what Ray's upload left out
    worker_view["sub/strat.py"] = "0" * 64
    node = _node(driver, trees={**driver["trees"], "mystrats": worker_view})
    (problem,) = ray_cluster.compare(driver, [node])
    assert problem.startswith("package 'mystrats' on the cluster is not the driver's (content hash ")
    assert "missing ['data/params.json'], different ['sub/strat.py']" in problem and "[1 of 1 node(s)]" in problem
    assert ray_cluster.compare(driver, [_node(driver, trees=driver["trees"])]) == []
    message = ray_cluster.preflight_message("10.0.0.1:6379", driver, [node])
    assert message.startswith("the Ray cluster at '10.0.0.1:6379' cannot run the sleeves (1 problem(s)")
    assert "- package 'mystrats'" in message
