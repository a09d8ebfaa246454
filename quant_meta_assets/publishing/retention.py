"""Retention of run-scoped outputs: keep the last N runs, never what is still pointed to.

Every run leaves ``runs/<run id>/`` (price snapshot, sleeve bundles, meta bundles) and, when its
report ran, ``reports/<run id>/`` (the HTML report). ``prune_runs`` keeps the ``keep`` most
recent runs (by the newest modification time of their directories) plus every protected run id:
every run the published set reads (its meta runs and its sleeves' runs) and, as the Dagster
driver adds, the runs of the latest materializations (every sleeve partition's included), the
runs still in progress and their parents (which a re-execution reads). Everything else is removed, first renamed out of the way so a
reader never sees a half-deleted run. Directories whose names are not run ids are left alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterable
from pathlib import Path

from quant_meta_assets import settings
from quant_meta_assets.publishing import snapshot as publication

__all__ = ["RUN_SCOPED_PARENTS", "prune_runs", "run_dirs"]

RUN_SCOPED_PARENTS = (publication.RUNS_DIR, "reports")
# Dagster run ids are UUIDs; anything else under runs/ or reports/ (e.g. reports/sdk) is not ours to prune
_RUN_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def run_dirs(root: Path | str | None = None) -> dict[str, list[Path]]:
    """Run id -> its run-scoped directories under the storage root."""
    base = Path(root) if root is not None else settings.storage_root()
    found: dict[str, list[Path]] = {}
    for parent in RUN_SCOPED_PARENTS:
        directory = base / parent
        if not directory.is_dir():
            continue
        for child in directory.iterdir():
            if child.is_dir() and not child.is_symlink() and _RUN_ID.fullmatch(child.name):
                found.setdefault(child.name, []).append(child)
    return found


def _newest_mtime(paths: list[Path]) -> float:
    newest = 0.0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            newest = max(newest, path.stat().st_mtime)
    return newest


def prune_runs(root: Path | str | None, keep: int, protected: Iterable[str] = ()) -> list[str]:
    """Delete the run-scoped outputs of every run beyond the ``keep`` newest, except ``protected``.

    The published run is always protected. Returns the pruned run ids, oldest first.
    """
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep must be a whole number of runs >= 1, got {keep!r}")
    base = Path(root) if root is not None else settings.storage_root()
    keep_ids = set(protected)
    keep_ids |= publication.named_runs(publication.published_manifest(base))
    runs = run_dirs(base)
    newest_first = sorted(runs, key=lambda run_id: _newest_mtime(runs[run_id]), reverse=True)
    keep_ids.update(newest_first[:keep])
    pruned = [run_id for run_id in reversed(newest_first) if run_id not in keep_ids]
    for run_id in pruned:
        for directory in runs[run_id]:
            doomed = directory.with_name(f".{directory.name}.pruned-{os.getpid()}-{secrets.token_hex(4)}")
            try:
                os.rename(directory, doomed)
            except FileNotFoundError:
                continue
            shutil.rmtree(doomed, ignore_errors=True)
    return pruned
