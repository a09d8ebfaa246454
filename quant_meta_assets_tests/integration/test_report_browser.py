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


# how many of the page's plots have drawn their SVG (a plot draws several `.main-svg`)
PLOTS_DRAWN_JS = ("return Array.prototype.filter.call(document.querySelectorAll('.js-plotly-plot'),"
                  " function (p) { return p.querySelector('.main-svg') !== null; }).length")


def wait_for_plots(driver, expected: int, timeout_s: float = 90) -> int:
    """Wait until ``expected`` plots have drawn (or the timeout); the number drawn."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and driver.execute_script(PLOTS_DRAWN_JS) < expected:
        time.sleep(0.25)
    return driver.execute_script(PLOTS_DRAWN_JS)


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
    assert_no_horizontal_scroll(driver)
    # the page opens with the book: the first section on screen is the decision layer, and the
    # reconciliation banner is not in the first screen
    first = driver.execute_script("return document.querySelector('main section').id")
    assert first == "decision"
    banner_top = driver.execute_script(
        "return document.getElementById('reconciliation-banner').getBoundingClientRect().top")
    assert banner_top > driver.execute_script("return window.innerHeight") * 3
    # the linear/log switch does not cover the growth chart's title
    assert not driver.execute_script(OVERLAP_JS, "fig-cumulative", ".updatemenu-container", ".gtitle")

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


def assert_no_horizontal_scroll(driver) -> None:
    """Neither the page nor the decision layer's summary table scrolls sideways at 1,400 px."""
    page = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert page[0] <= page[1], f"the page scrolls horizontally: {page}"
    table = driver.execute_script(
        "var t = document.getElementById('summary-table');"
        "return [t.scrollWidth, t.parentElement.clientWidth]")
    assert table[0] <= table[1], f"the summary table is wider than its section: {table}"


# do the bounding boxes of the first elements matching two selectors inside a plot overlap?
OVERLAP_JS = """
var plot = document.getElementById(arguments[0]);
var a = plot.querySelector(arguments[1]).getBoundingClientRect();
var b = plot.querySelector(arguments[2]).getBoundingClientRect();
return !(a.right <= b.left || b.right <= a.left || a.bottom <= b.top || b.bottom <= a.top);
"""


def save_top_screenshot(report_html: Path, out: Path, width: int = 1400, height: int = 1000) -> Path:
    """A PNG of the first screen of a report in headless Chromium, as a 256-colour palette image
    (docs/report-top.png: small enough to keep in the repository)."""
    import io as _io

    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--hide-scrollbars", f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        drv.get(Path(report_html).resolve().as_uri())
        n = drv.execute_script("return document.querySelectorAll('.plotly-graph-div').length")
        wait_for_plots(drv, n)
        png = drv.get_screenshot_as_png()
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)
    image = Image.open(_io.BytesIO(png)).convert("RGB").quantize(colors=256)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)
    return out


REPORT_CEILING_BYTES = 8 * 1024 * 1024  # issue 8: the report stays <= 8 MB at every book size


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_book_scale_report_size_and_render(driver, tmp_path: Path):
    # ~200 sleeves: the plots draw the meta, the benchmarks and the top-k sleeves only, the page
    # stays under the ceiling, renders every plot without a JS error, and the tables sort
    from selenium.webdriver.common.by import By

    from quant_meta_assets_tests.unit.report.book import make_book_inputs

    inputs = make_book_inputs(200, start="2015-01-01")
    report = build_report(**inputs, output_dir=tmp_path / "book", top_k=8)
    path = Path(report["html"])
    assert path.stat().st_size <= REPORT_CEILING_BYTES, f"report is {path.stat().st_size:,} bytes"
    html = path.read_text(encoding="utf-8")
    assert not re.search(r"<script\b[^>]*\bsrc=", html) and not re.search(r"<link\b", html)
    assert html.count("sleeve_0") >= 200 * 3  # every sleeve is in the tables

    driver.get(path.resolve().as_uri())
    expected = len(report["figures"])
    assert wait_for_plots(driver, expected) == expected
    assert len(driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == expected
    # the cumulative plot: meta, meta_standalone, equal_weight_meta, sp500 and the 8 sleeves
    n_traces = driver.execute_script("return document.getElementById('fig-cumulative').data.length")
    assert n_traces == 4 + 8
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, f"JavaScript errors in the report: {severe}"

    # the growth curves open on a log scale; the switch goes to linear and back to log
    y_type = "return document.getElementById('fig-cumulative').layout.yaxis.type"
    assert driver.execute_script(y_type) == "log"
    for position, wanted in ((0, "linear"), (1, "log")):
        driver.execute_script(
            "var b = document.querySelectorAll('#fig-cumulative .updatemenu-button');"
            "b[arguments[0]].dispatchEvent(new MouseEvent('click', {bubbles: true}));", position)
        deadline = time.time() + 10
        while time.time() < deadline and driver.execute_script(y_type) != wanted:
            time.sleep(0.1)
        assert driver.execute_script(y_type) == wanted

    assert_no_horizontal_scroll(driver)
    # sorting: the performance table by Sharpe, descending after two clicks
    table = driver.find_element(By.CSS_SELECTOR, "#performance table.sortable")
    header = [h for h in table.find_elements(By.CSS_SELECTOR, "thead th") if h.text.strip() == "Sharpe"][0]
    col = int(header.get_attribute("cellIndex"))
    header.click()
    header.click()
    values = driver.execute_script(
        "var t = arguments[0], c = arguments[1];"
        "return Array.prototype.map.call(t.tBodies[0].rows, function (r) {"
        " return parseFloat(r.cells[c].textContent.replace(/,/g, '')); });", table, col)
    assert len(values) == 200 + 4
    assert values == sorted(values, reverse=True)
