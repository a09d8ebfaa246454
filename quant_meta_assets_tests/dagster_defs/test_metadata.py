"""dagster_defs/metadata: numbers in the UI read with their units."""

from __future__ import annotations

import math
from pathlib import Path

import dagster as dg
import pandas as pd

from quant_meta_assets.dagster_defs import metadata as md


def test_units() -> None:
    assert md.fmt(0.14025080052497607, "pct") == "14.03%"
    assert md.fmt(0.9612, "ratio") == "0.96"
    assert md.fmt(52.91, "bps") == "52.9 bps/yr"
    assert md.fmt(11.2014, "turnover") == "11.20× per year"
    assert md.fmt(9.95e-14, "sci") == "9.95e-14"
    assert md.fmt(101.89950082791655, "growth") == "+10,189.95% (×102.90)"
    assert md.fmt(-0.25, "growth") == "-25.00% (×0.75)"
    assert md.fmt(math.nan, "pct") == "n/a"


def test_typed_values() -> None:
    runtime = md.seconds(0.07525764099955268)
    assert isinstance(runtime, dg.FloatMetadataValue) and runtime.value == 0.08
    assert isinstance(md.total_return(1.5), dg.TextMetadataValue) and md.total_return(1.5).value == "+150.00% (×2.50)"
    link = md.report_link("reports/x/report.html")
    assert isinstance(link, dg.UrlMetadataValue)
    assert link.value == Path("reports/x/report.html").resolve().as_uri() and link.value.startswith("file:///")


def test_headline_table_labels_every_unit() -> None:
    table = md.headline({"meta_cagr": 0.1403, "meta_sharpe": 0.955, "meta_max_drawdown": -0.3687,
                         "crossing_savings_bps": 52.9, "book_turnover": 11.2, "max_reconciliation_diff": 9.95e-14,
                         "meta_beta": 0.61, "meta_tracking_error": 0.12})
    assert isinstance(table, dg.MarkdownMetadataValue)
    text = table.value
    for row in ("| CAGR | 14.03% |", "| max drawdown | -36.87% |", "| crossing savings | 52.9 bps/yr |",
                "| book turnover | 11.20× per year |", "| largest reconciliation difference | 9.95e-14 |",
                "| beta to the benchmark | 0.61 |", "| tracking error (annual) | 12.00% |"):
        assert row in text, row


def test_weights_table_in_percent() -> None:
    text = md.weights_table(pd.Series({"a": 0.6, "b": 0.4}, name="2022-12-28")).value
    assert "60.00%" in text and "40.00%" in text and "weight (%)" in text


def test_a_sleeve_with_delistings_shows_them_as_metadata() -> None:
    """A success record whose positions were closed at delisting gets a ``delistings`` entry; a
    record without any gets none."""
    from quant_meta_assets.dagster_defs.sleeves import _sleeve_metadata
    from quant_meta_assets.sleeves.registry import SleeveProfile

    closed = [{"ticker": "T0002", "last_price_date": "2011-10-18", "weight": 0.0833},
              {"ticker": "T0005", "last_price_date": "2010-12-20", "weight": 0.1}]
    assert md.delistings(closed).value == ("T0002 2011-10-18 (8.33% of the sleeve); "
                                           "T0005 2010-12-20 (10.00% of the sleeve)")
    record = {"status": "success", "runtime_s": 0.1, "start": "2010-01-05", "end": "2012-04-20", "n_days": 600,
              "total_return": 0.2, "data_hash": "h", "delistings": closed}
    profile = SleeveProfile(name="ew", strategy="equal_weight")
    metadata = _sleeve_metadata(record, profile, "p")
    assert metadata["delistings"].value.startswith("T0002 2011-10-18")
    assert "delistings" not in _sleeve_metadata({**record, "delistings": []}, profile, "p")
