"""The alert queue (the sensor's cursor) and the root-cause text, without Dagster."""

from __future__ import annotations

from quant_meta_assets.alerts import AlertQueue, root_cause_text


def test_root_cause_is_the_innermost_error_with_its_bare_class_name():
    chain = [
        ("DagsterExecutionStepExecutionError", 'Error occurred while executing op "sleeves":\n'),
        ("RegistryError", "quant_meta_assets.errors.RegistryError: registry file s.yaml, line 4: bad\n"),
    ]
    assert root_cause_text(chain) == "RegistryError: registry file s.yaml, line 4: bad"
    assert root_cause_text([("ValueError", "ValueError: boom")]) == "ValueError: boom"
    assert root_cause_text([("KeyError", "")]) == "KeyError"
    assert root_cause_text([]) == ""
    assert len(root_cause_text([("E", "x" * 5000)])) == 1000


def test_backoff_doubles_up_to_the_cap_and_the_bound_gives_up():
    queue = AlertQueue(after_storage_id=7)
    assert queue.add("r1") and not queue.add("r1")
    assert [p.run_id for p in queue.due(now=0)] == ["r1"]
    waits = []
    for _ in range(3):
        assert not queue.attempt_failed("r1", "refused", max_attempts=4, backoff_s=30, max_backoff_s=100, now=1000)
        waits.append(queue.pending["r1"].next_try - 1000)
    assert waits == [30, 60, 100]
    assert queue.due(now=1099) == [] and [p.run_id for p in queue.due(now=1100)] == ["r1"]
    assert queue.attempt_failed("r1", "refused", max_attempts=4, backoff_s=30, max_backoff_s=100, now=1100)
    assert queue.pending == {}


def test_the_cursor_round_trips_and_a_delivered_run_is_never_queued_again():
    queue = AlertQueue(after_storage_id=3)
    queue.add("a")
    queue.add("b")
    queue.attempt_failed("b", "down", max_attempts=5, backoff_s=1, max_backoff_s=10, now=0)
    queue.delivered_ok("a")
    again = AlertQueue.from_cursor(queue.to_cursor())
    assert again == queue
    assert not again.add("a")  # delivered
    assert again.pending["b"].attempts == 1 and again.pending["b"].last_error == "down"
    assert AlertQueue.from_cursor(None).after_storage_id is None
