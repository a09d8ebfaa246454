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
  them all later with two renames each. Frames may arrive already encoded (``encode_chunked``
  / ``encode_frame``: Parquet bytes, e.g. made on a Ray worker), so the writer only writes bytes. Inside a staging
  directory each file is written and fsynced once; the directory is the atomic unit.
* Partial reads: ``read_bundle(directory, keys)`` reads only the named frames (``meta/returns``
  never touches a sleeve's weights) and ``StoredBundle`` is a mapping whose frames are read on
  access, not kept: a consumer holds one sleeve's weights at a time. Each bundle version has a
  random ``token`` in its manifest; a ``StoredBundle`` refuses frames of a newer version.
* Chunked frames: a non-empty frame or Series with a sorted DatetimeIndex and only numeric,
  bool or datetime columns is stored as two Parquet files: the rows before its last calendar
  year (``<key>.<first year>.parquet``, the history) and the rows of its last year
  (``<key>.<year>.parquet``); the manifest lists each chunk (year, rows, first/last date, sha256
  of its bytes). Reading concatenates them; ``since`` opens only the chunks that end on or after
  it. Other values (report tables, empty frames, bundles of format 1) are one ``<key>.parquet``
  file. So a daily update touches O(new days): ``stage_appended_bundle`` hard-links the previous
  bundle's history into the new staging directory and rewrites only the last year's chunk (a
  filesystem that cannot link gets a copy); the first update of a new year folds the last year
  into the history, once a year. Stored files are never modified in place, so a linked chunk is
  shared safely and deleting either bundle leaves the other whole. Why two and not one file per
  year: Parquet's per-file cost grows with the columns (15-20 ms at 500 tickers), and a full read
  of a wide frame then opens two files, not one per year.
* Wide float frames (a sleeve's weights: ``MATRIX_MIN_COLUMNS`` or more string-labelled float64
  columns) are stored as one ``fixed_size_list<float64>`` column with the labels in the schema's
  metadata, and read back as the column-by-column path reads them: the per-column costs of
  Parquet and of Arrow's pandas conversion become per-frame costs (one row of 500 tickers:
  2 ms to encode instead of 50).
"""

from __future__ import annotations

import contextlib
import hashlib
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

import numpy as np
import pandas as pd

from quant_meta_assets.errors import StorageError
from quant_meta_assets.processes import process_alive

__all__ = [
    "BUNDLE_MANIFEST",
    "NAME_PATTERN",
    "EncodedChunks",
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
    "encode_chunked",
    "encode_frame",
    "read_bundle",
    "read_json",
    "read_parquet_frame",
    "read_parquet_series",
    "safe_child",
    "stage_appended_bundle",
    "stage_bundle",
    "validate_part",
    "write_bundle",
]

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]+")
BUNDLE_MANIFEST = "meta.json"
BUNDLE_FORMAT = "quant_meta_bundle/2"  # 2: chunked frames; format 1 (one file per frame) is still read
_READABLE_FORMATS = ("quant_meta_bundle/1", BUNDLE_FORMAT)
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


_MATRIX_KEY = b"quant_meta_matrix"  # a wide float frame stored as one fixed-size-list column (its labels in JSON)
_MATRIX_COLUMN = "__matrix__"
MATRIX_MIN_COLUMNS = 16
"""A float64 frame with at least this many string-labelled columns (a sleeve's weights: one column
per ticker) is stored as one ``fixed_size_list<float64>[n]`` column: Parquet's and Arrow's costs
per column (15-20 ms a file at 500 tickers, whatever the rows) become costs per frame."""


def _matrix_table(frame: pd.DataFrame) -> Any | None:
    """``frame`` as an index table plus one fixed-size-list column of its rows, or None when it is
    not a wide float64 frame with unique string labels (then it is stored column by column)."""
    import pyarrow as pa

    columns = frame.columns
    if (frame.shape[1] < MATRIX_MIN_COLUMNS or not columns.is_unique or isinstance(columns, pd.MultiIndex)
            or not all(isinstance(c, str) for c in columns) or not all(d == np.float64 for d in frame.dtypes)):
        return None
    table = pa.Table.from_pandas(pd.DataFrame(index=frame.index), preserve_index=True)
    values = np.ascontiguousarray(frame.to_numpy(dtype=np.float64)).reshape(-1)
    rows = pa.FixedSizeListArray.from_arrays(pa.array(values, type=pa.float64()), frame.shape[1])
    table = table.append_column(_MATRIX_COLUMN, rows)
    labels = {"columns": list(columns), "name": columns.name if isinstance(columns.name, str | None) else str(columns.name)}
    return table.replace_schema_metadata({**(table.schema.metadata or {}), _MATRIX_KEY: json.dumps(labels).encode()})


def _from_matrix(table: Any, labels: bytes) -> pd.DataFrame:
    """The frame of ``_matrix_table``: the index through pandas' metadata, the values as one block."""
    spec = json.loads(labels.decode())
    index = table.drop([_MATRIX_COLUMN]).to_pandas().index
    column = table.column(_MATRIX_COLUMN).combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False).reshape(len(index), len(spec["columns"]))
    labels = pd.Index(spec["columns"], name=spec["name"])  # string labels, as the column-by-column path reads them
    return pd.DataFrame(values, index=index, columns=labels, copy=False)


