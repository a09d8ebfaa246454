"""Run-failure alerts: one JSON message, POSTed to a webhook (Slack/Teams-style incoming hooks,
an on-call router, ...). The Dagster run-failure sensor fills it in; nothing here knows Dagster.

Delivery is at-least-once across sensor ticks and at-most-once per run: `AlertQueue` (kept in the
sensor's cursor) remembers which failed runs still owe an alert, retries each with exponential
backoff until it is delivered or `max_attempts` is reached (then it is given up and logged as
undelivered), and remembers the runs already delivered so none is sent twice."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from quant_meta_assets.errors import QuantMetaError

__all__ = ["AlertDeliveryError", "AlertQueue", "PendingAlert", "failure_alert", "post_json", "root_cause_text"]


class AlertDeliveryError(QuantMetaError, RuntimeError):
    """The webhook could not be reached or refused the alert."""


MAX_ERROR_CHARS = 1000


def root_cause_text(chain: Sequence[tuple[str, str]]) -> str:
    """``Type: message`` of the innermost error of a chain ``[(class name, message), ...]`` listed
    from the outermost wrapper (Dagster's "Error occurred while executing op") to the raised error.

    A message that starts with the module-qualified class name (``quant_meta_assets.errors.RegistryError:
    ...``, as Python's traceback formats it) is shortened to the bare class name."""
    if not chain:
        return ""
    cls_name, message = chain[-1]
    text = (message or "").strip()
    head, sep, rest = text.partition(":")
    if sep and (head == cls_name or head.endswith("." + cls_name)):
        text = rest.strip()
    text = f"{cls_name}: {text}" if text else cls_name
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "\u2026"


def failure_alert(
    *,
    job: str,
    run_id: str,
    ui_url: str,
    failed_sleeves: Mapping[str, str],
    step_errors: Mapping[str, str],
    status: str = "FAILURE",
    run_failure: str = "",
) -> dict[str, Any]:
    """The alert: which job and run stopped, which sleeves failed and why, where to look.

    ``step_errors`` maps each failed step to its root cause (``root_cause_text``); ``run_failure``
    is the run's own failure message (run monitoring, a crashed run worker, an interrupted run):
    the cause when no step failed."""
    link = f"{ui_url.rstrip('/')}/runs/{run_id}"
    sleeves = [{"sleeve": name, "error": error} for name, error in sorted(failed_sleeves.items())]
    steps = [{"step": step, "error": error} for step, error in sorted(step_errors.items())]
    headline = f"{job} run {run_id[:8]} failed"
    if sleeves:
        headline += f": {len(sleeves)} sleeve(s) failed (" + ", ".join(s["sleeve"] for s in sleeves) + ")"
        cause = sleeves[0]["error"]
    elif steps:
        headline += f" at {', '.join(s['step'] for s in steps)}"
        cause = steps[0]["error"]
    else:
        cause = run_failure.strip()
    if cause:
        headline += f": {cause.splitlines()[0]}"
    return {
        "text": f"{headline}. {link}",
        "job": job,
        "run_id": run_id,
        "status": status,
        "root_cause": cause,
        "failed_sleeves": sleeves,
        "failed_steps": steps,
        "run_failure": run_failure.strip(),
        "run_url": link,
    }


@dataclass
class PendingAlert:
    """A failed run whose alert is not delivered yet."""

    run_id: str
    attempts: int = 0
    next_try: float = 0.0  # epoch seconds: not retried before
    last_error: str = ""


@dataclass
class AlertQueue:
    """The alert sensor's state (its cursor), pure data: which failure events were read, which runs
    still owe an alert, and the last runs delivered.

    Backoff after the n-th failed attempt: ``backoff_s * 2**(n-1)``, capped at ``max_backoff_s``.
    After ``max_attempts`` failed attempts the alert is given up (the caller logs it undelivered)."""

    after_storage_id: int | None = None  # None: never initialised
    pending: dict[str, PendingAlert] = field(default_factory=dict)
    delivered: list[str] = field(default_factory=list)
    KEEP_DELIVERED = 500

    @classmethod
    def from_cursor(cls, cursor: str | None) -> AlertQueue:
        if not cursor:
            return cls()
        data = json.loads(cursor)
        pending = {
            run_id: PendingAlert(run_id=run_id, **entry) for run_id, entry in (data.get("pending") or {}).items()
        }
        return cls(after_storage_id=data.get("after_storage_id"), pending=pending,
                   delivered=list(data.get("delivered") or []))

    def to_cursor(self) -> str:
        return json.dumps({
            "after_storage_id": self.after_storage_id,
            "pending": {r: {"attempts": p.attempts, "next_try": p.next_try, "last_error": p.last_error}
                        for r, p in self.pending.items()},
            "delivered": self.delivered[-self.KEEP_DELIVERED:],
        }, sort_keys=True)

    def add(self, run_id: str) -> bool:
        """Queue a failed run's alert; False when it is already queued or delivered."""
        if run_id in self.pending or run_id in self.delivered:
            return False
        self.pending[run_id] = PendingAlert(run_id=run_id)
        return True

    def due(self, now: float | None = None) -> list[PendingAlert]:
        now = time.time() if now is None else now
        return [p for p in self.pending.values() if p.next_try <= now]

    def delivered_ok(self, run_id: str) -> None:
        self.pending.pop(run_id, None)
        self.delivered = [r for r in self.delivered if r != run_id] + [run_id]
        del self.delivered[: -self.KEEP_DELIVERED]

    def attempt_failed(
        self, run_id: str, error: str, *, max_attempts: int, backoff_s: float, max_backoff_s: float,
        now: float | None = None,
    ) -> bool:
        """Record a failed delivery; True when the bound is reached and the alert is given up."""
        now = time.time() if now is None else now
        entry = self.pending[run_id]
        entry.attempts += 1
        entry.last_error = error
        if entry.attempts >= max_attempts:
            del self.pending[run_id]
            return True
        entry.next_try = now + min(backoff_s * 2 ** (entry.attempts - 1), max_backoff_s)
        return False


def post_json(url: str, payload: Mapping[str, Any], timeout_s: float = 10.0) -> int:
    """POST ``payload`` as JSON; the HTTP status, or AlertDeliveryError naming the URL and cause."""
    if not url.startswith(("http://", "https://")):
        raise AlertDeliveryError(f"alert webhook URL {url!r} must start with http:// or https://")
    body = json.dumps(payload, default=str).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        raise AlertDeliveryError(f"alert webhook {url!r} answered HTTP {exc.code}: {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise AlertDeliveryError(f"alert webhook {url!r} is unreachable: {exc}") from exc
