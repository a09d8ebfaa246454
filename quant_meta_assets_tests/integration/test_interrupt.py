"""An interrupt that arrives while the engine waits on Ray (Ctrl-C, or Dagster's SIGINT when a
run is terminated) reaches the caller as itself, not as Ray's SystemError, so Dagster records a
cancel (CANCELED for a terminated run) instead of a step failure, and the engine's cleanup runs."""

from __future__ import annotations

import signal
import time

import pytest

pytestmark = [pytest.mark.timeout(120)]


@pytest.mark.parametrize("wait", ["engine", "ray"])
def test_an_interrupt_during_ray_wait(local_ray, wait):
    import ray

    from dagster._core.errors import DagsterExecutionInterruptedError

    from quant_meta_assets.ray.compute import _wait

    @ray.remote
    def sleepy():
        time.sleep(60)

    ref = sleepy.remote()

    def interrupt(signum, frame):  # what Dagster's SIGINT handler raises in a run
        raise DagsterExecutionInterruptedError("terminated")

    previous = signal.signal(signal.SIGALRM, interrupt)
    # the alarm fires during the wait; Ray runs the handler only when its wait returns, so the
    # wait's timeout (5 s, not longer) is the test's duration
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    try:
        if wait == "engine":
            with pytest.raises(DagsterExecutionInterruptedError):
                _wait([ref], num_returns=1, timeout=5)
        else:  # what Ray itself does (Ray 2.x), which the engine's wrapper undoes
            with pytest.raises(SystemError, match="returned a result with an exception set") as raised:
                ray.wait([ref], num_returns=1, timeout=5)
            assert isinstance(raised.value.__context__, DagsterExecutionInterruptedError)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        ray.cancel(ref, force=True)
