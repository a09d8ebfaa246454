"""registry: YAML loading, every refusal, sleeve-name safety, strategy resolution."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quant_meta_assets.errors import RegistryError
from quant_meta_assets.sleeves.registry import (
    SLEEVES_ENV_VAR,
    SleeveProfile,
    load_registry,
    resolve_strategy,
    validate_sleeve_name,
    validate_universe,
)
from quant_meta_assets.sleeves.strategies import BUILTIN_STRATEGIES, momentum_12_1


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SLEEVES_ENV_VAR, raising=False)


def _write(tmp_path: Path, body: str, name: str = "reg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _raises(path: Path, *needles: str) -> str:
    with pytest.raises(RegistryError) as info:
        load_registry(path)
    msg = str(info.value)
    for needle in (path.name, *needles):
        assert needle in msg, (needle, msg)
    return msg


def test_bundled_default_registry() -> None:
    profiles = load_registry()
    assert [p.name for p in profiles] == [
        "momentum_12_1", "short_term_reversal", "low_volatility",
        "trend_vol_target", "min_variance", "equal_weight",
    ]
    assert {p.strategy for p in profiles} == set(BUILTIN_STRATEGIES)
    assert all(5 <= p.cost_bps <= 10 and p.timeout_s > 0 and p.max_retries >= 0 for p in profiles)
    assert pickle.loads(pickle.dumps(profiles)) == profiles
    assert len({hash(p) for p in profiles}) == len(profiles)


def test_defaults_merge_order_and_env_var(tmp_path, monkeypatch) -> None:
    path = _write(tmp_path, """
        defaults: {timeout_s: 12, max_retries: 3, cost_bps: 7, rebalance: weekly}
        sleeves:
          - {name: zeta, strategy: equal_weight}
          - {name: alpha, strategy: momentum_12_1, params: {top_n: 3}, cost_bps: 0, universe: [AAPL, MSFT]}
    """)
    monkeypatch.setenv(SLEEVES_ENV_VAR, str(path))
    zeta, alpha = load_registry()
    assert (zeta.name, alpha.name) == ("zeta", "alpha")  # file order kept
    assert (zeta.timeout_s, zeta.max_retries, zeta.cost_bps, zeta.rebalance) == (12.0, 3, 7.0, "weekly")
    assert alpha.cost_bps == 0.0 and alpha.params == {"top_n": 3} and alpha.universe == ("AAPL", "MSFT")


def test_yaml_syntax_error_names_the_line(tmp_path) -> None:
    path = _write(tmp_path, "sleeves:\n  - name: a\n    strategy: [equal_weight\n  - name: b\n")
    _raises(path, "YAML syntax error", "line ")
    msg = _raises(path)
    assert any(f"line {n}" in msg for n in (3, 4, 5))


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ("", ["empty"]),
        ("defaults: {timeout_s: 1}\n", ["no sleeves"]),
        ("sleeves: []\n", ["no sleeves"]),
        ("- a\n- b\n", ["top level must be a mapping"]),
        ("sleeves:\n  - {name: a, strategy: equal_weight}\n  - {name: a, strategy: equal_weight}\n",
         ["duplicate sleeve name 'a'", "line 3", "line 2"]),
        ("sleeves:\n  - {name: '../x', strategy: equal_weight}\n", ["'../x'", "invalid sleeve name"]),
        ("sleeves:\n  - {name: 'a b', strategy: equal_weight}\n", ["'a b'"]),
        ("sleeves:\n  - {name: 'é', strategy: equal_weight}\n", ["'é'"]),
        (f"sleeves:\n  - {{name: {'a' * 65}, strategy: equal_weight}}\n", ["a" * 65, "1-64"]),
        ("sleeves:\n  - {name: 12, strategy: equal_weight}\n", ["12", "must be a string"]),
        ("sleeves:\n  - {name: a, strategy: equal_weight, colour: red}\n", ["'a'", "unknown key", "colour"]),
        ("sleeves:\n  - {name: a}\n", ["'a'", "missing required key 'strategy'"]),
        ("sleeves:\n  - {name: a, strategy: nope}\n", ["'a'", "unknown built-in strategy 'nope'", "equal_weight"]),
        ("sleeves:\n  - {name: a, strategy: 'no_such_pkg.mod:fn'}\n",
         ["'a'", "no_such_pkg.mod", "ModuleNotFoundError"]),
        ("sleeves:\n  - {name: a, strategy: 'quant_meta_assets.sleeves.strategies:nope'}\n", ["'a'", "no attribute 'nope'"]),
        ("sleeves:\n  - {name: a, strategy: 'quant_meta_assets.sleeves.strategies:TRADING_DAYS'}\n", ["not callable"]),
        ("sleeves:\n  - {name: a, strategy: momentum_12_1, params: {topn: 3}}\n",
         ["'a'", "unknown param", "topn", "top_n", "lookback"]),
        ("sleeves:\n  - {name: a, strategy: equal_weight, cost_bps: -1}\n", ["'a'", "cost_bps", "-1"]),
        ("sleeves:\n  - {name: a, strategy: equal_weight, rebalance: hourly}\n", ["'a'", "rebalance", "hourly"]),
        ("sleeves:\n  - {name: a, strategy: equal_weight, timeout_s: 0}\n", ["'a'", "timeout_s"]),
        ("sleeves:\n  - {name: a, strategy: equal_weight, max_retries: -1}\n", ["'a'", "max_retries"]),
        ("sleeves:\n  - {name: a, strategy: equal_weight, universe: AAPL}\n", ["'a'", "universe"]),
        ("sleeves:\n  - {name: a, strategy: equal_weight, universe: [AAPL, 3]}\n", ["'a'", "universe", "3"]),
        ("defaults: {colour: red}\nsleeves:\n  - {name: a, strategy: equal_weight}\n", ["defaults", "colour"]),
    ],
)
def test_bad_registry_is_refused(tmp_path, body: str, needles: list[str]) -> None:
    _raises(_write(tmp_path, body), *needles)


def test_params_not_checked_when_strategy_takes_kwargs(tmp_path) -> None:
    path = _write(tmp_path, """
        sleeves:
          - {name: a, strategy: 'quant_meta_assets_tests.unit.sleeves.test_registry:kwargs_strategy', params: {x: 1}}
    """)
    (profile,) = load_registry(path)
    assert profile.params == {"x": 1}


def kwargs_strategy(prices: pd.DataFrame, **params: object) -> pd.DataFrame:
    return prices.iloc[:1] * 0 + 1.0 / prices.shape[1]


def test_resolve_strategy() -> None:
    assert resolve_strategy("momentum_12_1") is momentum_12_1
    assert resolve_strategy("quant_meta_assets.sleeves.strategies:momentum_12_1") is momentum_12_1
    with pytest.raises(RegistryError, match="known built-ins"):
        resolve_strategy("momentum")
    with pytest.raises(RegistryError, match="no_such_pkg"):
        resolve_strategy("no_such_pkg.mod:fn")


def test_validate_universe_names_missing_tickers() -> None:
    prices = pd.DataFrame({"AAPL": [1.0], "MSFT": [2.0]}, index=pd.DatetimeIndex(["2021-01-04"], name="date"))
    assert validate_universe(SleeveProfile(name="s", strategy="equal_weight"), prices) == ("AAPL", "MSFT")
    profile = SleeveProfile(name="s", strategy="equal_weight", universe=("AAPL", "ZZZZ", "YYY"))
    with pytest.raises(RegistryError, match=r"sleeve 's'.*\['ZZZZ', 'YYY'\]"):
        validate_universe(profile, prices)


def test_profile_validates_on_construction_and_is_hashable() -> None:
    with pytest.raises(RegistryError, match="cost_bps"):
        SleeveProfile(name="s", strategy="equal_weight", cost_bps=-0.5)
    with pytest.raises(RegistryError, match="invalid sleeve name"):
        SleeveProfile(name="a/b", strategy="equal_weight")
    p = SleeveProfile(name="s", strategy="equal_weight", params={"a": [1]})
    assert hash(p) == hash(SleeveProfile(name="s", strategy="equal_weight", params={"b": 2}))


@pytest.mark.parametrize("name", ["", "../x", "a b", "é", "a" * 65, "a/b", "a\\b", ".", "..", "a.b", "x\n", None, 3, b"ab"])
def test_validate_sleeve_name_refuses(name: object) -> None:
    with pytest.raises(RegistryError) as info:
        validate_sleeve_name(name)
    assert repr(name) in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.from_regex(r"[A-Za-z0-9_.\-/]{0,70}", fullmatch=True)))
def test_validated_names_stay_direct_children_of_root(name: str) -> None:
    root = Path("sleeve_root").resolve()
    try:
        ok = validate_sleeve_name(name)
    except RegistryError:
        return
    target = (root / ok).resolve()
    assert target.parent == root and target.name == ok


# --- every param checked at load, with its own line and "did you mean"

_PARAM_BODY = """\
defaults:
  cost_bps: 5
