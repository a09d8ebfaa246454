"""storage: dated frames stored as their history and their last year, read since a date, and
appended to without rewriting the history."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from quant_meta_assets import storage
from quant_meta_assets.errors import StorageError
from quant_meta_assets.storage import (
    StoredBundle,
    commit_bundle,
    decode_frame,
    encode_chunked,
    read_bundle,
    read_json,
    stage_appended_bundle,
    write_bundle,
)

pytestmark = [pytest.mark.timeout(60)]

DAYS = pd.bdate_range("2019-12-02", "2022-01-31", name="date")


def prices(days=DAYS, tickers=("AAPL", "MSFT", "XOM")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(len(days), len(tickers))), index=days, columns=list(tickers))
    frame.columns.name = "ticker"
    frame.iloc[: min(30, len(days)), -1] = np.nan  # a ticker listed later
    frame.iloc[len(days) // 2, 0] = np.nan  # a point-in-time hole
    return frame


def returns(days=DAYS) -> pd.Series:
    values = pd.Series(np.linspace(-0.01, 0.01, len(days)), index=days, name="mom")
    values.iloc[:5] = np.nan
    return values


def files(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def chunk_years(index: pd.DatetimeIndex) -> list[int]:
    """The chunks' years: the history (labelled by its first year) and the last year."""
    first, last = int(index[0].year), int(index[-1].year)
    return [first] if first == last else [first, last]


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store"
    path.mkdir()
    return path


def _same(a, b) -> None:
    if isinstance(b, pd.Series):
        pd.testing.assert_series_equal(a, b, check_freq=False)
    else:
        pd.testing.assert_frame_equal(a, b, check_freq=False)
    assert a.index.freq is None


# ----------------------------------------------------------------- chunked round trips


@pytest.mark.parametrize("value", [
    prices(), prices(pd.bdate_range("2021-03-01", periods=40, name="date")), returns(),
    returns().rename(None), prices().astype("float32"), pd.DataFrame({"n": np.arange(len(DAYS))}, index=DAYS),
])
def test_a_dated_frame_is_stored_as_history_and_last_year_and_reads_back_identical(store, value):
    write_bundle(store / "b", {"x": value}, {"v": 1})
    years = chunk_years(value.index)
    assert files(store / "b") == ["meta.json", *[f"x.{y}.parquet" for y in years]]
    chunks = read_json(store / "b" / "meta.json")["frames"]["x"]["chunks"]
    assert [c["year"] for c in chunks] == years and sum(c["rows"] for c in chunks) == len(value)
    assert chunks[0]["first"].startswith(str(value.index[0].date()))
    assert chunks[-1]["last"].startswith(str(value.index[-1].date()))
    for c in chunks:
        assert hashlib.sha256((store / "b" / c["file"]).read_bytes()).hexdigest() == c["sha256"]
    frames, _ = read_bundle(store / "b")
    _same(frames["x"], value)
    _same(StoredBundle(store / "b")["x"], value)


@pytest.mark.parametrize("value", [
    prices().iloc[:0], pd.DataFrame({"kind": ["a", 1]}, index=DAYS[:2]), pd.Series([1.0, 2.0], name="s"),
    prices().iloc[::-1],
])
def test_empty_undated_unsorted_or_object_values_stay_one_file(store, value):
    write_bundle(store / "b", {"x": value}, {})
    assert files(store / "b") == ["meta.json", "x.parquet"]
    got = read_bundle(store / "b")[0]["x"]
    if isinstance(value, pd.Series):
        pd.testing.assert_series_equal(got, value)
    else:
        pd.testing.assert_frame_equal(got, value, check_freq=False)


def test_encoded_chunks_from_a_worker_store_the_same_files(store):
    kind, data = encode_chunked(prices())
    assert kind == "frame" and [c.year for c in data.chunks] == [2019, 2022]
    _same(decode_frame(data), prices())
    write_bundle(store / "a", {"x": prices()}, {})
    commit_bundle(storage.stage_bundle(store / "b", {"x": (kind, data)}, {}))
    for name in files(store / "a"):
        if name != "meta.json":
            assert (store / "a" / name).read_bytes() == (store / "b" / name).read_bytes()