def _to_table(obj: pd.DataFrame | pd.Series) -> Any:
    import pyarrow as pa

    if isinstance(obj, pd.DataFrame):
        matrix = _matrix_table(obj)
        if matrix is not None:
            return matrix.replace_schema_metadata({**matrix.schema.metadata, _KIND_KEY: b"frame"})
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


def _read_table(source: Path | IO[bytes], label: str, empty: bool = False, chunk: bool = False) -> Any:
    """The stored Arrow table (``empty``: its schema only, from the footer; ``chunk``: read through
    ``ParquetFile``, which costs a third of ``read_table`` per file: a frame has many chunks)."""
    import pyarrow.parquet as pq

    try:
        if empty:
            return pq.read_schema(source).empty_table()
        return pq.ParquetFile(source).read() if chunk else pq.read_table(source)
    except FileNotFoundError as exc:
        raise StorageError(f"stored Parquet {label!r} is missing") from exc
    except Exception as exc:  # pyarrow raises ArrowInvalid/OSError on a corrupt file
        raise StorageError(f"stored Parquet {label!r} cannot be read: {type(exc).__name__}: {exc}") from exc


def _from_table(table: Any) -> pd.DataFrame | pd.Series:
    metadata = dict(table.schema.metadata or {})
    if _MATRIX_KEY in metadata:
        return _from_matrix(table, metadata[_MATRIX_KEY])
    frame = table.to_pandas()
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


def _from_tables(tables: list[Any]) -> pd.DataFrame | pd.Series:
    """One pandas object of a frame's chunk tables: concatenated in Arrow, converted once."""
    import pyarrow as pa

    if len(tables) == 1:
        return _from_table(tables[0])
    try:
        table = pa.concat_tables(tables)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # chunks whose schemas differ: concatenated in pandas
        return _concat([_from_table(t) for t in tables])
    return _from_table(table)


def _load(source: Path | IO[bytes], label: str | None = None, empty: bool = False) -> pd.DataFrame | pd.Series:
    """The stored object (``empty``: none of its rows, only the footer is read)."""
    return _from_table(_read_table(source, label or str(source), empty))


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


def _kind(obj: pd.DataFrame | pd.Series) -> str:
    return "series" if isinstance(obj, pd.Series) else "frame"


def encode_frame(obj: pd.DataFrame | pd.Series) -> tuple[str, bytes]:
    """``("series" | "frame", Parquet bytes)``: one pandas object as one Parquet file."""
    table = _to_table(obj)
    buffer = io.BytesIO()
    _write_table(table, buffer)
    return _kind(obj), buffer.getvalue()


@dataclass(frozen=True)
class Chunk:
    """One calendar year of a chunked frame: what the manifest says of it, and its Parquet bytes."""

    year: int
    rows: int
    first: str
    last: str
    data: bytes


@dataclass(frozen=True)
class EncodedChunks:
    """A chunked frame encoded away from the writer (e.g. on a Ray worker), one ``Chunk`` per year."""

    chunks: tuple[Chunk, ...]


