"""The HTML report renders in headless Debian Chromium: no severe console errors, every plot
present, and a screenshot that is not blank. Chromium/chromedriver come from the Debian packages
``chromium`` and ``chromium-driver``; Selenium Manager is never used (explicit Service/binary).
Skipped only when the browser is absent AND ``CI`` is unset; under CI a missing browser fails.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from quant_meta_assets.report import build_report
from quant_meta_assets_tests.unit.report.toy import make_report_inputs

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOT_DIR_ENV = "REPORT_SCREENSHOT_DIR"  # optional: keep the PNG for a human to look at

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
    if not missing:
        return
    reason = f"{missing} not installed (Debian packages chromium, chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


@pytest.fixture()
def driver():
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    drv.set_page_load_timeout(60)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_report_renders_in_chromium(driver, tmp_path: Path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    inputs = make_report_inputs()
    first = build_report(**inputs, output_dir=tmp_path / "first")
    inputs["previous"] = first["summary"]
    report = build_report(**inputs, output_dir=tmp_path / "report")
    html = Path(report["html"]).read_text(encoding="utf-8")
    # offline: plotly.js inlined exactly once, no external script/stylesheet
    assert not re.search(r"<script\b[^>]*\bsrc=", html) and not re.search(r"<link\b", html)
    assert html.count("* plotly.js v") == 1
    assert html.count("Plotly.newPlot") == len(report["figures"])

    driver.get(Path(report["html"]).resolve().as_uri())
    deadline = time.time() + 60
    expected = len(report["figures"])
    while time.time() < deadline:
        rendered = driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")
        if len(rendered) >= expected:
            break
        time.sleep(0.25)
    assert len(driver.find_elements(By.CSS_SELECTOR, ".plotly-graph-div")) == expected
    assert len(driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == expected
    assert len(driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot .main-svg")) >= expected
    assert driver.execute_script("return typeof Plotly") == "object"

    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, f"JavaScript errors in the report: {severe}"

    png = driver.get_screenshot_as_png()
    outdir = os.environ.get(SCREENSHOT_DIR_ENV)
    if outdir:
        Path(outdir).mkdir(parents=True, exist_ok=True)
        (Path(outdir) / "report.png").write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    pixels = np.asarray(image, dtype=float)
    assert image.size[0] >= 1000 and image.size[1] >= 700
    assert pixels.std() > 20, "screenshot looks blank (no pixel variance)"
    assert len(image.getcolors(maxcolors=1 << 20) or []) > 200, "screenshot has too few colours"
