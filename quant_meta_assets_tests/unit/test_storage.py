"""storage: contained paths, atomic files, atomic bundles (no pickle)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quant_meta_assets.errors import StorageError
from quant_meta_assets.storage import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    read_bundle,
    read_json,
    read_parquet_frame,
    read_parquet_series,
    safe_child,
    write_bundle,
)

INDEX = pd.date_range("2021-01-04", periods=6, freq="B", name="date")


def series(name="momentum", offset=0.0) -> pd.Series:
    return pd.Series(np.arange(6.0) / 100 + offset, index=INDEX, name=name)


def frame(offset=0.0) -> pd.DataFrame:
    return pd.DataFrame({"AAPL": np.linspace(0, 1, 6) + offset, "MSFT": 0.5}, index=INDEX)


@pytest.fixture
def store(tmp_path):
    """An empty directory (tmp_path itself also holds the autouse DAGSTER_HOME)."""
    path = tmp_path / "store"
    path.mkdir()
    return path


class ExplodesWhenPrinted:
    def __str__(self) -> str:
        raise RuntimeError("cannot serialise me")


# ----------------------------------------------------------------- safe_child


def test_safe_child_joins_plain_names(store):
    assert safe_child(store, "sleeves", "momentum_12_1") == store.resolve() / "sleeves" / "momentum_12_1"
    assert safe_child(str(store), "a.b-c_d") == store.resolve() / "a.b-c_d"


@pytest.mark.parametrize("part", ["..", ".", "", "a/b", "../x", "/etc", "a\\b", "x y", "é", "a\x00", None, 3])
def test_safe_child_rejects_unsafe_parts_naming_them(store, part):
    with pytest.raises(StorageError, match="part"):
        safe_child(store, "ok", part)


def test_safe_child_rejects_symlink_escaping_root(store):
    root, outside = store / "root", store / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(StorageError, match="outside the storage root"):
        safe_child(root, "link", "x")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.text(min_size=0, max_size=12), min_size=1, max_size=4))
def test_safe_child_never_escapes_root(store, parts):
    root = store.resolve()
    try:
        child = safe_child(root, *parts)
    except StorageError:
        return
    assert child != root and child.is_relative_to(root)
    assert child == root.joinpath(*parts)


# ----------------------------------------------------------------- atomic files


def test_atomic_writes_round_trip(store):
    atomic_write_bytes(store / "a.bin", b"\x00\x01")
    atomic_write_text(store / "sub" / "a.txt", "héllo")
    atomic_write_json(store / "a.json", {"b": 1, "a": pd.Timestamp("2021-01-04"), "nan": None})
    assert (store / "a.bin").read_bytes() == b"\x00\x01"
    assert (store / "sub" / "a.txt").read_text(encoding="utf-8") == "héllo"
    text = (store / "a.json").read_text()
    assert text.index('"a"') < text.index('"b"')  # sorted keys
    assert read_json(store / "a.json") == {"a": "2021-01-04 00:00:00", "b": 1, "nan": None}
    assert sorted(p.name for p in store.iterdir()) == ["a.bin", "a.json", "sub"]  # no temp files


def test_parquet_round_trip_keeps_series_name_and_date_index(store):
    atomic_write_parquet(store / "s.parquet", series())
    atomic_write_parquet(store / "f.parquet", frame())
    unnamed = pd.Series([1.0, np.nan], index=INDEX[:2])
    atomic_write_parquet(store / "u.parquet", unnamed)
    pd.testing.assert_series_equal(read_parquet_series(store / "s.parquet"), series(), check_freq=False)
    pd.testing.assert_frame_equal(read_parquet_frame(store / "f.parquet"), frame(), check_freq=False)
    pd.testing.assert_series_equal(read_parquet_series(store / "u.parquet"), unnamed, check_freq=False)
    assert isinstance(read_parquet_series(store / "s.parquet").index, pd.DatetimeIndex)
    assert read_parquet_frame(store / "s.parquet").columns.tolist() == ["momentum"]


def test_failed_json_serialisation_leaves_previous_version(store):
    path = store / "meta.json"
    atomic_write_json(path, {"version": 1})
    with pytest.raises(RuntimeError, match="cannot serialise me"):
        # "a" is written to the temp file first, then serialisation fails midway
        atomic_write_json(path, {"a": "x" * 10_000, "b": ExplodesWhenPrinted()})
    assert read_json(path) == {"version": 1}
    assert [p.name for p in store.iterdir()] == ["meta.json"]


def test_failed_parquet_serialisation_leaves_previous_version(store):
    path = store / "returns.parquet"
    atomic_write_parquet(path, series())
    bad = pd.DataFrame({"x": [object(), object()]})
    with pytest.raises(Exception):
        atomic_write_parquet(path, bad)
    with pytest.raises(StorageError):
        atomic_write_parquet(path, [1, 2, 3])  # type: ignore[arg-type]
    pd.testing.assert_series_equal(read_parquet_series(path), series(), check_freq=False)
    assert [p.name for p in store.iterdir()] == ["returns.parquet"]


def test_missing_files_raise_storage_error_naming_the_path(store):
    with pytest.raises(StorageError, match="nope.json"):
        read_json(store / "nope.json")
    with pytest.raises(StorageError, match="nope.parquet"):
        read_parquet_frame(store / "nope.parquet")


def test_no_pickle_in_storage_module():
    source = Path(__import__("quant_meta_assets.storage").storage.__file__).read_text()
    assert "pickle" not in source.replace("never pickle", "")


# ----------------------------------------------------------------- bundles


def test_bundle_round_trip_and_swap(store):
    target = store / "sleeves" / "momentum"
    write_bundle(target, {"returns": series(), "weights": frame()}, {"status": "success", "runtime_s": 1.5})
    frames, meta = read_bundle(target)
    assert meta == {"runtime_s": 1.5, "status": "success"}
    pd.testing.assert_series_equal(frames["returns"], series(), check_freq=False)
    pd.testing.assert_frame_equal(frames["weights"], frame(), check_freq=False)

    # the new version replaces the old one entirely (no stale 'weights' survives)
    write_bundle(target, {"returns": series(offset=1.0)}, {"status": "error", "error": "ValueError: x"})
    frames, meta = read_bundle(target)
    assert set(frames) == {"returns"} and meta["status"] == "error"
    assert frames["returns"].iloc[0] == 1.0
    assert sorted(p.name for p in target.parent.iterdir()) == ["momentum"]  # no tmp/trash left


def test_failed_bundle_write_keeps_old_bundle(store):
    target = store / "b"
    write_bundle(target, {"returns": series()}, {"version": 1})
    with pytest.raises(RuntimeError):
        write_bundle(target, {"returns": series(offset=5.0)}, {"version": 2, "bad": ExplodesWhenPrinted()})
    with pytest.raises(StorageError, match="unsafe path part"):
        write_bundle(target, {"../evil": series()}, {"version": 3})
    frames, meta = read_bundle(target)
    assert meta == {"version": 1} and frames["returns"].iloc[0] == 0.0
    assert sorted(p.name for p in store.iterdir()) == ["b"]


def test_leftover_tmp_and_trash_dirs_are_ignored_and_cleaned(store):
    target = store / "b"
    # an interrupted writer (pid long gone) left a complete-looking new version and a trash dir
    for leftover in (".b.tmp-999999999-abc", ".b.trash-999999999-def"):
        write_bundle(store / "scratch", {"returns": series(offset=9.0)}, {"version": "leftover"})
        os.rename(store / "scratch", store / leftover)
    with pytest.raises(StorageError, match="missing"):
        read_bundle(target)  # never loads a leftover
    write_bundle(target, {"returns": series()}, {"version": 1})
    assert sorted(p.name for p in store.iterdir()) == ["b"]
    assert read_bundle(target)[1] == {"version": 1}


def test_leftover_of_a_live_writer_is_not_deleted(store):
    live = store / f".b.tmp-{os.getppid()}-abc"
    live.mkdir()
    write_bundle(store / "b", {}, {"version": 1})
    assert live.exists()


def test_reader_never_sees_a_mix_during_concurrent_swaps(store):
    target = store / "b"
    write_bundle(target, {"returns": series(offset=0.0), "weights": frame(offset=0.0)}, {"version": 0})
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            try:
                frames, meta = read_bundle(target)
                reads[0] += 1
            except StorageError as exc:  # only allowed if the swap window outlived the retries
                problems.append(f"read failed: {exc}")
                continue
            v = meta["version"]
            if frames["returns"].iloc[0] != v or frames["weights"]["AAPL"].iloc[0] != v:
                problems.append(f"mixed bundle: meta {v}, returns {frames['returns'].iloc[0]}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for version in range(1, 40):
            write_bundle(target, {"returns": series(offset=version), "weights": frame(offset=version)},
                         {"version": version})
    finally:
        stop.set()
        thread.join(30)
    assert problems == []
    assert reads[0] > 0
    assert json.loads((target / "meta.json").read_text())["meta"] == {"version": 39}


# ----------------------------------------------------------------- staged bundles, partial and lazy reads


def test_staged_bundle_is_invisible_until_committed(store):
    from quant_meta_assets.storage import commit_bundles, encode_frame, stage_bundle

    target = store / "b"
    write_bundle(target, {"returns": series()}, {"version": 1})
    staged = stage_bundle(target, {"returns": encode_frame(series(offset=1.0)), "weights": frame()}, {"version": 2})
    assert read_bundle(target)[1] == {"version": 1}  # readers still see the old version
    commit_bundles([staged])
    frames, meta = read_bundle(target)
    assert meta == {"version": 2} and frames["returns"].iloc[0] == 1.0
    pd.testing.assert_frame_equal(frames["weights"], frame(), check_freq=False)
    assert sorted(p.name for p in store.iterdir()) == ["b"]


def test_discarded_stage_leaves_the_old_bundle(store):
    from quant_meta_assets.storage import discard_bundle, stage_bundle

    target = store / "b"
    write_bundle(target, {"returns": series()}, {"version": 1})
    discard_bundle(stage_bundle(target, {"returns": series(offset=3.0)}, {"version": 2}))
    assert read_bundle(target)[1] == {"version": 1}
    assert sorted(p.name for p in store.iterdir()) == ["b"]


def test_a_staged_bundle_of_another_target_is_refused(store):
    from quant_meta_assets.storage import StagedBundle, commit_bundle, stage_bundle

    staged = stage_bundle(store / "a", {"returns": series()}, {})
    with pytest.raises(StorageError, match="not a staged version"):
        commit_bundle(StagedBundle(target=store / "b", staging=staged.staging))


def test_read_bundle_reads_only_the_named_frames(store):
    target = store / "b"
    write_bundle(target, {"returns": series(), "weights": frame()}, {"version": 1})
    (target / "weights.2021.parquet").write_bytes(b"not parquet")  # would fail if it were read
    frames, meta = read_bundle(target, keys=["returns"])
    assert list(frames) == ["returns"] and meta == {"version": 1}
    with pytest.raises(StorageError, match="weights.2021.parquet"):
        read_bundle(target)
    with pytest.raises(StorageError, match="no frame"):
        read_bundle(target, keys=["costs"])


def test_stored_bundle_reads_frames_on_access_and_refuses_a_newer_version(store):
    from quant_meta_assets.storage import StoredBundle

    target = store / "b"
    write_bundle(target, {"returns": series(), "weights": frame()}, {"status": "success", "n": 3})
    lazy = StoredBundle(target)
    assert lazy["status"] == "success" and set(lazy) == {"status", "n", "returns", "weights"}
    pd.testing.assert_series_equal(lazy["returns"], series(), check_freq=False)
    assert lazy.with_meta(sleeve="x")["sleeve"] == "x" and "sleeve" not in lazy
    write_bundle(target, {"returns": series(offset=1.0)}, {"status": "success"})
    with pytest.raises(StorageError, match="replaced by a newer version"):
        lazy["returns"]
    assert StoredBundle(target)["returns"].iloc[0] == 1.0


def test_encoded_frames_round_trip(store):
    from quant_meta_assets.storage import decode_frame, encode_frame

    kind, data = encode_frame(series())
    assert kind == "series" and isinstance(data, bytes)
    pd.testing.assert_series_equal(decode_frame(data), series(), check_freq=False)
    kind, data = encode_frame(frame())
    assert kind == "frame"
    pd.testing.assert_frame_equal(decode_frame(data), frame(), check_freq=False)
