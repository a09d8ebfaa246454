"""Ctrl-C on `dagster job execute` cancels the run instead of failing it.

Dagster records an interrupted run as CANCELED only when the run was already marked CANCELING,
which is what a terminate from the UI or GraphQL does before it signals the run worker. An
interrupt that reaches a step without that mark (Ctrl-C in the terminal running the CLI, or a
plain SIGINT to the process) is recorded as "interrupted unexpectedly": a FAILURE, which alerts
and retries as if the book had broken. A step that sees the interrupt therefore marks its run
CANCELING before letting the interrupt through; Dagster then ends the run CANCELED, and the
engine's own cleanup (cancel the Ray tasks, stop the local Ray) runs as the interrupt unwinds.

A run that Dagster will resume (run retries on worker restarts) is left alone: for it the
interrupt is the infrastructure's, not a person's.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import dagster as dg

__all__ = ["cancel_on_interrupt"]

MESSAGE = "Interrupted (Ctrl-C / SIGINT) while {step} was running: the run is canceled."


@contextmanager
def cancel_on_interrupt(context: dg.OpExecutionContext) -> Iterator[None]:
    try:
        yield
    except (KeyboardInterrupt, dg.DagsterExecutionInterruptedError):
        _mark_canceling(context)
        raise


def _mark_canceling(context: dg.OpExecutionContext) -> None:
    instance, run_id = context.instance, context.run_id
    try:
        run = instance.get_run_by_id(run_id)
        if run is None or run.status != dg.DagsterRunStatus.STARTED or instance.run_will_resume(run_id):
            return  # already CANCELING (a terminate), finished, or to be resumed by the daemon
        instance.report_run_canceling(run, message=MESSAGE.format(step=context.op.name))
    except Exception as exc:  # the interrupt must get through whatever the instance does
        context.log.warning(f"could not mark run {run_id} as canceling after an interrupt: {exc!r}")