def test_a_format_1_bundle_is_still_read(store):
    """Bundles stored before chunking: one file per frame, manifest format 1."""
    directory = store / "old"
    directory.mkdir()
    for key, value in (("w", prices()), ("r", returns())):
        (directory / f"{key}.parquet").write_bytes(storage.encode_frame(value)[1])
    manifest = {"format": "quant_meta_bundle/1", "token": "t", "meta": {"v": 1},
                "frames": {"w": {"file": "w.parquet", "kind": "frame"}, "r": {"file": "r.parquet", "kind": "series"}}}
    storage.atomic_write_json(directory / "meta.json", manifest)
    frames, meta = read_bundle(directory)
    _same(frames["w"], prices())
    _same(frames["r"], returns())
    _same(StoredBundle(directory).frame("w", since=pd.Timestamp("2021-06-01")), prices().loc["2021-06-01":])
    # and appended to: read once, stored chunked from then on
    new = prices(pd.bdate_range("2022-02-01", periods=3, name="date"))
    commit_bundle(stage_appended_bundle(store / "next", directory, {"w": new}, {"r": returns()}, meta))
    _same(read_bundle(store / "next")[0]["w"], pd.concat([prices(), new]))
    assert "w.2022.parquet" in files(store / "next")


# ----------------------------------------------------------------- since


class Opened:
    """Which stored files a read opens (a wrapper around storage's one opener of stored files)."""

    def __init__(self, monkeypatch):
        self.names: list[str] = []
        real = storage._open_stored

        def spy(directory, file_name, opener, read):
            self.names.append(file_name)
            return real(directory, file_name, opener, read)

        monkeypatch.setattr(storage, "_open_stored", spy)


def test_a_since_read_opens_only_the_chunks_it_needs(store, monkeypatch):
    write_bundle(store / "b", {"w": prices(), "r": returns()}, {})
    opened = Opened(monkeypatch)
    since = pd.Timestamp("2021-12-15")
    got = StoredBundle(store / "b").frame("w", since=since)
    _same(got, prices().loc[since:])
    assert opened.names == ["w.2019.parquet", "w.2022.parquet"]  # 2021-12-15 is in the history
    opened.names.clear()
    frames, _ = read_bundle(store / "b", ["r"], since=pd.Timestamp("2022-01-03"))
    _same(frames["r"], returns().loc["2022-01-03":])
    assert opened.names == ["r.2022.parquet"]
    # the history is not needed at all for the last year's rows
    (store / "b" / "w.2019.parquet").unlink()
    _same(StoredBundle(store / "b").frame("w", since=pd.Timestamp("2022-01-03")), prices().loc["2022-01-03":])
    with pytest.raises(StorageError, match=r"w\.2019\.parquet"):
        StoredBundle(store / "b")["w"]


def test_a_since_read_after_the_last_date_has_the_columns_and_no_rows(store, monkeypatch):
    write_bundle(store / "b", {"w": prices()}, {})
    got = StoredBundle(store / "b").frame("w", since=pd.Timestamp("2030-01-01"))
    _same(got, prices().iloc[:0])


def test_since_on_an_undated_frame_is_refused(store):
    write_bundle(store / "b", {"t": pd.DataFrame({"a": [1.0]})}, {})
    with pytest.raises(StorageError, match="not dated"):
        read_bundle(store / "b", since=pd.Timestamp("2020-01-01"))


# ----------------------------------------------------------------- appends


def _split(value, at):
    return value.loc[:at], value.loc[at:].iloc[1:]


@pytest.mark.parametrize("at", ["2021-12-31", "2022-01-14", "2019-12-31"])
def test_an_appended_bundle_equals_a_full_write_and_links_the_history(store, at):
    full_w, full_r = prices(), returns()
    (old_w, new_w), (old_r, new_r) = _split(full_w, at), _split(full_r, at)
    write_bundle(store / "prev", {"w": old_w, "r": old_r, "other": full_r}, {"v": 1})
    staged = stage_appended_bundle(store / "next", store / "prev", {"w": new_w, "r": new_r}, {"s": old_r}, {"v": 2})
    commit_bundle(staged)
    write_bundle(store / "full", {"w": full_w, "r": full_r, "s": old_r}, {"v": 2})
    got, meta = read_bundle(store / "next")
    assert meta == {"v": 2} and sorted(got) == ["r", "s", "w"]  # 'other' was not carried over
    _same(got["w"], full_w)
    _same(got["r"], full_r)
    assert files(store / "next") == files(store / "full")
    full_manifest = read_json(store / "full" / "meta.json")["frames"]
    assert read_json(store / "next" / "meta.json")["frames"] == full_manifest  # same chunks, same bytes
    same_year = pd.Timestamp(new_w.index[0]).year == pd.Timestamp(at).year  # else the history is rewritten
    for name in files(store / "prev"):
        if name.startswith(("w.", "r.")):
            history = int(name.split(".")[1]) < pd.Timestamp(at).year
            shared = (store / "next" / name).exists() and \
                os.stat(store / "prev" / name).st_ino == os.stat(store / "next" / name).st_ino
            assert shared == (history and same_year), name
    shutil.rmtree(store / "prev")  # the previous run's outputs pruned: the new bundle is whole
    got, _ = read_bundle(store / "next")
    _same(got["w"], full_w)