def _chunkable(obj: pd.DataFrame | pd.Series) -> bool:
    """Whether ``obj`` is stored one file per year: dated rows in order, and only column types whose
    Parquet type a year's rows cannot change (an object column may read back differently per chunk)."""
    index = obj.index
    if not isinstance(index, pd.DatetimeIndex) or len(index) == 0 or index.hasnans:
        return False
    if not index.is_monotonic_increasing:
        return False
    dtypes = [obj.dtype] if isinstance(obj, pd.Series) else list(obj.dtypes)
    return all(isinstance(d, np.dtype) and d.kind in "biufmM" for d in dtypes)


def _encode_chunks(obj: pd.DataFrame | pd.Series) -> EncodedChunks:
    """One Arrow conversion of the whole object (its cost is per column, not per row), written as
    the history (the years before the last) and the last year (module docstring)."""
    years = obj.index.year.to_numpy()
    split = int(np.searchsorted(years, years[-1], side="left"))  # the last year's first row
    bounds = [0, split, len(years)] if split > 0 else [0, len(years)]
    table = _to_table(obj)
    chunks = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        buffer = io.BytesIO()
        _write_table(table.slice(a, b - a), buffer)
        chunks.append(Chunk(int(years[a]), b - a, obj.index[a].isoformat(), obj.index[b - 1].isoformat(),
                            buffer.getvalue()))
    return EncodedChunks(tuple(chunks))


def encode_chunked(obj: pd.DataFrame | pd.Series) -> tuple[str, bytes | EncodedChunks]:
    """What a bundle stores for one pandas object, encoded: one Parquet file per year when it is a
    dated frame (see the module docstring), else ``encode_frame``'s one file."""
    if isinstance(obj, (pd.DataFrame, pd.Series)) and _chunkable(obj):
        return _kind(obj), _encode_chunks(obj)
    return encode_frame(obj)


def _concat(parts: list[pd.DataFrame | pd.Series]) -> pd.DataFrame | pd.Series:
    return parts[0] if len(parts) == 1 else pd.concat(parts)


def decode_frame(data: bytes | EncodedChunks, label: str = "<bytes>") -> pd.DataFrame | pd.Series:
    """The pandas object of ``encode_frame`` / ``encode_chunked`` output."""
    if isinstance(data, EncodedChunks):
        return _concat([_load(io.BytesIO(c.data), label) for c in data.chunks])
    return _load(io.BytesIO(data), label)


def _is_encoded(value: Any) -> bool:
    return (isinstance(value, tuple) and len(value) == 2 and value[0] in ("series", "frame")
            and isinstance(value[1], (bytes, bytearray, memoryview, EncodedChunks)))


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


def _write_new(staging: Path, key: str, file_name: str, data: bytes) -> None:
    validate_part(file_name)
    if (staging / file_name).exists():
        raise StorageError(f"bundle frame {key!r}: its file {file_name!r} is another frame's (keys that differ "
                           "only by '.<year>' collide)")
    _write_synced(staging / file_name, data)


def _write_chunk(staging: Path, key: str, chunk: Chunk) -> dict[str, Any]:
    file_name = f"{key}.{chunk.year}.parquet"
    _write_new(staging, key, file_name, bytes(chunk.data))
    return {"file": file_name, "year": chunk.year, "rows": chunk.rows, "first": chunk.first, "last": chunk.last,
            "sha256": hashlib.sha256(chunk.data).hexdigest()}


def _write_value(staging: Path, key: str, value: Any) -> dict[str, Any]:
    """Write one frame's file(s) into ``staging``; its manifest entry."""
    kind, data = value if isinstance(value, tuple) else encode_chunked(value)
    if isinstance(data, EncodedChunks):
        return {"kind": kind, "chunks": [_write_chunk(staging, key, c) for c in data.chunks]}
    file_name = f"{key}.parquet"
    _write_new(staging, key, file_name, bytes(data))
    return {"file": file_name, "kind": kind}


def _check_frames(frames: Mapping[str, Any]) -> None:
    for key, value in frames.items():
        validate_part(key)
        if not _is_encoded(value) and not isinstance(value, (pd.DataFrame, pd.Series)):
            raise StorageError(f"bundle frame {key!r} must be a DataFrame or Series, got {type(value).__name__}")


