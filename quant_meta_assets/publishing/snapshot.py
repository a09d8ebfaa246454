"""One published snapshot of the meta outputs: a reader sees the four of one lineage, or the previous set.

Each run stores its outputs under its own directory, ``runs/<run id>/<asset key>/`` (its price
snapshot, its sleeve bundles, its meta outputs), and never rewrites another run's. The
``meta/published`` step (dagster_defs/publishing.py), which runs after every meta output of its
run is recorded, calls ``publish``: it checks that the four outputs are one lineage (one prices
snapshot, one set of sleeve bundles, each member computed from the others) and that the set is
not older than the one already published, then switches the pointer ``published.json`` at the
storage root (temp file + ``os.replace``). Anything that fails afterwards restores the previous
pointer (``restore``). Consumers (an OMS reading target asset weights, a notebook) use
``read_published()``, one function and one path, and never the run directories directly.

Monotone: a candidate is ordered by (``as_of``, the oldest ``computed_at`` of its members); one
that orders before the published set is refused with a reason, never published. ``generation``
counts publications.
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
from quant_meta_assets.publishing import lineage as lineage_
from quant_meta_assets.storage import BUNDLE_MANIFEST, atomic_write_json, read_bundle, read_json, safe_child

__all__ = [
    "META_OUTPUTS",
    "POINTER",
    "RUNS_DIR",
    "PublishedSnapshot",
    "named_runs",
    "publish",
    "restore",
    "published_manifest",
    "published_path",
    "read_published",
    "run_scoped_dir",
]

POINTER = "published.json"
RUNS_DIR = "runs"
FORMAT = "quant_meta_published/2"
_READABLE = (FORMAT, "quant_meta_published/1")  # /1: before lineage (no as_of, no generation)
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


def _order(members: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
    """How old a set is: its prices' last date, then its oldest member's computation time."""
    return (str(members[META_OUTPUTS[-1]]["as_of"]), min(str(m["computed_at"]) for m in members.values()))


def publish(
    root: Path | str | None, run_id: str, bundles: Mapping[str, Path], members: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, Any], str | None]:
    """Point ``published.json`` at ``bundles`` (asset key -> stored bundle dir), atomically.

    ``members``: asset key -> the lineage stored with that bundle. Every one of the four meta
    outputs must be given, lie inside the root, be a complete bundle and the four one lineage;
    otherwise StorageError/LineageError and the pointer is untouched. Returns ``(manifest,
    None)`` when published, ``(current manifest, reason)`` when the set is not published because
    it is already the published one or older than it.
    """
    base = _root(root).resolve()
    missing = [key for key in META_OUTPUTS if key not in bundles or key not in members]
    if missing:
        raise StorageError(f"cannot publish run {run_id!r}: no stored bundle (or lineage) for {missing}")
    relative = {}
    for key in META_OUTPUTS:
        directory = Path(bundles[key]).resolve()
        if not directory.is_relative_to(base) or directory == base:
            raise StorageError(f"cannot publish {key} from {str(directory)!r}: outside the storage root {str(base)!r}")
        if not (directory / BUNDLE_MANIFEST).is_file():
            raise StorageError(f"cannot publish {key}: {str(directory)!r} is not a complete stored bundle")
        relative[key] = directory.relative_to(base).as_posix()
    lineage_.check_set(members, META_OUTPUTS)
    report = members[META_OUTPUTS[-1]]
    previous = published_manifest(base)
    if previous is not None and previous.get("outputs") == relative:
        return previous, f"already published (generation {previous.get('generation', 0)})"
    if previous is not None and previous.get("format") == FORMAT:
        mine, theirs = _order(members), (str(previous["as_of"]), str(previous["oldest_computed_at"]))
        if mine < theirs:
            reason = (
                f"as_of {mine[0]} is older than the published {theirs[0]}" if mine[0] < theirs[0]
                else f"its oldest output was computed at {mine[1]}, before the published set's ({theirs[1]}), "
                f"on the same as_of {mine[0]}"
            )
            return previous, f"not published: {reason} (published run {previous['run_id']})"
    manifest = {
        "format": FORMAT,
        "run_id": run_id,
        "published_at": datetime.now(UTC).isoformat(),
        "generation": int(previous.get("generation", 0)) + 1 if previous is not None else 1,
        "as_of": report["as_of"],
        "prices_hash": report["prices_hash"],
        "oldest_computed_at": _order(members)[1],
        "outputs": relative,
        "runs": {key: members[key]["run_id"] for key in META_OUTPUTS},
        "sleeves": dict(report["sleeves"]),
    }
    atomic_write_json(base / POINTER, manifest)
    return manifest, None


def restore(root: Path | str | None, previous: Mapping[str, Any] | None) -> None:
    """Put back the pointer as it was before a publication (none: remove it), atomically."""
    path = published_path(root)
    if previous is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write_json(path, dict(previous))


def named_runs(manifest: Mapping[str, Any] | None) -> set[str]:
    """Every run whose stored outputs a published set reads: its meta runs and its sleeves' runs."""
    if manifest is None:
        return set()
    runs = {str(manifest["run_id"])}
    runs.update(path.split("/")[1] for path in manifest.get("outputs", {}).values() if path.startswith(f"{RUNS_DIR}/"))
    runs.update(ref.split("/")[0] for ref in manifest.get("sleeves", {}).values())
    return runs


def published_manifest(root: Path | str | None = None) -> dict[str, Any] | None:
    """The current pointer (run id, time, asset key -> relative bundle dir), or None if nothing is published."""
    path = published_path(root)
    if not path.is_file():
        return None
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") not in _READABLE:
        raise StorageError(f"{str(path)!r} is not a published-snapshot pointer (format {FORMAT!r})")
    return manifest


@dataclass(frozen=True)
class PublishedSnapshot:
    """The four meta outputs of one publication, as the assets returned them (with their lineage)."""

    run_id: str
    published_at: str
    outputs: dict[str, Any]  # "meta/returns" -> DataFrame, "meta/optimize" -> {"weights", "diagnostics"}, ...
    as_of: str = ""  # the last price date the set was computed on
    generation: int = 0
    prices_hash: str = ""

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
                "(its meta/published step publishes once every meta output is stored)"
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
        return PublishedSnapshot(
            manifest["run_id"], manifest["published_at"], outputs, str(manifest.get("as_of", "")),
            int(manifest.get("generation", 0)), str(manifest.get("prices_hash", "")),
        )
    raise StorageError(f"the published snapshot under {str(base)!r} kept changing while being read")