def test_an_append_reads_only_the_last_years_chunk(store, monkeypatch):
    old, new = _split(prices(), "2022-01-14")
    write_bundle(store / "prev", {"w": old}, {})
    opened = Opened(monkeypatch)
    commit_bundle(stage_appended_bundle(store / "next", store / "prev", {"w": new}, {}, {}))
    assert opened.names == ["w.2022.parquet"]


def test_replace_from_drops_the_restated_last_day(store):
    full = returns()
    old = full.loc[:"2022-01-14"].copy()
    old.iloc[-1] = 99.0  # the previous run's last day, restated by the update
    new = full.loc["2022-01-14":]
    write_bundle(store / "prev", {"r": old}, {})
    with pytest.raises(StorageError, match="not after the previous last date 2022-01-14"):
        stage_appended_bundle(store / "next", store / "prev", {"r": new}, {}, {})
    commit_bundle(stage_appended_bundle(store / "next", store / "prev", {"r": new}, {}, {},
                                        replace_from={"r": pd.Timestamp("2022-01-14")}))
    _same(read_bundle(store / "next")[0]["r"], full)


def test_a_copy_stands_in_for_a_link_across_devices(store, monkeypatch):
    old, new = _split(prices(), "2022-01-14")
    write_bundle(store / "prev", {"w": old}, {})

    def no_link(*args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(storage.os, "link", no_link)
    commit_bundle(stage_appended_bundle(store / "next", store / "prev", {"w": new}, {}, {}))
    assert os.stat(store / "prev" / "w.2019.parquet").st_ino != os.stat(store / "next" / "w.2019.parquet").st_ino
    assert (store / "prev" / "w.2019.parquet").read_bytes() == (store / "next" / "w.2019.parquet").read_bytes()
    _same(read_bundle(store / "next")[0]["w"], prices())


@pytest.mark.parametrize("new, message", [
    (lambda old: prices().loc["2022-01-10":], "start on 2022-01-10.*not after the previous last date 2022-01-14"),
    (lambda old: prices().loc["2022-01-17":, ["AAPL", "MSFT"]], r"'w'.*columns differ.*missing \['XOM'\]"),
    (lambda old: prices().loc["2022-01-17":, ["MSFT", "AAPL", "XOM"]], "same set in another order"),
    (lambda old: prices().loc["2022-01-17":].astype("float32"), r"dtypes of columns \['AAPL'"),
    (lambda old: returns().loc["2022-01-17":], "previous bundle stores a frame, the new rows are a series"),
    (lambda old: prices().loc["2022-01-17":].rename_axis(index="day"), "index"),
])
def test_a_bad_append_is_refused_naming_the_frame(store, new, message):
    old = prices().loc[:"2022-01-14"]
    write_bundle(store / "prev", {"w": old}, {})
    with pytest.raises(StorageError, match=message):
        stage_appended_bundle(store / "next", store / "prev", {"w": new(old)}, {}, {})
    assert files(store) == ["prev"]  # nothing staged is left behind


def test_an_append_to_a_missing_bundle_or_frame_is_refused(store):
    with pytest.raises(StorageError, match="previous bundle .* is missing"):
        stage_appended_bundle(store / "next", store / "gone", {"w": prices()}, {}, {})
    write_bundle(store / "prev", {"w": prices().loc[:"2022-01-14"]}, {})
    with pytest.raises(StorageError, match=r"has no frame\(s\) \['x'\] to append to"):
        stage_appended_bundle(store / "next", store / "prev", {"x": prices()}, {}, {})
    with pytest.raises(StorageError, match="both appended to and written whole"):
        stage_appended_bundle(store / "next", store / "prev", {"w": prices()}, {"w": prices()}, {})
    (store / "prev" / "w.2019.parquet").unlink()  # the linked history pruned under the writer
    with pytest.raises(StorageError, match=r"w\.2019\.parquet.* is missing"):
        stage_appended_bundle(store / "next", store / "prev", {"w": prices().loc["2022-01-17":]}, {}, {})
    assert files(store) == ["prev"]


def test_retention_pruning_the_previous_run_leaves_the_appended_bundle_whole(tmp_path, monkeypatch):
    from quant_meta_assets.publishing.retention import prune_runs

    root = tmp_path / "storage"
    old_run, new_run = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
    previous, current = (root / "runs" / run / "sleeves" / "mom" for run in (old_run, new_run))
    old, new = _split(prices(), "2022-01-14")
    write_bundle(previous, {"w": old}, {})
    commit_bundle(stage_appended_bundle(current, previous, {"w": new}, {}, {}))
    os.utime(root / "runs" / old_run, (1, 1))
    monkeypatch.setenv("QUANT_META_KEEP_RUNS", "1")
    assert prune_runs(root, keep=1) == [old_run]
    assert not (root / "runs" / old_run).exists()
    _same(read_bundle(current)[0]["w"], prices())


# ----------------------------------------------------------------- wide float frames


def _wide(n_columns: int = 40, days=DAYS) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(len(days), n_columns)), index=days,
                         columns=pd.Index([f"T{i:03d}" for i in range(n_columns)], name="ticker"))
    frame.iloc[:20, 3] = np.nan  # listed later
    frame.iloc[-5:, 7] = np.nan  # delisted
    return frame


