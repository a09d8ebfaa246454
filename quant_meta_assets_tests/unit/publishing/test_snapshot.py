"""The published-snapshot pointer, its lineage and monotonicity rules, and retention, on plain
directories (no Dagster)."""

from __future__ import annotations

import os
import threading
import uuid

import pandas as pd
import pytest

from quant_meta_assets.publishing import retention, snapshot as publication
from quant_meta_assets.bundle_values import split_value
from quant_meta_assets.errors import LineageError, StorageError
from quant_meta_assets.publishing import lineage
from quant_meta_assets.storage import write_bundle

SLEEVES = {"a": "sleeve-run-1/h1", "b": "sleeve-run-2/h2"}


def members_of(run_id: str, as_of: str = "2024-01-02", computed_at: str = "2024-01-03T00:00:00+00:00",
               prices: str = "p1", sleeves: dict | None = None, runs: dict | None = None) -> dict:
    """Four lineages of one consistent set; ``runs`` overrides the run of a member (key -> run id)."""
    runs = {key: run_id for key in publication.META_OUTPUTS} | (runs or {})
    inputs = {
        "meta/returns": {},
        "meta/optimize": {"meta/returns": runs["meta/returns"]},
        "meta/flatten": {"meta/returns": runs["meta/returns"], "meta/optimize": runs["meta/optimize"]},
        "meta/report": {k: runs[k] for k in ("meta/returns", "meta/optimize", "meta/flatten")},
    }
    return {key: {"asset": key, "run_id": runs[key], "computed_at": computed_at, "prices_hash": prices,
                  "as_of": as_of, "sleeves": dict(sleeves or SLEEVES), "inputs": inputs[key]}
            for key in publication.META_OUTPUTS}


def store_run(root, run_id: str, marker: float, **kwargs) -> tuple[dict, dict]:
    """Four meta bundles of one run, each carrying ``marker`` so a mix of runs is visible, and
    their lineage (stored with each value, as the assets store it)."""
    frame = pd.DataFrame({"a": [marker, marker]}, index=pd.date_range("2024-01-01", periods=2, name="date"))
    values = {
        "meta/returns": frame,
        "meta/optimize": {"weights": frame, "diagnostics": frame},
        "meta/flatten": {"asset_weights": frame, "meta_weights_daily": frame, "exposure": frame},
        "meta/report": {"metrics": frame, "title": f"run {marker}"},
    }
    members = members_of(run_id, **kwargs)
    dirs = {}
    for key, value in values.items():
        dirs[key] = publication.run_scoped_dir(root, run_id, key.split("/"))
        write_bundle(dirs[key], *split_value(lineage.attach(value, members[key])))
    return dirs, members


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
    dirs, members = store_run(tmp_path, run, 1.0)
    manifest, refused = publication.publish(tmp_path, run, dirs, members)
    assert refused is None and manifest["generation"] == 1 and manifest["as_of"] == "2024-01-02"
    snap = publication.read_published(tmp_path)
    assert snap.run_id == run and markers(snap) == {1.0}
    assert (snap.as_of, snap.generation, snap.prices_hash) == ("2024-01-02", 1, "p1")
    assert snap.asset_weights.equals(snap.outputs["meta/flatten"]["asset_weights"])
    assert lineage.detach(snap.outputs["meta/returns"]) == members["meta/returns"]  # stored with the value
    assert publication.named_runs(manifest) == {run, "sleeve-run-1", "sleeve-run-2"}

    before = publication.published_path(tmp_path).read_bytes()
    with pytest.raises(StorageError, match=r"no stored bundle \(or lineage\) for \['meta/report'\]"):
        publication.publish(tmp_path, "x", {k: v for k, v in dirs.items() if k != "meta/report"}, members)
    (dirs["meta/report"] / "meta.json").unlink()  # a bundle without its manifest is not complete
    with pytest.raises(StorageError, match="not a complete stored bundle"):
        publication.publish(tmp_path, "x", dirs, members)
    with pytest.raises(StorageError, match="outside the storage root"):
        publication.publish(tmp_path / "runs", "x", dirs | {"meta/returns": tmp_path}, members)
    assert publication.published_path(tmp_path).read_bytes() == before  # the pointer never moved
    with pytest.raises(StorageError, match="unsafe|run id"):
        publication.run_scoped_dir(tmp_path, "../escape", ["meta", "returns"])