def _stage(directory: Path, meta: Mapping[str, Any], write: Callable[[Path], dict[str, Any]]) -> StagedBundle:
    """A fresh staging sibling of ``directory``; ``write(staging)`` writes the frames and returns
    the manifest's frame entries; the manifest goes last. On failure the staging is removed."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(directory)
    staging = _sibling(directory, _TMP_TAG)
    staging.mkdir()
    try:
        manifest: dict[str, Any] = {"format": BUNDLE_FORMAT, "token": secrets.token_hex(8), "frames": write(staging),
                                    "meta": dict(meta)}
        text = io.BytesIO()
        _dump_json(manifest, text)
        _write_synced(staging / BUNDLE_MANIFEST, text.getvalue())  # last: the commit marker
        _fsync_dir(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return StagedBundle(target=directory, staging=staging)


def stage_bundle(
    directory: Path | str,
    frames: Mapping[str, pd.DataFrame | pd.Series | tuple[str, bytes | EncodedChunks]],
    meta: Mapping[str, Any],
) -> StagedBundle:
    """Write a new version of the bundle at ``directory`` next to it; nothing current changes.

    ``frames`` values are pandas objects or ``encode_frame``/``encode_chunked`` results. On any
    failure the staging directory is removed and the exception propagates.
    """
    directory = Path(directory)
    validate_part(directory.name)
    _check_frames(frames)
    return _stage(directory, meta, lambda staging: {key: _write_value(staging, key, value)
                                                    for key, value in frames.items()})


def stage_appended_bundle(
    directory: Path | str,
    previous: Path | str,
    appended: Mapping[str, pd.DataFrame | pd.Series | tuple[str, bytes | EncodedChunks]],
    frames: Mapping[str, pd.DataFrame | pd.Series | tuple[str, bytes | EncodedChunks]],
    meta: Mapping[str, Any],
    replace_from: Mapping[str, pd.Timestamp] | None = None,
) -> StagedBundle:
    """Stage a new version of the bundle at ``directory`` whose ``appended`` frames are those of the
    committed bundle at ``previous`` followed by the given rows, reading and writing O(new rows).

    Per appended key, the previous history chunk is hard-linked into the staging directory (copied
    where the filesystem cannot link) and only the last year's chunk is read and rewritten; new
    rows in a later year rewrite both (the last year joins the history, once a year). ``replace_from[key]``: previous rows dated on or after
    it are dropped first (a last day the new rows restate). The new rows must start after the
    previous (kept) last date and have its columns, dtypes and names; otherwise StorageError naming
    the key. ``frames`` are written whole, as ``stage_bundle`` does; previous keys named in neither
    are not carried over.
    """
    directory, previous = Path(directory), Path(previous)
    validate_part(directory.name)
    cuts = dict(replace_from or {})
    both = sorted(set(appended) & set(frames))
    if both:
        raise StorageError(f"bundle frame(s) {both} are both appended to and written whole")
    stray = sorted(set(cuts) - set(appended))
    if stray:
        raise StorageError(f"replace_from names frame(s) {stray} that are not appended to")
    _check_frames(frames)
    _check_frames(appended)
    rows = {key: _normalised(key, value) for key, value in appended.items()}
    try:
        dir_fd = os.open(previous, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError as exc:
        raise StorageError(f"previous bundle {str(previous)!r} is missing") from exc
    except OSError as exc:
        raise StorageError(f"previous bundle {str(previous)!r} cannot be opened: {exc}") from exc
    try:
        opener = _dir_opener(dir_fd)
        entries = _manifest_at(previous, opener)["frames"]
        absent = [k for k in rows if k not in entries]
        if absent:
            raise StorageError(f"previous bundle {str(previous)!r} has no frame(s) {absent} to append to")

        def write(staging: Path) -> dict[str, Any]:
            out = {key: _append_entry(previous, dir_fd, opener, staging, key, entries[key], new, cuts.get(key))
                   for key, new in rows.items()}
            out.update({key: _write_value(staging, key, value) for key, value in frames.items()})
            return out

        return _stage(directory, meta, write)
    finally:
        os.close(dir_fd)


def _normalised(key: str, value: Any) -> pd.DataFrame | pd.Series:
    """New rows as storage reads them back (dtypes, names, index unit), so they compare with the
    stored: encoded rows are decoded, pandas rows make the round trip."""
    if isinstance(value, tuple):
        return decode_frame(value[1], f"appended rows of {key!r}")
    return decode_frame(encode_frame(value)[1], f"appended rows of {key!r}")


def _aligned(when: Any, like: pd.Timestamp | pd.DatetimeIndex) -> pd.Timestamp:
    """``when`` comparable with ``like`` (a naive time is taken in ``like``'s zone)."""
    when, tz = pd.Timestamp(when), getattr(like, "tz", None)
    if tz is not None and when.tz is None:
        return when.tz_localize(tz)
    if tz is None and when.tz is not None:
        return when.tz_convert("UTC").tz_localize(None)
    return when


def _same_shape(key: str, old: pd.DataFrame | pd.Series, new: pd.DataFrame | pd.Series) -> None:
    def fail(what: str) -> None:
        raise StorageError(f"cannot append to frame {key!r}: the new rows' {what}")

    if isinstance(old, pd.Series) != isinstance(new, pd.Series):
        fail(f"kind ({_kind(new)}) is not the stored one ({_kind(old)})")
    if isinstance(old, pd.Series):
        if old.name != new.name:
            fail(f"name {new.name!r} is not the stored {old.name!r}")
        if old.dtype != new.dtype:
            fail(f"dtype {new.dtype} is not the stored {old.dtype}")
    else:
        if not old.columns.equals(new.columns) or old.columns.names != new.columns.names:
            missing = [c for c in old.columns if c not in new.columns][:5]
            extra = [c for c in new.columns if c not in old.columns][:5]
            fail(f"columns differ from the stored ones (missing {missing}, extra {extra}"
                 + (", same set in another order" if not missing and not extra else "") + ")")
        differ = [c for c in old.columns if old[c].dtype != new[c].dtype][:5]
        if differ:
            fail(f"dtypes of columns {differ} are not the stored ones")
    if old.index.dtype != new.index.dtype or old.index.name != new.index.name:
        fail(f"index ({new.index.dtype}, name {new.index.name!r}) is not the stored one "
             f"({old.index.dtype}, name {old.index.name!r})")


def _append_entry(previous: Path, dir_fd: int, opener: Callable[[str, int], int], staging: Path, key: str,
                  entry: Any, new: pd.DataFrame | pd.Series, cut: Any) -> dict[str, Any]:
    """Write one appended frame into ``staging``: earlier years linked, the rest rewritten."""
    if not isinstance(entry, dict):
        raise StorageError(f"previous bundle {str(previous)!r}: malformed entry of frame {key!r}")
    if entry.get("kind") != _kind(new):
        raise StorageError(f"cannot append to frame {key!r}: the previous bundle stores a {entry.get('kind')}, "
                           f"the new rows are a {_kind(new)}")
    if len(new) and not _chunkable(new):
        raise StorageError(f"cannot append to frame {key!r}: the new rows need a sorted DatetimeIndex and only "
                           "numeric, bool or datetime columns")
    chunks = entry.get("chunks")
    linked: list[dict[str, Any]] = []
    if chunks is None:  # stored whole (format 1, or not chunkable then): read once, chunked from now on
        tail = _open_load(previous, entry.get("file"), opener)
    else:
        if not isinstance(chunks, list) or not chunks:
            raise StorageError(f"previous bundle {str(previous)!r}: malformed chunk list of frame {key!r}")
        starts = [*( [new.index[0]] if len(new) else []), *([_aligned(cut, new.index)] if cut is not None else [])]
        first_year = min(t.year for t in starts) if starts else None
        # the history is linked when the new rows (and the cut) fall in the last chunk's year; a new
        # year folds the last year into the history (rewritten once a year)
        last_year = int(chunks[-1]["year"])
        keep = first_year is None or (first_year == last_year and all(int(c["year"]) < last_year for c in chunks[:-1]))
        linked = chunks[:-1] if keep else []
        reread = [c for c in chunks if c not in linked]
        if reread:
            tail = _load_chunks(previous, reread, opener)
        else:  # only the schema of the last chunk, to compare the new rows with
            tail = _open_load(previous, chunks[-1].get("file"), opener, empty=True)
    _same_shape(key, tail, new)
    if cut is not None:
        tail = tail[tail.index < _aligned(cut, tail.index)]
    kept_last = tail.index[-1] if len(tail) else (pd.Timestamp(linked[-1]["last"]) if linked else None)
    if len(new) and kept_last is not None and new.index[0] <= kept_last:
        raise StorageError(f"cannot append to frame {key!r}: the new rows start on {new.index[0].isoformat()}, "
                           f"not after the previous last date {kept_last.isoformat()}")
    tail = _concat([tail, new]) if len(tail) and len(new) else (new if len(new) else tail)
    out = [_link_chunk(previous, dir_fd, opener, staging, key, c) for c in linked]
    if len(tail):
        if not _chunkable(tail):
            raise StorageError(f"cannot append to frame {key!r}: the stored rows are not a dated numeric frame")
        out += [_write_chunk(staging, key, c) for c in _encode_chunks(tail).chunks]
    if not out:  # nothing stored before or after: the empty frame, whole
        return _write_value(staging, key, encode_frame(tail))
    return {"kind": _kind(new), "chunks": out}


def _link_chunk(previous: Path, dir_fd: int, opener: Callable[[str, int], int], staging: Path, key: str,
                entry: dict[str, Any]) -> dict[str, Any]:
    """The previous bundle's chunk file in ``staging`` too: a hard link (both names, one immutable
    file), or a copy where the filesystem cannot link (another device, no hard links)."""
    name = validate_part(entry.get("file"))
    target = staging / name
    if target.exists():
        raise StorageError(f"bundle frame {key!r}: its file {name!r} is another frame's")
    try:
        if os.link in os.supports_dir_fd:
            os.link(name, target, src_dir_fd=dir_fd)
        else:
            os.link(previous / name, target)
        return dict(entry)
    except FileNotFoundError as exc:
        raise StorageError(f"stored bundle file {str(previous / name)!r} is missing") from exc
    except OSError:
        pass  # EXDEV, EPERM, EMLINK...: the bytes are copied
    try:
        with open(name, "rb", opener=opener) as src, open(target, "xb") as dst:
            shutil.copyfileobj(src, dst)
            dst.flush()
            os.fsync(dst.fileno())
    except FileNotFoundError as exc:
        raise StorageError(f"stored bundle file {str(previous / name)!r} is missing") from exc
    return dict(entry)


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
    directory: Path | str, keys: Iterable[str] | None = None, since: pd.Timestamp | None = None
) -> tuple[dict[str, pd.DataFrame | pd.Series], dict[str, Any]]:
    """``(frames, meta)`` of the bundle at ``directory`` (only the frames named in ``keys`` when
    given; with ``since``, only their rows dated on or after it, which must all be dated);
    StorageError if missing or malformed."""
    frames, meta, _ = _read_bundle(Path(directory), None if keys is None else list(keys), since=since)
    return frames, meta