@pytest.mark.parametrize("value", [_wide(), _wide().iloc[-1:], _wide().iloc[:0], _wide().rename_axis(columns=None),
                                   _wide(storage.MATRIX_MIN_COLUMNS)])
def test_a_wide_float_frame_is_one_list_column_and_reads_back_as_column_by_column(store, value, monkeypatch):
    import pyarrow.parquet as pq

    write_bundle(store / "b", {"w": value}, {})
    entry = read_json(store / "b" / "meta.json")["frames"]["w"]
    first = entry["chunks"][0]["file"] if "chunks" in entry else entry["file"]
    assert storage._MATRIX_COLUMN in pq.read_schema(store / "b" / first).names
    got = read_bundle(store / "b")[0]["w"]
    monkeypatch.setattr(storage, "MATRIX_MIN_COLUMNS", 10**9)  # the column-by-column path, as an oracle
    write_bundle(store / "c", {"w": value}, {})
    assert storage._MATRIX_COLUMN not in pq.read_schema(next((store / "c").glob("w*.parquet"))).names
    pd.testing.assert_frame_equal(got, read_bundle(store / "c")[0]["w"])
    pd.testing.assert_frame_equal(got, value, check_freq=False)
    np.testing.assert_array_equal(np.isnan(got.to_numpy()), np.isnan(value.to_numpy()))


@pytest.mark.parametrize("value", [
    _wide(storage.MATRIX_MIN_COLUMNS - 1),
    _wide().set_axis(range(40), axis=1),  # labels that are not strings
    _wide().astype({"T000": "float32"}),
    _wide().astype(int, errors="ignore").fillna(0).astype(int),  # integers
])
def test_narrow_mixed_or_unlabelled_frames_stay_column_by_column(store, value):
    import pyarrow.parquet as pq

    write_bundle(store / "b", {"w": value}, {})
    assert storage._MATRIX_COLUMN not in pq.read_schema(next((store / "b").glob("w*.parquet"))).names
    pd.testing.assert_frame_equal(read_bundle(store / "b")[0]["w"], value, check_freq=False,
                                  check_column_type=False)


def test_a_wide_frame_appends_and_reads_since_like_any_frame(store):
    old, new = _split(_wide(), "2022-01-14")
    write_bundle(store / "prev", {"w": old}, {})
    commit_bundle(stage_appended_bundle(store / "next", store / "prev", {"w": new}, {}, {}))
    _same(read_bundle(store / "next")[0]["w"], _wide())
    _same(StoredBundle(store / "next").frame("w", since=pd.Timestamp("2022-01-10")), _wide().loc["2022-01-10":])
