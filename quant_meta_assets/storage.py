"""Atomic, contained storage: Parquet and JSON only (never pickle), always under a root.

* ``safe_child(root, *parts)``: every part is a plain name (``^[A-Za-z0-9_.-]+$``, not ``.`` or
  ``..``) and the resolved result must lie strictly inside ``root.resolve()`` (symlinks
  included); otherwise ``StorageError`` naming the offending part.
* ``atomic_write_*``: the bytes go to a temporary file in the target's directory, which is
  flushed, fsynced and ``os.replace``-d over the target, then the directory is fsynced. On any
  failure (serialisation included) the temporary file is removed and the previous version is
  untouched.
* Bundles (``write_bundle``/``read_bundle``): several Parquet files plus ``meta.json`` (written
  last; it is the manifest) in one directory, replaced as a whole. The new version is written
  into a fresh sibling ``.<name>.tmp-<pid>-<random>``; then the old directory is renamed to
  ``.<name>.trash-<pid>-<random>``, the new one to ``<name>``, and the trash is deleted. A reader
  therefore sees the old bundle or the new one, never a mix; during the two renames (or after a
  crash between them) ``<name>`` is briefly absent, which a reader retries for a moment and then
  reports as missing. Leftover ``tmp``/``trash`` siblings are never loaded; the next writer
  deletes those whose writer process (same host) is gone.
* Staged bundles (``stage_bundle``/``commit_bundle``): the same two steps split in time, so a
  producer can write each bundle as soon as its data exists (and drop the data), and commit
  them all later with two renames each. Frames may arrive already encoded (``encode_frame``:
  Parquet bytes, e.g. made on a Ray worker), so the writer only writes bytes. Inside a staging
  directory each file is written and fsynced once; the directory is the atomic unit.
* Partial reads: ``read_bundle(directory, keys)`` reads only the named frames (``meta/returns``
  never touches a sleeve's weights) and ``StoredBundle`` is a mapping whose frames are read on
  access, not kept: a consumer holds one sleeve's weights at a time. Each bundle version has a
  random ``token`` in its manifest; a ``StoredBundle`` refuses frames of a newer version.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pandas as pd

from quant_meta_assets.errors import StorageError
from quant_meta_assets.processes import process_alive

__all__ = [
    "BUNDLE_MANIFEST",
    "NAME_PATTERN",
    "StagedBundle",
    "StoredBundle",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "atomic_write_text",
    "commit_bundle",
    "commit_bundles",
    "decode_frame",
    "discard_bundle",
    "encode_frame",
    "read_bundle",
    "read_json",
    "read_parquet_frame",
    "read_parquet_series",
    "safe_child",
    "stage_bundle",
    "validate_part",
    "write_bundle",
]

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
BUNDLE_MANIFEST = "meta.json"
BUNDLE_FORMAT = "quant_meta_bundle/1"
_KIND_KEY = b"quant_meta_kind"
_SERIES_NAME_KEY = b"quant_meta_series_name"
_SERIES_COLUMN = "__series__"
_JSON_COLUMNS_KEY = b"quant_meta_json_columns"
_TMP_TAG = ".tmp-"
_TRASH_TAG = ".trash-"
_READ_RETRY_S = 2.0  # a reader racing a busy writer on a loaded machine retries this long


# --------------------------------------------------------------------------- paths


def validate_part(part: object) -> str:
    """Return ``part`` if it is a plain file/dir name, else StorageError naming it."""
    if not isinstance(part, str):
        raise StorageError(f"path part {part!r} must be a string, got {type(part).__name__}")
    if part in (".", "..") or NAME_PATTERN.fullmatch(part) is None:
        raise StorageError(
            f"unsafe path part {part!r}: must be 1+ characters from A-Z a-z 0-9 _ . - and not '.' or '..'"
        )
    return part


def safe_child(root: Path | str, *parts: str) -> Path:
    """``root/part1/part2/...`` resolved, guaranteed to lie strictly inside ``root``."""
    if not parts:
        raise StorageError(f"safe_child needs at least one path part under {str(root)!r}")
    for part in parts:
        validate_part(part)
    base = Path(root).resolve()
    child = base.joinpath(*parts).resolve()
    if child == base or not child.is_relative_to(base):
        raise StorageError(
            f"path parts {list(parts)!r} resolve to {str(child)!r}, outside the storage root {str(base)!r} "
            "(a symlink under the root?)"
        )
    return child


# --------------------------------------------------------------------------- fsync helpers


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # platforms/filesystems without directory fds: best effort
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path | str, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(fileobj)`` on a temp file next to ``path``, then atomically replace ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}{_TMP_TAG}", delete=False)
    tmp_path = Path(tmp.name)
    try:
        with tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise
    _fsync_dir(path.parent)
    return path


# --------------------------------------------------------------------------- files


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    return _atomic_write(path, lambda fh: fh.write(bytes(data)))


def atomic_write_text(path: Path | str, text: str, encoding: str = "utf-8") -> Path:
    return atomic_write_bytes(path, text.encode(encoding))


def _dump_json(obj: Any, fh: IO[bytes]) -> None:
    text = io.TextIOWrapper(fh, encoding="utf-8")
    try:
        json.dump(obj, text, sort_keys=True, default=str, indent=1)
        text.flush()
    finally:
        text.detach()  # keep fh open: the caller fsyncs and closes it


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    """JSON with sorted keys; objects JSON does not know are written as ``str(obj)``."""
    return _atomic_write(path, lambda fh: _dump_json(obj, fh))


def read_json(path: Path | str) -> Any:
    path = Path(path)
    try:
        with path.open("r", encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError as exc:
        raise StorageError(f"stored JSON {str(path)!r} is missing") from exc
    except (OSError, ValueError) as exc:
        raise StorageError(f"stored JSON {str(path)!r} cannot be read: {type(exc).__name__}: {exc}") from exc


def _to_table(obj: pd.DataFrame | pd.Series) -> Any:
    import pyarrow as pa

    if isinstance(obj, pd.Series):
        frame = obj.to_frame(name=_SERIES_COLUMN)
        extra = {_KIND_KEY: b"series", _SERIES_NAME_KEY: json.dumps(obj.name, default=str).encode()}
    elif isinstance(obj, pd.DataFrame):
        frame = obj
        extra = {_KIND_KEY: b"frame"}
    else:
        raise StorageError(f"only pandas DataFrame/Series are stored as Parquet, got {type(obj).__name__}")
    try:
        table = pa.Table.from_pandas(frame, preserve_index=True)
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        mixed = _mixed_object_columns(frame)
        if not mixed:
            raise
        # e.g. a report table with a str 'start' and an int 'n_days' in one column: Arrow has no
        # type for it, so each cell is stored as JSON text and decoded on read (lossless for JSON values)
        frame = frame.copy()
        for column in mixed:
            frame[column] = [json.dumps(_plain(v), default=str) for v in frame[column]]
        table = pa.Table.from_pandas(frame, preserve_index=True)
        extra[_JSON_COLUMNS_KEY] = json.dumps([str(c) for c in mixed]).encode()
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python scalar JSON knows (NaN stays NaN)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def _mixed_object_columns(frame: pd.DataFrame) -> list:
    """Object columns holding values of more than one type (missing values aside)."""
    mixed = []
    for column in frame.columns:
        values = frame[column]
        if values.dtype != object:
            continue
        kinds = {type(v) for v in values if not (v is None or (isinstance(v, float) and v != v))}
        if len(kinds) > 1:
            mixed.append(column)
    return mixed


def _write_table(table: Any, fh: IO[bytes]) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, fh)


def atomic_write_parquet(path: Path | str, obj: pd.DataFrame | pd.Series) -> Path:
    """A DataFrame, or a Series stored as a one-column frame with its name kept; index kept."""
    table = _to_table(obj)
    return _atomic_write(path, lambda fh: _write_table(table, fh))


def _read_table(source: Path | IO[bytes], label: str) -> tuple[pd.DataFrame, dict[bytes, bytes]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(source)
    except FileNotFoundError as exc:
        raise StorageError(f"stored Parquet {label!r} is missing") from exc
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError on a corrupt file
        raise StorageError(f"stored Parquet {label!r} cannot be read: {type(exc).__name__}: {exc}") from exc
    return table.to_pandas(), dict(table.schema.metadata or {})


def _load(source: Path | IO[bytes], label: str | None = None) -> pd.DataFrame | pd.Series:
    frame, metadata = _read_table(source, label or str(source))
    if _JSON_COLUMNS_KEY in metadata:
        encoded = set(json.loads(metadata[_JSON_COLUMNS_KEY].decode()))
        for column in frame.columns:
            if str(column) in encoded:
                frame[column] = pd.Series(
                    [json.loads(v) if isinstance(v, str) else v for v in frame[column]], index=frame.index, dtype=object
                )
    if metadata.get(_KIND_KEY) == b"series":
        name = json.loads(metadata.get(_SERIES_NAME_KEY, b"null").decode())
        return frame[_SERIES_COLUMN].rename(name)
    return frame


def read_parquet_frame(path: Path | str) -> pd.DataFrame:
    """The stored DataFrame (a stored Series comes back as its one-column frame)."""
    value = _load(Path(path))
    if isinstance(value, pd.Series):
        return value.to_frame()
    return value


def read_parquet_series(path: Path | str) -> pd.Series:
    """The stored Series (its name restored); a stored one-column frame is accepted too."""
    value = _load(Path(path))
    if isinstance(value, pd.Series):
        return value
    if value.shape[1] != 1:
        raise StorageError(f"stored Parquet {str(path)!r} has {value.shape[1]} columns, expected a Series")
    return value.iloc[:, 0]


# --------------------------------------------------------------------------- bundles


def _leftovers(directory: Path) -> list[Path]:
    prefixes = (f".{directory.name}{_TMP_TAG}", f".{directory.name}{_TRASH_TAG}")
    try:
        siblings = list(directory.parent.iterdir())
    except FileNotFoundError:
        return []
    return [p for p in siblings if p.name.startswith(prefixes)]


def _writer_alive(leftover: Path) -> bool:
    """Whether the process that made ``leftover`` (pid in its name) still runs on this host."""
    tag = leftover.name.rsplit(_TMP_TAG if _TMP_TAG in leftover.name else _TRASH_TAG, 1)[-1]
    pid_text = tag.split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # another thread of this process may be writing (an interrupted call cleans up)
    return process_alive(pid)  # a zombie writer counts as gone


def _clean_leftovers(directory: Path) -> None:
    for leftover in _leftovers(directory):
        if not _writer_alive(leftover):
            shutil.rmtree(leftover, ignore_errors=True)


def _sibling(directory: Path, tag: str) -> Path:
    return directory.parent / f".{directory.name}{tag}{os.getpid()}-{secrets.token_hex(6)}"


def encode_frame(obj: pd.DataFrame | pd.Series) -> tuple[str, bytes]:
    """``("series" | "frame", Parquet bytes)``: what a bundle stores for one pandas object."""
    table = _to_table(obj)
    buffer = io.BytesIO()
    _write_table(table, buffer)
    return ("series" if isinstance(obj, pd.Series) else "frame"), buffer.getvalue()


def decode_frame(data: bytes, label: str = "<bytes>") -> pd.DataFrame | pd.Series:
    """The pandas object of ``encode_frame`` bytes."""
    return _load(io.BytesIO(data), label)


@dataclass(frozen=True)
class StagedBundle:
    """A complete new version of the bundle at ``target``, written (and fsynced) at ``staging``,
    a sibling that no reader loads; ``commit_bundle`` makes it current."""

    target: Path
    staging: Path


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def stage_bundle(
    directory: Path | str,
    frames: Mapping[str, pd.DataFrame | pd.Series | tuple[str, bytes]],
    meta: Mapping[str, Any],
) -> StagedBundle:
    """Write a new version of the bundle at ``directory`` next to it; nothing current changes.

    ``frames`` values are pandas objects or ``encode_frame`` results. On any failure the staging
    directory is removed and the exception propagates.
    """
    directory = Path(directory)
    validate_part(directory.name)
    for key, value in frames.items():
        validate_part(key)
        encoded = isinstance(value, tuple) and len(value) == 2 and value[0] in ("series", "frame")
        if not (encoded and isinstance(value[1], (bytes, bytearray, memoryview))) and not isinstance(
            value, (pd.DataFrame, pd.Series)
        ):
            raise StorageError(f"bundle frame {key!r} must be a DataFrame or Series, got {type(value).__name__}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(directory)
    staging = _sibling(directory, _TMP_TAG)
    staging.mkdir()
    try:
        manifest: dict[str, Any] = {"format": BUNDLE_FORMAT, "token": secrets.token_hex(8), "frames": {},
                                    "meta": dict(meta)}
        for key, value in frames.items():
            kind, data = value if isinstance(value, tuple) else encode_frame(value)
            file_name = f"{key}.parquet"
            _write_synced(staging / file_name, bytes(data))
            manifest["frames"][key] = {"file": file_name, "kind": kind}
        text = io.BytesIO()
        _dump_json(manifest, text)
        _write_synced(staging / BUNDLE_MANIFEST, text.getvalue())  # last: the commit marker
        _fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return StagedBundle(target=directory, staging=staging)


def commit_bundle(staged: StagedBundle, sync: bool = True) -> Path:
    """Swap a staged bundle in (old -> trash, staged -> current, trash deleted); on failure the
    old version stays current. ``sync=False`` leaves the parent-directory fsync to the caller
    (``commit_bundles`` does it once per directory)."""
    directory, staging = staged.target, staged.staging
    if staging.parent != directory.parent or not staging.name.startswith(f".{directory.name}{_TMP_TAG}"):
        raise StorageError(f"{str(staging)!r} is not a staged version of the bundle {str(directory)!r}")
    trash: Path | None = None
    try:
        if directory.exists():
            trash = _sibling(directory, _TRASH_TAG)
            os.rename(directory, trash)
        os.rename(staging, directory)
        if sync:
            _fsync_dir(directory.parent)
    except BaseException:
        if trash is not None and trash.exists() and not directory.exists():
            with contextlib.suppress(OSError):
                os.rename(trash, directory)  # roll back: the old version stays current
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return directory


def commit_bundles(staged: Iterable[StagedBundle]) -> list[Path]:
    """``commit_bundle`` each, in order, then fsync every parent directory once."""
    done = [commit_bundle(item, sync=False) for item in staged]
    for parent in dict.fromkeys(path.parent for path in done):
        _fsync_dir(parent)
    return done


def discard_bundle(staged: StagedBundle) -> None:
    """Remove a staged bundle that will not be committed (the current version is untouched)."""
    shutil.rmtree(staged.staging, ignore_errors=True)


def write_bundle(
    directory: Path | str,
    frames: Mapping[str, pd.DataFrame | pd.Series],
    meta: Mapping[str, Any],
) -> Path:
    """Replace the bundle at ``directory`` with ``frames`` (Parquet) and ``meta`` (JSON), atomically."""
    return commit_bundle(stage_bundle(directory, frames, meta))


def read_bundle(
    directory: Path | str, keys: Iterable[str] | None = None
) -> tuple[dict[str, pd.DataFrame | pd.Series], dict[str, Any]]:
    """``(frames, meta)`` of the bundle at ``directory`` (only the frames named in ``keys`` when
    given); StorageError if missing or malformed."""
    frames, meta, _ = _read_bundle(Path(directory), None if keys is None else list(keys))
    return frames, meta


def _read_bundle(
    directory: Path, keys: list[str] | None, token: str | None = None
) -> tuple[dict[str, pd.DataFrame | pd.Series], dict[str, Any], dict[str, Any]]:
    deadline = time.monotonic() + _READ_RETRY_S
    while True:
        try:
            return _read_bundle_once(directory, keys, token)
        except StorageError:
            # a writer may be between its two renames, or have swapped the bundle under us
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _read_bundle_once(
    directory: Path, keys: list[str] | None, token: str | None
) -> tuple[dict[str, pd.DataFrame | pd.Series], dict[str, Any], dict[str, Any]]:
    """Read every file through one directory descriptor: a concurrent swap cannot mix versions
    (the old directory's files vanish with its trash, which fails the read and makes us retry)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError as exc:
        raise StorageError(f"stored bundle {str(directory)!r} is missing") from exc
    except OSError as exc:
        raise StorageError(f"stored bundle {str(directory)!r} cannot be opened: {exc}") from exc

    def opener(name: str, flags: int) -> int:
        return os.open(name, flags, dir_fd=dir_fd)

    try:
        try:
            with open(BUNDLE_MANIFEST, encoding="utf-8", opener=opener) as fh:
                manifest = json.load(fh)
        except FileNotFoundError as exc:
            raise StorageError(f"stored bundle {str(directory)!r} is missing (no {BUNDLE_MANIFEST})") from exc
        except (OSError, ValueError) as exc:
            raise StorageError(f"stored bundle {str(directory)!r}: {BUNDLE_MANIFEST} cannot be read: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise StorageError(f"stored bundle {str(directory)!r} has an unknown manifest format")
        if token is not None and manifest.get("token") != token:
            raise StorageError(
                f"stored bundle {str(directory)!r} was replaced by a newer version while it was being read"
            )
        frames: dict[str, pd.DataFrame | pd.Series] = {}
        entries = manifest.get("frames", {})
        if not isinstance(entries, dict):
            raise StorageError(f"stored bundle {str(directory)!r}: malformed frame list in {BUNDLE_MANIFEST}")
        if keys is not None:
            absent = [k for k in keys if k not in entries]
            if absent:
                raise StorageError(f"stored bundle {str(directory)!r} has no frame(s) {absent}")
        for key, entry in entries.items():
            if keys is not None and key not in keys:
                continue
            file_name = validate_part(entry.get("file") if isinstance(entry, dict) else None)
            label = str(directory / file_name)
            try:
                with open(file_name, "rb", opener=opener) as fh:
                    value = _load(fh, label)
            except FileNotFoundError as exc:
                raise StorageError(f"stored bundle file {label!r} is missing") from exc
            if entry.get("kind") == "series" and isinstance(value, pd.DataFrame):
                raise StorageError(f"stored bundle {str(directory)!r}: frame {key!r} should be a Series")
            frames[key] = value
    finally:
        os.close(dir_fd)
    meta = manifest.get("meta", {})
    return frames, dict(meta) if isinstance(meta, dict) else {}, manifest


class StoredBundle(Mapping):
    """A stored bundle as a read-only mapping: its meta values, and its frames read from disk on
    each access (never kept), so holding many of these holds no frame data.

    Reading a frame of a bundle that was replaced since this object was made raises
    StorageError rather than mixing two versions. ``overrides`` replace meta values (e.g. the
    partition key as ``sleeve``).
    """

    def __init__(self, directory: Path | str, overrides: Mapping[str, Any] | None = None) -> None:
        self.directory = Path(directory)
        _, meta, manifest = _read_bundle(self.directory, keys=[])
        self._token = manifest.get("token")
        self._frame_keys = tuple(manifest.get("frames", {}))
        self._meta = {**meta, **dict(overrides or {})}

    def with_meta(self, **overrides: Any) -> StoredBundle:
        """The same stored version, with some meta values replaced (nothing is re-read)."""
        view = object.__new__(StoredBundle)
        view.directory, view._token, view._frame_keys = self.directory, self._token, self._frame_keys
        view._meta = {**self._meta, **overrides}
        return view

    @property
    def frame_keys(self) -> tuple[str, ...]:
        return self._frame_keys

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self._meta)

    def frames(self, keys: Iterable[str]) -> dict[str, pd.DataFrame | pd.Series]:
        """Several frames of the same version in one read."""
        wanted = list(keys)
        if not wanted:
            return {}
        if self._token is None:
            return _read_bundle(self.directory, wanted)[0]
        return _read_bundle(self.directory, wanted, self._token)[0]

    def __getitem__(self, key: str) -> Any:
        if key in self._frame_keys:
            return self.frames([key])[key]
        return self._meta[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._meta
        yield from (k for k in self._frame_keys if k not in self._meta)

    def __len__(self) -> int:
        return len(set(self._meta) | set(self._frame_keys))

    def __repr__(self) -> str:
        return f"StoredBundle({str(self.directory)!r}, frames={list(self._frame_keys)})"
