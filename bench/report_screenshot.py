"""Make docs/report-top.png: the first screen of the report on the bundled data, in headless Chromium.

Run from the repository root (needs Debian's chromium and chromium-driver, as the browser test):

    .venv/bin/python bench/report_screenshot.py                    # writes docs/report-top.png
    .venv/bin/python bench/report_screenshot.py --out top.png

The sleeves of the default registry run in-process on the bundled prices (no Ray), then the meta
stages with the default run config (risk parity, 252-day lookback, every 21 days) and the report,
as ``make run`` computes them. The page is shot at 1,400 x 1,000 px and stored as a 256-colour PNG.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests package (the browser helpers)


def build_bundled_report(output_dir: Path) -> Path:
    from quant_meta_assets import MetaContext, QuantSDK, StageRegistry
    from quant_meta_assets.benchmark import load_benchmark
    from quant_meta_assets.prices import load_prices
    from quant_meta_assets.sleeves.registry import load_registry
    from quant_meta_assets.sleeves.engine import run_sleeve

    prices = load_prices()
    profiles = load_registry()
    ctx = MetaContext(prices=prices, sleeve_profiles=profiles,
                      sleeve_results=[run_sleeve(p, prices) for p in profiles])
    ctx.extras["benchmark"] = load_benchmark()
    params = {"meta.optimize": {"method": "risk_parity", "lookback": 252, "rebalance_every": 21},
              "meta.report": {"output_dir": output_dir}}
    for stage in StageRegistry.meta_stages():
        QuantSDK.run_stage(stage.stage_id, ctx, **params.get(stage.stage_id, {}))
    return Path(ctx.report["html"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "report-top.png")
    args = parser.parse_args()
    from quant_meta_assets_tests.integration.test_report_browser import save_top_screenshot

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        html = build_bundled_report(Path(tmp) / "report")
        t1 = time.perf_counter()
        out = save_top_screenshot(html, args.out)
    print(f"report built in {t1 - t0:.1f} s, screenshot in {time.perf_counter() - t1:.1f} s: "
          f"{out} ({out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
