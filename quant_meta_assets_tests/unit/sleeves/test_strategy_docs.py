"""docs/strategies.md is generated from the code and current; its example entry is valid."""

from __future__ import annotations

import yaml

from quant_meta_assets.sleeves.registry import load_registry, validate_universe
from quant_meta_assets.sleeves.strategies import BUILTIN_STRATEGIES, PARAM_SPECS
from quant_meta_assets.sleeves.strategy_docs import DOC_PATH, EXAMPLE_ENTRY, render
from quant_meta_assets_tests.conftest import REPO_ROOT


def test_docs_strategies_md_is_current() -> None:
    assert DOC_PATH == REPO_ROOT / "docs" / "strategies.md"
    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        "docs/strategies.md is stale: run `python -m quant_meta_assets.sleeves.strategy_docs`"
    )


def test_reference_names_every_builtin_and_param() -> None:
    text = render()
    for name, specs in PARAM_SPECS.items():
        assert f"### `{name}`" in text
        for param, spec in specs.items():
            assert f"| `{param}` |" in text and spec.meaning in text
    assert set(PARAM_SPECS) == set(BUILTIN_STRATEGIES)


def test_check_mode_exits_non_zero_when_stale(tmp_path, capsys) -> None:
    from quant_meta_assets.sleeves.strategy_docs import main

    stale = tmp_path / "strategies.md"
    stale.write_text("old\n")
    assert main(["--check", "--path", str(stale)]) == 1 and "NOT current" in capsys.readouterr().out
    assert main(["--check", "--path", str(DOC_PATH)]) == 0
    assert main(["--path", str(stale)]) == 0 and stale.read_text() == render()


def test_example_entry_loads_and_its_universe_is_in_the_bundled_prices(tmp_path) -> None:
    from quant_meta_assets.prices import load_prices

    path = tmp_path / "example.yaml"
    path.write_text(EXAMPLE_ENTRY)
    (profile,) = load_registry(path)
    assert set(yaml.safe_load(EXAMPLE_ENTRY)["sleeves"][0]) == {
        "name", "strategy", "universe", "params", "rebalance", "cost_bps", "timeout_s", "max_retries"
    }
    assert validate_universe(profile, load_prices()) == profile.universe
