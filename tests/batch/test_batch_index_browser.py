"""The class index page in a real headless browser (Debian's chromium): opens from disk, sorts, links resolve.

Driven by Selenium with Debian's chromedriver, or by Playwright pointed at /usr/bin/chromium (never a
browser that downloads itself). Installs Selenium from PyPI when neither client is there; skips with
the reason when no browser can be driven.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from batch_helpers import GradedClass

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


class Page:
    """The few things the test does, over either client."""

    def __init__(self, kind: str, handle: Any):
        self.kind, self.handle = kind, handle

    def open(self, url: str) -> None:
        self.handle.get(url) if self.kind == "selenium" else self.handle.goto(url)

    def js(self, script: str) -> Any:
        if self.kind == "selenium":
            return self.handle.execute_script(f"return {script}")
        return self.handle.evaluate(f"() => {script}")

    def size(self, width: int, height: int) -> None:
        if self.kind == "selenium":
            self.handle.set_window_size(width, height)
        else:
            self.handle.set_viewport_size({"width": width, "height": height})

    def screenshot(self, path: Path) -> None:
        if self.kind == "selenium":
            self.handle.save_screenshot(str(path))
        else:
            self.handle.screenshot(path=str(path), full_page=True)

    def click(self, css: str) -> None:
        if self.kind == "selenium":
            from selenium.webdriver.common.by import By

            self.handle.find_element(By.CSS_SELECTOR, css).click()
        else:
            self.handle.click(css)


def _ensure_selenium() -> str | None:
    if importlib.util.find_spec("selenium") or importlib.util.find_spec("playwright"):
        return None
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "selenium"], capture_output=True, text=True, timeout=300
    )
    importlib.invalidate_caches()
    return None if r.returncode == 0 else f"selenium could not be installed: {r.stderr.strip()[-300:]}"


@pytest.fixture(scope="module")
def page() -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install -y chromium chromium-driver")
    problem = _ensure_selenium()
    if problem:
        pytest.skip(problem)
    if importlib.util.find_spec("selenium") and Path(CHROMEDRIVER).exists():
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield Page("selenium", driver)
        finally:
            driver.quit()
        return
    if importlib.util.find_spec("playwright"):
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                yield Page("playwright", browser.new_page())
            finally:
                browser.close()
        return
    pytest.skip(f"selenium needs chromedriver at {CHROMEDRIVER} (apt-get install chromium-driver); no playwright")


def _order(page: Page) -> list[str]:
    return page.js("Array.from(document.querySelectorAll('#students tbody tr')).map(r => r.dataset.student)")


def _scores(page: Page) -> list[float]:
    return page.js(
        "Array.from(document.querySelectorAll('#students tbody tr td.score')).map(td => parseFloat(td.dataset.v))"
    )


def test_index_sorts_and_links_resolve(page: Page, graded_class: GradedClass) -> None:
    index = graded_class.out / "index.html"
    page.open(index.as_uri())
    assert page.js("document.title").startswith("Class results")
    original = _order(page)
    assert sorted(original) == ["bomb", "broken", "good", "hanging", "maxpool"]
    score_header = "#students thead th:nth-child(3) button"
    page.click(score_header)
    ascending = _scores(page)
    assert ascending == sorted(ascending) and ascending[0] < ascending[-1]
    assert page.js("document.querySelector('#students thead th:nth-child(3)').getAttribute('aria-sort')") == "ascending"
    page.click(score_header)
    assert _scores(page) == sorted(ascending, reverse=True)
    assert _order(page)[0] in ("good", "maxpool")
    page.click("#students thead th:nth-child(1) button")  # by name
    assert _order(page) == sorted(original)
    assert page.js("document.querySelectorAll('#histogram rect').length") == 10

    links = page.js("Array.from(document.querySelectorAll('a[href$=\"report.html\"]')).map(a => a.href)")
    assert len(links) >= 5
    for href in links:
        path = Path(unquote(urlparse(href).path))
        assert path.is_file(), href
    page.open(links[0])
    assert "s6-grader" in page.js("document.title")


OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


@pytest.mark.parametrize("width", [1300, 420])
def test_index_and_report_fit_the_screen(page: Page, graded_class: GradedClass, width: int, tmp_path_factory) -> None:
    """No horizontal page scroll on a laptop or a phone; on a laptop the class table fits without its own scroll."""
    shots = tmp_path_factory.mktemp(f"shots{width}")
    page.size(width, 900)
    page.open((graded_class.out / "index.html").as_uri())
    page.screenshot(shots / "index.png")
    assert page.js(OVERFLOW) <= 0, f"the class index scrolls sideways at {width} px ({shots})"
    if width >= 1300:
        table = "document.querySelector('#students')"
        assert page.js(f"{table}.scrollWidth - {table}.parentElement.clientWidth") <= 0, (
            f"the class table needs its own scroll at {width} px"
        )
    for student in ("good", "maxpool", "broken"):
        page.open((graded_class.out / student / "report.html").as_uri())
        page.screenshot(shots / f"{student}.png")
        assert page.js(OVERFLOW) <= 0, f"{student}'s report scrolls sideways at {width} px ({shots})"
