"""Run-failure alerts: one JSON message, POSTed to a webhook (Slack/Teams-style incoming hooks,
an on-call router, ...). The Dagster run-failure sensor fills it in; nothing here knows Dagster."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from quant_meta_assets.errors import QuantMetaError

__all__ = ["AlertDeliveryError", "failure_alert", "post_json"]


class AlertDeliveryError(QuantMetaError, RuntimeError):
    """The webhook could not be reached or refused the alert."""


def failure_alert(
    *,
    job: str,
    run_id: str,
    ui_url: str,
    failed_sleeves: Mapping[str, str],
    step_errors: Mapping[str, str],
    status: str = "FAILURE",
) -> dict[str, Any]:
    """The alert: which job and run stopped, which sleeves failed and why, where to look."""
    link = f"{ui_url.rstrip('/')}/runs/{run_id}"
    sleeves = [{"sleeve": name, "error": error} for name, error in sorted(failed_sleeves.items())]
    steps = [{"step": step, "error": error} for step, error in sorted(step_errors.items())]
    headline = f"{job} run {run_id[:8]} failed"
    if sleeves:
        headline += f": {len(sleeves)} sleeve(s) failed (" + ", ".join(s["sleeve"] for s in sleeves) + ")"
    elif steps:
        headline += f" at {', '.join(s['step'] for s in steps)}"
    return {
        "text": f"{headline}. {link}",
        "job": job,
        "run_id": run_id,
        "status": status,
        "failed_sleeves": sleeves,
        "failed_steps": steps,
        "run_url": link,
    }


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
