"""The published-snapshot pointer and retention, on plain directories (no Dagster)."""

from __future__ import annotations

import os
import threading
import uuid

import pandas as pd
import pytest

from quant_meta_assets.publishing import retention, snapshot as publication
from quant_meta_assets.bundle_values import split_value
from quant_meta_assets.errors import StorageError
from quant_meta_assets.storage import write_bundle


def store_run(root, run_id: str, marker: float) -> dict:
    """Four meta bundles of one run, each carrying ``marker`` so a mix of runs is visible."""
    frame = pd.DataFrame({"a": [marker, marker]}, index=pd.date_range("2024-01-01", periods=2, name="date"))
    values = {
        "meta/returns": frame,
        "meta/optimize": {"weights": frame, "diagnostics": frame},
        "meta/flatten": {"asset_weights": frame, "meta_weights_daily": frame, "exposure": frame},
        "meta/report": {"metrics": frame, "title": f"run {marker}"},
    }
    dirs = {}
    for key, value in values.items():
        dirs[key] = publication.run_scoped_dir(root, run_id, key.split("/"))
        write_bundle(dirs[key], *split_value(value))
    return dirs


def markers(snapshot: publication.PublishedSnapshot) -> set[float]:
    out = snapshot.outputs
    frames = [out["meta/returns"], out["meta/optimize"]["weights"], out["meta/flatten"]["asset_weights"],
              out["meta/report"]["metrics"]]
    return {float(v) for f in frames for v in f["a"]}


def test_read_published_before_any_publication_says_what_to_do(tmp_path):
    with pytest.raises(StorageError, match="nothing is published.*run meta_full"):
        publication.read_published(tmp_path)


def test_publish_points_at_one_run_and_refuses_incomplete_or_foreign_sets(tmp_path):
    run = str(uuid.uuid4())
    dirs = store_run(tmp_path, run, 1.0)
    publication.publish(tmp_path, run, dirs)
    snap = publication.read_published(tmp_path)
    assert snap.run_id == run and markers(snap) == {1.0}
    assert snap.asset_weights.equals(snap.outputs["meta/flatten"]["asset_weights"])

    before = publication.published_path(tmp_path).read_bytes()
    with pytest.raises(StorageError, match=r"no stored bundle for \['meta/report'\]"):
        publication.publish(tmp_path, "x", {k: v for k, v in dirs.items() if k != "meta/report"})
    (dirs["meta/report"] / "meta.json").unlink()  # a bundle without its manifest is not complete
    with pytest.raises(StorageError, match="not a complete stored bundle"):
        publication.publish(tmp_path, "x", dirs)
    with pytest.raises(StorageError, match="outside the storage root"):
        publication.publish(tmp_path / "runs", "x", dirs | {"meta/returns": tmp_path})
    assert publication.published_path(tmp_path).read_bytes() == before  # the pointer never moved
    with pytest.raises(StorageError, match="unsafe|run id"):
        publication.run_scoped_dir(tmp_path, "../escape", ["meta", "returns"])


@pytest.mark.timeout(60)
def test_readers_never_see_a_mix_while_runs_are_published(tmp_path):
    runs = [(str(uuid.uuid4()), float(i)) for i in range(2)]
    sets = {run: store_run(tmp_path, run, marker) for run, marker in runs}
    publication.publish(tmp_path, runs[0][0], sets[runs[0][0]])
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            run = runs[i % 2][0]
            publication.publish(tmp_path, run, sets[run])
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = set()
        for _ in range(150):
            snap = publication.read_published(tmp_path)
            found = markers(snap)
            assert len(found) == 1, f"a mix of runs: {found}"
            seen |= found
    finally:
        stop.set()
        thread.join()
    assert seen == {0.0, 1.0}  # both publications were observed, each whole


def test_retention_keeps_the_newest_n_and_everything_pointed_to(tmp_path):
    ids = [str(uuid.uuid4()) for _ in range(6)]
    for age, run in enumerate(reversed(ids)):  # ids[0] oldest ... ids[-1] newest
        store_run(tmp_path, run, 0.0)
        report = tmp_path / "reports" / run
        report.mkdir(parents=True)
        (report / "report.html").write_text("<html/>")
        for path in (tmp_path / "runs" / run, report):
            os.utime(path, (1_000_000 - age * 100, 1_000_000 - age * 100))
    (tmp_path / "reports" / "sdk").mkdir()  # not a run id: never pruned
    publication.publish(
        tmp_path, ids[1], {key: publication.run_scoped_dir(tmp_path, ids[1], key.split("/")) for key in publication.META_OUTPUTS}
    )
    os.utime(tmp_path / "runs" / ids[1], (1, 1))  # published, and the oldest by time
    os.utime(tmp_path / "reports" / ids[1], (1, 1))

    pruned = retention.prune_runs(tmp_path, keep=2, protected={ids[2]})  # ids[2]: a latest materialization
    assert sorted(pruned) == sorted([ids[0], ids[3]])
    kept = set(retention.run_dirs(tmp_path))
    assert kept == {ids[1], ids[2], ids[4], ids[5]}
    assert (tmp_path / "reports" / "sdk").is_dir()
    assert not any(p.name.startswith(".") for p in (tmp_path / "runs").iterdir())  # no half-deleted leftovers
    assert markers(publication.read_published(tmp_path)) == {0.0}
    with pytest.raises(ValueError, match="keep must be"):
        retention.prune_runs(tmp_path, keep=0)


def test_keep_runs_setting(monkeypatch):
    from quant_meta_assets import settings

    monkeypatch.delenv(settings.KEEP_RUNS_ENV, raising=False)
    assert settings.keep_runs() == 30
    monkeypatch.setenv(settings.KEEP_RUNS_ENV, "5")
    assert settings.keep_runs() == 5
    monkeypatch.setenv(settings.KEEP_RUNS_ENV, "0")
    with pytest.raises(ValueError, match="QUANT_META_KEEP_RUNS"):
        settings.keep_runs()
