"""The lineage core: what each meta output names, and the checks that refuse a mixed set."""

import pandas as pd
import pytest

from quant_meta_assets.errors import LineageError
from quant_meta_assets.publishing import lineage
from quant_meta_assets.publishing.snapshot import META_OUTPUTS


def _record(name, run="r1", data="d", prices="p1", as_of="2022-12-28", status="success"):
    return {"sleeve": name, "run_id": run, "data_hash": f"{data}{name}", "prices_hash": prices, "as_of": as_of,
            "status": status}


def _set(run="r2", sleeves=("a", "b")):
    """Four members of one lineage, each computed from the one before in ``run``."""
    returns = lineage.for_sleeves("meta/returns", run, [_record(n) for n in sleeves])
    optimize = lineage.derive("meta/optimize", run, {"meta/returns": returns})
    flatten = lineage.derive("meta/flatten", run, {"meta/optimize": optimize, "meta/returns": returns})
    report = lineage.derive("meta/report", run, {"meta/returns": returns, "meta/optimize": optimize,
                                                 "meta/flatten": flatten})
    return {"meta/returns": returns, "meta/optimize": optimize, "meta/flatten": flatten, "meta/report": report}


def test_sleeve_lineage_names_each_bundle_and_the_one_prices_snapshot():
    got = lineage.for_sleeves("meta/returns", "r2", [_record("a"), _record("b", run="r0")])
    assert got["sleeves"] == {"a": "r1/da", "b": "r0/db"}
    assert (got["prices_hash"], got["as_of"], got["run_id"], got["inputs"]) == ("p1", "2022-12-28", "r2", {})


def test_sleeves_on_two_prices_snapshots_are_refused_naming_both_groups():
    with pytest.raises(LineageError, match=r"different prices snapshots: prices p1 \(as of 2022-12-28\): a \| "
                                           r"prices p2 \(as of 2022-12-29\): b"):
        lineage.for_sleeves("meta/returns", "r2", [_record("a"), _record("b", prices="p2", as_of="2022-12-29")])


def test_a_failed_sleeve_or_one_without_a_recorded_run_is_refused_by_name():
    with pytest.raises(LineageError, match="b: boom"):
        lineage.for_sleeves("meta/returns", "r", [_record("a"), {**_record("b", status="error"), "error": "boom"}])
    with pytest.raises(LineageError, match=r"sleeve 'a': its stored bundle does not record \['run_id'\]"):
        lineage.for_sleeves("meta/returns", "r", [{**_record("a"), "run_id": None}])


def test_a_set_of_one_run_is_one_lineage():
    members = _set()
    lineage.check_set(members, META_OUTPUTS)
    assert members["meta/report"]["inputs"] == {k: "r2" for k in META_OUTPUTS[:-1]}


def test_a_member_from_another_run_is_refused_naming_the_runs():
    members = _set()
    members["meta/returns"] = _set(run="r9")["meta/returns"]  # same sleeves and prices, another run
    with pytest.raises(LineageError, match=r"meta/optimize \(run r2\) was computed from meta/returns of run r2, "
                                           r"not the meta/returns of run r9"):
        lineage.check_set(members, META_OUTPUTS)


def test_a_member_on_other_sleeves_is_refused_naming_the_sleeve():
    members = _set()
    members["meta/report"] = {**members["meta/report"], "sleeves": {"a": "r1/da", "b": "r7/xb"}}
    with pytest.raises(LineageError, match=r"b: r1/db vs r7/xb"):
        lineage.check_set(members, META_OUTPUTS)


def test_derive_refuses_inputs_that_disagree_or_carry_no_lineage():
    members = _set()
    other = {**members["meta/returns"], "prices_hash": "p2"}
    with pytest.raises(LineageError, match="meta/optimize used prices p1 .* meta/returns prices p2"):
        lineage.derive("meta/flatten", "r", {"meta/optimize": members["meta/optimize"], "meta/returns": other})
    with pytest.raises(LineageError, match="carry no lineage"):
        lineage.derive("meta/optimize", "r", {"meta/returns": None})


@pytest.mark.parametrize(
    ("current", "prices", "message"),
    [
        ({"a": "r1/da", "b": "r1/db"}, "p2", "the current prices are p2"),
        ({"a": "r1/da", "b": "r5/db"}, "p1", "b: used r1/db, current r5/db"),
        ({"a": "r1/da", "b": "r1/db", "c": "r1/dc"}, "p1", "registered sleeves it does not include: c"),
        ({"a": "r1/da"}, "p1", "sleeves no longer registered: b"),
    ],
)
def test_check_current_names_what_changed_since(current, prices, message):
    returns = _set()["meta/returns"]
    lineage.check_current(returns, "meta/returns", {"a": "r1/da", "b": "r1/db"}, "p1")
    with pytest.raises(LineageError, match=message):
        lineage.check_current(returns, "meta/returns", current, prices)


def test_lineage_travels_with_a_frame_or_a_mapping_and_is_removed_on_detach():
    frame = lineage.attach(pd.DataFrame({"x": [1.0]}), {"run_id": "r"})
    assert lineage.detach(frame) == {"run_id": "r"} and "lineage" not in frame.attrs
    value = lineage.attach({"weights": 1}, {"run_id": "r"})
    assert lineage.detach(value) == {"run_id": "r"} and lineage.detach(pd.Series(dtype=float)) is None
    with pytest.raises(TypeError, match="cannot attach a lineage to a list"):
        lineage.attach([1], {})


def test_the_digest_does_not_depend_on_order_and_long_lists_are_cut():
    assert lineage.digest({"a": "1", "b": "2"}) == lineage.digest({"b": "2", "a": "1"})
    with pytest.raises(LineageError, match=r"\(and 5 more\)"):
        lineage.check_current(_set()["meta/returns"], "x", {f"s{i}": "r/x" for i in range(15)} | {"a": "r1/da", "b": "r1/db"}, "p1")
