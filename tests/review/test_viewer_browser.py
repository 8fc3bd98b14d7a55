"""The web viewer in a real headless Chromium, opened from disk with no network."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsi_seg.review import ClassList, ExportOptions, export_review
from wsi_seg.synth import BIOPSY_CLASSES, synthesize_slide

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason="chromium and chromium-driver are not installed (bash .ci/run installs them)")

HOSTILE_SLIDE = "<img src=x onerror=alert(1)>"
HOSTILE_CLASS = "</script><script>alert(1)</script>"


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="wsi-seg-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,800", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _open(driver, page: Path) -> None:
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(page.as_uri())
    _wait_loaded(driver, version=0)


def _wait_loaded(driver, version: int) -> None:
    WebDriverWait(driver, 60, poll_frequency=0.1).until(lambda d: d.execute_script(
        "var w = window.wsiReview && wsiReview.viewer.world;"
        "return !!w && document.body.dataset.maskVersion === arguments[0] && w.getItemCount() === 2"
        " && w.getItemAt(0).getFullyLoaded() && w.getItemAt(1).getFullyLoaded();", str(version)))


def _viewer_pixels(driver) -> np.ndarray:
    png = driver.find_element("id", "viewer").screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels whose colour differs clearly between two screenshots."""
    return float((np.abs(a - b).sum(axis=2) > 30).mean())


def _errors(driver) -> list:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_viewer_loads_toggles_and_fades(browser, review, tmp_path):
    _open(browser, review.review_dir / "index.html")
    assert browser.execute_script("return document.body.dataset.tileErrors") is None
    assert _errors(browser) == []
    assert browser.find_element("id", "slide-name").text == "biopsy.svs"
    before = _viewer_pixels(browser)
    Image.fromarray(before.astype(np.uint8)).save(tmp_path / "viewer.png")

    browser.find_element("id", "class-2").click()  # hide malignant epithelium (red)
    _wait_loaded(browser, version=1)
    hidden = _viewer_pixels(browser)
    Image.fromarray(hidden.astype(np.uint8)).save(tmp_path / "viewer-malignant-hidden.png")
    assert _changed(hidden, before) > 0.02
    red = np.array(BIOPSY_CLASSES[2][1])
    assert np.abs(hidden - red).sum(axis=2).mean() > np.abs(before - red).sum(axis=2).mean()

    browser.execute_script(
        "var s = document.getElementById('opacity'); s.value = 0; s.dispatchEvent(new Event('input'));")
    assert browser.execute_script("return wsiReview.viewer.world.getItemAt(1).getOpacity()") == 0
    WebDriverWait(browser, 30, poll_frequency=0.1).until(lambda d: _changed(_viewer_pixels(d), hidden) > 0.02)
    Image.fromarray(_viewer_pixels(browser).astype(np.uint8)).save(tmp_path / "viewer-transparent.png")
    assert browser.find_element("id", "opacity-value").text == "0%"
    assert _errors(browser) == []


def test_hostile_names_run_no_script(browser, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    slide, mask = synthesize_slide(folder, HOSTILE_SLIDE, width=1024, height=768, mpp=0.5, seed=2)
    names = [name for name, _ in BIOPSY_CLASSES]
    names[2] = HOSTILE_CLASS
    classes = ClassList(tuple(names), tuple(colour for _, colour in BIOPSY_CLASSES))
    result = export_review(slide, mask, folder / "review", classes=classes, options=ExportOptions())
    _open(browser, result.review_dir / "index.html")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    assert browser.find_element("id", "slide-name").text == f"{HOSTILE_SLIDE}.svs"
    assert browser.find_element("css selector", "label[for=class-2]").text == HOSTILE_CLASS
    assert browser.execute_script("return document.querySelectorAll('img[src=x], script:not([src])').length") == 1
    assert browser.execute_script("return wsiReview.data.classes[2].name") == HOSTILE_CLASS
    assert _errors(browser) == []