sleeves:
  - name: ok
    strategy: equal_weight
  - name: mom
    strategy: momentum_12_1
    params:
      lookback: 252
      {param}
"""


@pytest.mark.parametrize(
    ("param", "needles"),
    [
        ("top_n: 0", ["param 'top_n' (line 10)", "integer >= 1", "got 0"]),
        ("top_n: 2.5", ["param 'top_n' (line 10)", "integer", "2.5"]),
        ("top_n: '5'", ["param 'top_n' (line 10)", "integer", "'5'"]),
        ("top_n: true", ["param 'top_n' (line 10)", "True"]),
        ("top_n: null", ["param 'top_n' (line 10)", "got null"]),
        ("skip: 300", ["param 'skip' (line 10)", "< lookback (252)", "300"]),
        ("skip: -1", ["param 'skip' (line 10)", "integer >= 0", "-1"]),
        ("topn: 3", ["param 'topn' (line 10)", "unknown param", "did you mean 'top_n'?"]),
    ],
)
def test_bad_param_value_names_file_sleeve_and_the_params_own_line(tmp_path, param: str, needles: list[str]) -> None:
    msg = _raises(_write(tmp_path, _PARAM_BODY.format(param=param)), "sleeve 'mom'", *needles)
    assert "strategy 'momentum_12_1'" in msg


@pytest.mark.parametrize(
    ("strategy", "params", "needles"),
    [
        ("trend_vol_target", "{target_vol: 0}", ["target_vol", "number > 0", "got 0"]),
        ("trend_vol_target", "{max_leverage: .nan}", ["max_leverage", "nan"]),
        ("trend_vol_target", "{vol_lookback: 1}", ["vol_lookback", "integer >= 2"]),
        ("low_volatility", "{lookback: 1}", ["lookback", "integer >= 2"]),
        ("min_variance", "{lookback: 1}", ["lookback", "integer >= 2"]),
        ("short_term_reversal", "{lookback: 0}", ["lookback", "integer >= 1"]),
        ("'quant_meta_assets.sleeves.strategies:momentum_12_1'", "{top_n: 0}", ["top_n", "integer >= 1"]),
        ("equal_weight", "{top_n: 3}", ["unknown param", "accepts []"]),
    ],
)
def test_every_builtin_value_is_checked_at_load(tmp_path, strategy: str, params: str, needles: list[str]) -> None:
    body = f"sleeves:\n  - name: s\n    strategy: {strategy}\n    params: {params}\n"
    _raises(_write(tmp_path, body), "sleeve 's'", "(line 4)", *needles)


def test_valid_edge_values_load(tmp_path) -> None:
    body = """
        sleeves:
          - {name: a, strategy: low_volatility, params: {top_n: null, lookback: 2}}
          - {name: b, strategy: momentum_12_1, params: {lookback: 5, skip: 4, top_n: 1}}
          - {name: c, strategy: trend_vol_target, params: {target_vol: 1, max_leverage: 2.5}}
    """
    assert [p.name for p in load_registry(_write(tmp_path, body))] == ["a", "b", "c"]


def test_did_you_mean_for_strategy_and_sleeve_keys(tmp_path) -> None:
    msg = _raises(_write(tmp_path, "sleeves:\n  - name: a\n    strategy: low_vol\n"),
                  "sleeve 'a'", "'strategy' (line 3)", "did you mean 'low_volatility'?")
    assert "known built-ins" in msg
    _raises(_write(tmp_path, "sleeves:\n  - name: a\n    strategy: equal_weight\n    rebalence: weekly\n"),
            "unknown key", "'rebalence'", "line 4", "did you mean 'rebalance'?")
    _raises(_write(tmp_path, "sleves:\n  - name: a\n    strategy: equal_weight\n"),
            "unknown top-level key", "did you mean 'sleeves'?")
    _raises(_write(tmp_path, "defaults: {timeout: 3}\nsleeves:\n  - name: a\n    strategy: equal_weight\n"),
            "'defaults'", "did you mean 'timeout_s'?")
    msg = _raises(_write(tmp_path, "sleeves:\n  - name: a\n    strategy: zzzzzz\n"), "unknown built-in")
    assert "did you mean" not in msg


def test_param_specs_agree_with_the_builtin_signatures() -> None:
    """The declared schema names exactly the signature's params, and every default satisfies it."""
    import inspect

    from quant_meta_assets.sleeves.strategies import PARAM_SPECS

    assert set(PARAM_SPECS) == set(BUILTIN_STRATEGIES)
    for name, fn in BUILTIN_STRATEGIES.items():
        params = dict(list(inspect.signature(fn).parameters.items())[1:])
        assert set(params) == set(PARAM_SPECS[name]), name
        for param, spec in PARAM_SPECS[name].items():
            assert spec.problem(params[param].default) is None, (name, param)
            assert spec.meaning, (name, param)


