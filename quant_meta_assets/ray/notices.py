"""Ray's log records that the project filters at the source: only notices about our own,
intended settings; every other record stays. No ray import here."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

# Ray 2.60 logs this for every new local cluster whose token auth is on by default (RAY_AUTH_MODE
# unset). Token auth on is our setting (ray_cluster.local_init_options); a newcomer cannot act on it.
TOKEN_AUTH_NOTICE = "Token authentication is enabled for this Ray cluster."
TOKEN_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


class _DropTokenAuthNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(TOKEN_AUTH_NOTICE)


@contextlib.contextmanager
def quiet_token_auth_notice() -> Iterator[None]:
    """Drop Ray's token-auth notice for the duration of our own ``ray.init`` (token auth stays on)."""
    ray_logger = logging.getLogger(TOKEN_AUTH_LOGGER)
    drop = _DropTokenAuthNotice()
    ray_logger.addFilter(drop)
    try:
        yield
    finally:
        ray_logger.removeFilter(drop)
