"""Benchmark of chunked bundle storage: a full write vs appending one day, a full read vs a read
of the last 30 days (a script, not a test).

Run from the repository root:

    .venv/bin/python bench/bench_storage.py                       # 500 tickers x 2,520 days
    .venv/bin/python bench/bench_storage.py --tickers 100 --days 1260

Data: ``synthetic_book.factor_prices`` as a sleeve's weights-shaped frame (float64, one row per
business day from 2010). The previous bundle holds every day but the last; the append stages a
bundle with the last day, encoded as a worker sends it (``storage.stage_appended_bundle``), and
commits it. Bytes written count
the files a write created (a hard-linked chunk is not written again). Times are the best of
``--repeat`` runs in a temporary directory. The last line is the same frame stored as one file
(how bundles were stored before chunking): a full read of many chunks pays each file's footer
(about 200 KB for 500 columns).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from quant_meta_assets.storage import (
    StoredBundle,
    commit_bundle,
    encode_chunked,
    encode_frame,
    read_bundle,
    stage_appended_bundle,
    stage_bundle,
    write_bundle,
)
from quant_meta_assets.synthetic_book import factor_prices


def _written(directory: Path, before: Path | None = None) -> int:
    """Bytes of the files in ``directory`` that are not links to a file of ``before``."""
    shared = {os.stat(p).st_ino for p in before.iterdir()} if before is not None else set()
    return sum(p.stat().st_size for p in directory.iterdir() if p.stat().st_ino not in shared)


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--days", type=int, default=2520)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    frame = factor_prices(args.tickers, args.days)
    old, new = frame.iloc[:-1], frame.iloc[-1:]
    since = frame.index[-30]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        full_s = _best(lambda: write_bundle(root / "full", {"weights": frame}, {}), args.repeat)
        full_bytes = _written(root / "full")
        write_bundle(root / "prev", {"weights": old}, {})
        encoded = encode_chunked(new)  # as a sleeve update's worker sends its new rows
        append_s = _best(lambda: commit_bundle(stage_appended_bundle(root / "next", root / "prev",
                                                                     {"weights": encoded}, {}, {})), args.repeat)
        append_bytes = _written(root / "next", root / "prev")
        assert read_bundle(root / "next")[0]["weights"].equals(read_bundle(root / "full")[0]["weights"])
        read_s = _best(lambda: read_bundle(root / "full"), args.repeat)
        since_s = _best(lambda: StoredBundle(root / "full").frame("weights", since=since), args.repeat)
        n_chunks = sum(1 for p in (root / "full").iterdir() if p.suffix == ".parquet")
        # the baseline: the same frame as one file (how bundles were stored before chunking)
        one_s = _best(lambda: commit_bundle(stage_bundle(root / "one", {"weights": encode_frame(frame)}, {})),
                      args.repeat)
        one_read_s = _best(lambda: read_bundle(root / "one"), args.repeat)
    print(f"{args.tickers} tickers x {args.days} days, {n_chunks} chunks (history, last year), pandas {pd.__version__}")
    print(f"full write        {full_s:8.3f} s  {full_bytes / 1e6:8.2f} MB written")
    print(f"append 1 day      {append_s:8.3f} s  {append_bytes / 1e6:8.2f} MB written")
    print(f"full read         {read_s:8.3f} s")
    print(f"read last 30 days {since_s:8.3f} s")
    print(f"one file: write   {one_s:8.3f} s (encoding included), read {one_read_s:.3f} s")


if __name__ == "__main__":
    main()
