"""One published snapshot of the meta outputs: a reader sees the four of one run, or the previous set.

Each run stores its outputs under its own directory, ``runs/<run id>/meta/<stage>/`` (and its
price snapshot under ``runs/<run id>/prices/``), and never rewrites another run's. A run whose
``meta/report`` is stored then switches the pointer ``published.json`` at the storage root
(temp file + ``os.replace``) to its four bundles. A run that fails at any meta stage never
reaches that point, so the pointer keeps naming the last complete set; there is nothing to roll
back. Consumers (an OMS reading target asset weights, a notebook) use ``read_published()``, one
function and one path, and never the run directories directly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quant_meta_assets import settings
from quant_meta_assets.bundle_values import join_value
from quant_meta_assets.errors import StorageError
from quant_meta_assets.storage import BUNDLE_MANIFEST, atomic_write_json, read_bundle, read_json, safe_child

__all__ = [
    "META_OUTPUTS",
    "POINTER",
    "RUNS_DIR",
    "PublishedSnapshot",
    "publish",
    "published_manifest",
    "published_path",
    "read_published",
    "run_scoped_dir",
]

POINTER = "published.json"
RUNS_DIR = "runs"
FORMAT = "quant_meta_published/1"
META_OUTPUTS = ("meta/returns", "meta/optimize", "meta/flatten", "meta/report")  # asset keys, in stage order
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def _root(root: Path | str | None) -> Path:
    return Path(root) if root is not None else settings.storage_root()


def run_scoped_dir(root: Path | str | None, run_id: str, asset_path: tuple[str, ...] | list[str]) -> Path:
    """``<root>/runs/<run id>/<asset key path>``, checked to stay inside the root."""
    if not isinstance(run_id, str) or _RUN_ID.fullmatch(run_id) is None:
        raise StorageError(f"run id {run_id!r} is not a plain run id ([A-Za-z0-9_-], 1-128 characters)")
    return safe_child(_root(root), RUNS_DIR, run_id, *asset_path)


def published_path(root: Path | str | None = None) -> Path:
    """The one path consumers watch: ``<storage root>/published.json``."""
    return _root(root) / POINTER


def publish(root: Path | str | None, run_id: str, bundles: Mapping[str, Path]) -> dict[str, Any]:
    """Point ``published.json`` at ``bundles`` (asset key -> stored bundle dir), atomically.

    Every one of the four meta outputs must be given, lie inside the root and be a complete
    bundle (its manifest is written last); otherwise StorageError and the pointer is untouched.
    """
    base = _root(root).resolve()
    missing = [key for key in META_OUTPUTS if key not in bundles]
    if missing:
        raise StorageError(f"cannot publish run {run_id!r}: no stored bundle for {missing}")
    relative = {}
    for key in META_OUTPUTS:
        directory = Path(bundles[key]).resolve()
        if not directory.is_relative_to(base) or directory == base:
            raise StorageError(f"cannot publish {key} from {str(directory)!r}: outside the storage root {str(base)!r}")
        if not (directory / BUNDLE_MANIFEST).is_file():
            raise StorageError(f"cannot publish {key}: {str(directory)!r} is not a complete stored bundle")
        relative[key] = directory.relative_to(base).as_posix()
    manifest = {
        "format": FORMAT,
        "run_id": run_id,
        "published_at": datetime.now(UTC).isoformat(),
        "outputs": relative,
    }
    atomic_write_json(base / POINTER, manifest)
    return manifest


def published_manifest(root: Path | str | None = None) -> dict[str, Any] | None:
    """The current pointer (run id, time, asset key -> relative bundle dir), or None if nothing is published."""
    path = published_path(root)
    if not path.is_file():
        return None
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StorageError(f"{str(path)!r} is not a published-snapshot pointer (format {FORMAT!r})")
    return manifest


@dataclass(frozen=True)
class PublishedSnapshot:
    """The four meta outputs of one publication, as the assets returned them."""

    run_id: str
    published_at: str
    outputs: dict[str, Any]  # "meta/returns" -> DataFrame, "meta/optimize" -> {"weights", "diagnostics"}, ...

    @property
    def asset_weights(self):
        """Target asset weights (date x ticker): what an OMS trades towards."""
        return self.outputs["meta/flatten"]["asset_weights"]


def read_published(root: Path | str | None = None) -> PublishedSnapshot:
    """Load the published snapshot: the four meta outputs of one run, read together.

    The bundles a pointer names are never rewritten, so a reader that raced a new publication
    still gets one consistent set; if retention removed that set under it, the read is retried
    on the new pointer.
    """
    for _attempt in range(3):
        manifest = published_manifest(root)
        if manifest is None:
            raise StorageError(
                f"nothing is published under {str(published_path(root))!r} yet: run meta_full "
                "(a run publishes once its meta/report is stored)"
            )
        base = _root(root)
        try:
            outputs = {}
            for key in META_OUTPUTS:
                parts = manifest["outputs"][key].split("/")
                outputs[key] = join_value(*read_bundle(safe_child(base, *parts)))
        except StorageError:
            if published_manifest(root) != manifest:
                continue  # republished (and the old set pruned) while reading: read the new one
            raise
        return PublishedSnapshot(manifest["run_id"], manifest["published_at"], outputs)
    raise StorageError(f"the published snapshot under {str(base)!r} kept changing while being read")