def _read_bundle(
    directory: Path, keys: list[str] | None, token: str | None = None, since: Any = None
) -> tuple[dict[str, pd.DataFrame | pd.Series], dict[str, Any], dict[str, Any]]:
    deadline = time.monotonic() + _READ_RETRY_S
    while True:
        try:
            return _read_bundle_once(directory, keys, token, since)
        except StorageError:
            # a writer may be between its two renames, or have swapped the bundle under us
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _dir_opener(dir_fd: int) -> Callable[[str, int], int]:
    def opener(name: str, flags: int) -> int:
        return os.open(name, flags, dir_fd=dir_fd)

    return opener


def _manifest_at(directory: Path, opener: Callable[[str, int], int]) -> dict[str, Any]:
    try:
        with open(BUNDLE_MANIFEST, encoding="utf-8", opener=opener) as fh:
            manifest = json.load(fh)
    except FileNotFoundError as exc:
        raise StorageError(f"stored bundle {str(directory)!r} is missing (no {BUNDLE_MANIFEST})") from exc
    except (OSError, ValueError) as exc:
        raise StorageError(f"stored bundle {str(directory)!r}: {BUNDLE_MANIFEST} cannot be read: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") not in _READABLE_FORMATS:
        raise StorageError(f"stored bundle {str(directory)!r} has an unknown manifest format")
    if not isinstance(manifest.get("frames", {}), dict):
        raise StorageError(f"stored bundle {str(directory)!r}: malformed frame list in {BUNDLE_MANIFEST}")
    manifest.setdefault("frames", {})
    return manifest


