"""Incremental daily updates of the sleeves: a trading day costs a day (docs/incremental.md).

* ``prefix``: per-ticker hashes of a price panel and the append test (pure).
* ``resume``: a sleeve's resume state, the update of its new days and the plan that decides,
  per sleeve, between an update and a full recompute (pure; no dagster, no ray).
"""