def test_a_value_refused_at_load_is_also_refused_by_the_strategy() -> None:
    """The schema is not looser than the strategies' own checks on the worker, nor stricter."""
    from quant_meta_assets.sleeves.strategies import PARAM_SPECS

    prices = pd.DataFrame(
        {"A": [1.0 + 0.01 * i for i in range(40)], "B": [2.0 - 0.01 * i for i in range(40)]},
        index=pd.bdate_range("2020-01-01", periods=40, name="date"),
    )
    for name, specs in PARAM_SPECS.items():
        for param, spec in specs.items():
            low = int(spec.minimum) - 1 if spec.kind == "int" else spec.minimum
            assert spec.problem(low) is not None
            with pytest.raises(RegistryError, match=param):
                BUILTIN_STRATEGIES[name](prices, **{param: low})


def test_a_bad_value_fails_the_pipeline_before_ray_is_even_imported(tmp_path) -> None:
    """`top_n: 0` is refused when the registry loads, naming its line, before Ray is imported (not on a worker 20 s later)."""
    import os
    import subprocess
    import sys

    from quant_meta_assets_tests.conftest import REPO_ROOT

    path = _write(tmp_path, "sleeves:\n  - name: mom\n    strategy: momentum_12_1\n    params:\n      top_n: 0\n")
    code = ("import sys\nfrom quant_meta_assets import run_meta_pipeline\nfrom quant_meta_assets.errors import RegistryError\n"
            "try:\n    run_meta_pipeline()\nexcept RegistryError as exc:\n    print(exc)\n"
            "print('ray imported:', 'ray' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, SLEEVES_ENV_VAR: str(path), "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "param 'top_n' (line 5): must be an integer >= 1, got 0" in done.stdout and path.name in done.stdout
    assert done.stdout.splitlines()[-1] == "ray imported: False"


@pytest.mark.parametrize(
    ("params", "needles"),
    [
        ("{top_n: '3'}", ["param 'top_n' (line 4)", "must be an integer (annotated int), got '3'"]),
        ("{top_n: 2.5}", ["param 'top_n'", "an integer", "2.5"]),
        ("{top_n: true}", ["param 'top_n'", "True"]),
        ("{scale: fast}", ["param 'scale'", "a number (annotated float), got 'fast'"]),
        ("{label: 3}", ["param 'label'", "a string"]),
        ("{top_n: null}", ["param 'top_n'", "must not be null"]),
    ],
)
def test_a_plugins_simple_annotations_are_checked_at_load(tmp_path, params: str, needles: list[str]) -> None:
    body = ("sleeves:\n  - name: p\n    strategy: 'quant_meta_assets_tests.unit.sleeves.test_registry:annotated'\n"
            f"    params: {params}\n")
    _raises(_write(tmp_path, body), "sleeve 'p'", *needles)


def test_a_plugin_param_that_fits_its_annotation_loads(tmp_path) -> None:
    body = ("sleeves:\n  - name: p\n    strategy: 'quant_meta_assets_tests.unit.sleeves.test_registry:annotated'\n"
            "    params: {top_n: 2, scale: 3, label: null, anything: [1, 2]}\n")
    (profile,) = load_registry(_write(tmp_path, body))
    assert profile.params == {"top_n": 2, "scale": 3, "label": None, "anything": [1, 2]}


def annotated(prices: pd.DataFrame, top_n: int = 3, scale: float = 1.0, label: str | None = None,
              anything=None) -> pd.DataFrame:
    """A plug-in whose simple annotations the registry checks at load (equal weight)."""
    return pd.DataFrame(1.0 / prices.shape[1], index=prices.index, columns=prices.columns)
