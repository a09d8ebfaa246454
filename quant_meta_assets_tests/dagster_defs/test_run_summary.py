"""dagster_defs/run_summary: the command `make run` and `make report` call (the whole run: test_run_summary_cli)."""

from __future__ import annotations


def test_the_command_says_when_there_is_no_run(capsys) -> None:
    """An empty instance (the test's own DAGSTER_HOME): nothing to summarise, exit status 1."""
    from quant_meta_assets.dagster_defs.run_summary import main

    assert main(["--job", "meta_full"]) == 1
    assert "No meta_full run in the instance" in capsys.readouterr().out
    assert main(["--job", "meta_full", "--since", "0"]) == 1
    assert "the error above is the cause" in capsys.readouterr().out


def test_the_cause_is_the_user_error_below_dagsters_wrapper() -> None:
    from dagster._utils.error import SerializableErrorInfo

    from quant_meta_assets.dagster_defs.run_summary import MAX_CAUSE_LINES, _cause

    user = SerializableErrorInfo("quant_meta_assets.errors.RegistryError: registry file 'x.yaml', line 3: bad\n", [],
                                 "RegistryError")
    wrapped = SerializableErrorInfo('dagster._core.errors.DagsterExecutionStepExecutionError: Error occurred while '
                                    'executing op "sleeves":\n', [], "DagsterExecutionStepExecutionError", cause=user)
    assert _cause(wrapped) == "RegistryError: registry file 'x.yaml', line 3: bad"
    long = SerializableErrorInfo("Failure: stop the line:\n" + "\n".join(f"- s{i}: stale" for i in range(30)), [],
                                 "Failure")
    lines = _cause(long).splitlines()
    assert lines[0] == "Failure: stop the line:" and len(lines) == MAX_CAUSE_LINES + 1 and "11 more lines" in lines[-1]