def _open_stored(directory: Path, file_name: Any, opener: Callable[[str, int], int],
                 read: Callable[[IO[bytes], str], Any]) -> Any:
    """``read(file, label)`` of one stored file of the bundle open at ``opener``'s directory (the one
    place bundle files are opened)."""
    file_name = validate_part(file_name)
    label = str(directory / file_name)
    try:
        with open(file_name, "rb", opener=opener) as fh:
            return read(fh, label)
    except FileNotFoundError as exc:
        raise StorageError(f"stored bundle file {label!r} is missing") from exc


def _open_load(directory: Path, file_name: Any, opener: Callable[[str, int], int],
               empty: bool = False) -> pd.DataFrame | pd.Series:
    return _open_stored(directory, file_name, opener, lambda fh, label: _load(fh, label, empty))


def _load_chunks(directory: Path, chunks: list[dict[str, Any]], opener: Callable[[str, int], int]) -> Any:
    """The rows of ``chunks`` (in order) as one pandas object."""
    return _from_tables([_open_stored(directory, c.get("file"), opener,
                                      lambda fh, label: _read_table(fh, label, chunk=True)) for c in chunks])


def _load_entry(directory: Path, key: str, entry: Any, opener: Callable[[str, int], int],
                since: Any) -> pd.DataFrame | pd.Series:
    """One frame of a bundle: its one file, or its chunks concatenated (with ``since``: only the
    chunks that end on or after it, and its rows from ``since`` on)."""
    if not isinstance(entry, dict):
        raise StorageError(f"stored bundle {str(directory)!r}: malformed entry of frame {key!r}")
    chunks = entry.get("chunks")
    if chunks is None:
        value = _open_load(directory, entry.get("file"), opener)
    elif not isinstance(chunks, list) or not chunks:
        raise StorageError(f"stored bundle {str(directory)!r}: malformed chunk list of frame {key!r}")
    else:
        wanted = chunks
        if since is not None:
            last = pd.Timestamp(chunks[-1]["last"])
            wanted = [c for c in chunks if pd.Timestamp(c["last"]) >= _aligned(since, last)]
        if wanted:
            value = _load_chunks(directory, wanted, opener)
        else:  # nothing on or after since: the frame's columns, no rows
            value = _open_load(directory, chunks[-1].get("file"), opener, empty=True)
    if since is not None:
        if not isinstance(value.index, pd.DatetimeIndex):
            raise StorageError(f"stored bundle {str(directory)!r}: frame {key!r} is not dated, cannot read it since "
                               f"{since}")
        value = value[value.index >= _aligned(since, value.index)]
    if entry.get("kind") == "series" and isinstance(value, pd.DataFrame):
        raise StorageError(f"stored bundle {str(directory)!r}: frame {key!r} should be a Series")
    return value