@pytest.mark.timeout(60)
def test_readers_never_see_a_mix_while_runs_are_published(tmp_path):
    # a sequence of ever newer sets (each computed later than the one before), markers 0, 1, 0, 1 ...
    sets = []
    for i in range(60):
        run = str(uuid.uuid4())
        sets.append((run, *store_run(tmp_path, run, float(i % 2), computed_at=f"2024-01-03T00:00:{i:02d}+00:00")))
    publication.publish(tmp_path, *sets[0])
    done = threading.Event()

    def writer():
        for run, dirs, members in sets[1:]:
            assert publication.publish(tmp_path, run, dirs, members)[1] is None
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = set()
        while not done.is_set() or not seen:
            snap = publication.read_published(tmp_path)
            found = markers(snap)
            assert len(found) == 1, f"a mix of runs: {found}"
            seen |= found
    finally:
        thread.join()
    assert publication.read_published(tmp_path).generation == 60


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
        tmp_path, ids[1], {key: publication.run_scoped_dir(tmp_path, ids[1], key.split("/")) for key in publication.META_OUTPUTS},
        members_of(ids[1], sleeves={"a": f"{ids[3]}/h1"}),  # ids[3] holds a published sleeve bundle
    )
    os.utime(tmp_path / "runs" / ids[1], (1, 1))  # published, and the oldest by time
    os.utime(tmp_path / "reports" / ids[1], (1, 1))

    pruned = retention.prune_runs(tmp_path, keep=2, protected={ids[2]})  # ids[2]: a latest materialization
    assert sorted(pruned) == [ids[0]]
    kept = set(retention.run_dirs(tmp_path))
    assert kept == {ids[1], ids[2], ids[3], ids[4], ids[5]}
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


def test_a_set_that_is_not_one_lineage_is_refused_and_the_pointer_never_moves(tmp_path):
    run = str(uuid.uuid4())
    dirs, members = store_run(tmp_path, run, 1.0)
    publication.publish(tmp_path, run, dirs, members)
    before = publication.published_path(tmp_path).read_bytes()
    other_prices = dict(members, **{"meta/report": {**members["meta/report"], "prices_hash": "p2"}})
    with pytest.raises(LineageError, match="meta/returns used prices p1.*meta/report prices p2"):
        publication.publish(tmp_path, run, dirs, other_prices)
    other_sleeve = dict(members, **{"meta/flatten": {**members["meta/flatten"], "sleeves": {**SLEEVES, "b": "r9/h9"}}})
    with pytest.raises(LineageError, match=r"different sleeve bundles \(b: sleeve-run-2/h2 vs r9/h9\)"):
        publication.publish(tmp_path, run, dirs, other_sleeve)
    foreign = members_of(run, runs={"meta/returns": "older-run"})  # the others say they read older-run's
    foreign["meta/returns"]["run_id"] = run  # ... but the set holds this run's meta/returns
    with pytest.raises(LineageError, match="computed from meta/returns of run older-run"):
        publication.publish(tmp_path, run, dirs, foreign)
    assert publication.published_path(tmp_path).read_bytes() == before


def test_publication_is_monotone_in_as_of_then_in_computation_time(tmp_path):
    new_run, old_run, same_day_old, same_day_new = (str(uuid.uuid4()) for _ in range(4))
    newer = store_run(tmp_path, new_run, 2.0, as_of="2022-12-29")
    older = store_run(tmp_path, old_run, 1.0, as_of="2022-12-28", computed_at="2030-01-01T00:00:00+00:00")
    assert publication.publish(tmp_path, new_run, *newer)[1] is None
    pointer = publication.published_path(tmp_path).read_bytes()
    # an older as_of never replaces a newer one, however recently it was computed
    manifest, refused = publication.publish(tmp_path, old_run, *older)
    assert refused == f"not published: as_of 2022-12-28 is older than the published 2022-12-29 (published run {new_run})"
    assert manifest["run_id"] == new_run and publication.published_path(tmp_path).read_bytes() == pointer
    # the same set again: nothing to do
    assert publication.publish(tmp_path, new_run, *newer)[1] == "already published (generation 1)"
    # same as_of: a set whose oldest output is older than the published set's is refused ...
    stale = store_run(tmp_path, same_day_old, 3.0, as_of="2022-12-29", computed_at="2024-01-02T00:00:00+00:00")
    assert "before the published set's" in publication.publish(tmp_path, same_day_old, *stale)[1]
    # ... a newer computation on the same data is published, and the generation counts up
    fresh = store_run(tmp_path, same_day_new, 4.0, as_of="2022-12-29", computed_at="2024-01-04T00:00:00+00:00")
    manifest, refused = publication.publish(tmp_path, same_day_new, *fresh)
    assert refused is None and manifest["generation"] == 2
    assert markers(publication.read_published(tmp_path)) == {4.0}


def test_restore_puts_back_the_previous_pointer(tmp_path):
    run = str(uuid.uuid4())
    dirs, members = store_run(tmp_path, run, 1.0)
    publication.restore(tmp_path, None)
    assert publication.published_manifest(tmp_path) is None
    first, _ = publication.publish(tmp_path, run, dirs, members)
    other = str(uuid.uuid4())
    publication.publish(tmp_path, other, *store_run(tmp_path, other, 2.0, as_of="2024-01-05"))
    publication.restore(tmp_path, first)
    assert publication.published_manifest(tmp_path) == first
