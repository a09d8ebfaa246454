"""dagster_defs/run_summary: the command `make run` and `make report` call (the whole run: test_run_summary_cli)."""

from __future__ import annotations


def test_the_command_says_when_there_is_no_run(capsys) -> None:
    """An empty instance (the test's own DAGSTER_HOME): nothing to summarise, exit status 1."""
    from quant_meta_assets.dagster_defs.run_summary import main

    assert main(["--job", "meta_full"]) == 1
    assert "No meta_full run in the instance" in capsys.readouterr().out
    assert main(["--job", "meta_full", "--since", "0"]) == 1
    assert "the error above is the cause" in capsys.readouterr().out