def _read_bundle_once(
    directory: Path, keys: list[str] | None, token: str | None, since: Any = None
) -> tuple[dict[str, pd.DataFrame | pd.Series], dict[str, Any], dict[str, Any]]:
    """Read every file through one directory descriptor: a concurrent swap cannot mix versions
    (the old directory's files vanish with its trash, which fails the read and makes us retry)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except FileNotFoundError as exc:
        raise StorageError(f"stored bundle {str(directory)!r} is missing") from exc
    except OSError as exc:
        raise StorageError(f"stored bundle {str(directory)!r} cannot be opened: {exc}") from exc
    opener = _dir_opener(dir_fd)
    try:
        manifest = _manifest_at(directory, opener)
        if token is not None and manifest.get("token") != token:
            raise StorageError(
                f"stored bundle {str(directory)!r} was replaced by a newer version while it was being read"
            )
        entries = manifest["frames"]
        if keys is not None:
            absent = [k for k in keys if k not in entries]
            if absent:
                raise StorageError(f"stored bundle {str(directory)!r} has no frame(s) {absent}")
        frames = {key: _load_entry(directory, key, entry, opener, since) for key, entry in entries.items()
                  if keys is None or key in keys}
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

    def frames(self, keys: Iterable[str], since: pd.Timestamp | None = None) -> dict[str, pd.DataFrame | pd.Series]:
        """Several frames of the same version in one read (``since``: their rows from that date on,
        opening only the chunks that hold them)."""
        wanted = list(keys)
        if not wanted:
            return {}
        return _read_bundle(self.directory, wanted, self._token, since)[0]

    def frame(self, key: str, since: pd.Timestamp | None = None) -> pd.DataFrame | pd.Series:
        """One frame (``since``: only its rows from that date on)."""
        if key not in self._frame_keys:
            raise StorageError(f"stored bundle {str(self.directory)!r} has no frame {key!r}")
        return self.frames([key], since)[key]

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
