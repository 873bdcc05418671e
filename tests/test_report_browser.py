"""The report's rule cards in a real headless browser (Debian's chromium through Selenium): a card's
points ("15/15", "125/125", "62.5/125") stay on one line beside the title, on a laptop and on a phone.

Skips with the reason when no browser can be driven (apt-get install -y chromium chromium-driver).
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]

# Per card: the points' text, how many line boxes it takes, and whether it overlaps the title or leaves the card.
CARD_HEADERS = """
Array.from(document.querySelectorAll('.card h3')).map(h3 => {
  const pts = h3.lastElementChild, title = h3.firstElementChild, card = h3.closest('.card');
  const range = document.createRange(); range.selectNodeContents(pts);
  const lines = new Set(Array.from(range.getClientRects()).map(r => Math.round(r.top))).size;
  const p = pts.getBoundingClientRect(), t = title.getBoundingClientRect(), c = card.getBoundingClientRect();
  return {text: pts.textContent, lines: lines, overlaps: t.right > p.left + 0.5 && t.bottom > p.top + 0.5,
          outside: p.right > c.right + 0.5};
})
"""


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        pytest.skip(f"no chromium/chromedriver at {CHROMIUM}: apt-get install -y chromium chromium-driver")
    if not importlib.util.find_spec("selenium"):
        pytest.skip("selenium is not installed (pip install selenium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    handle = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield handle
    finally:
        handle.quit()


@pytest.fixture(scope="module")
def reports(graded) -> list[Path]:
    """Reports with every kind of card: all passed, a failed rule, errors (points 0/125), partial credit."""
    names = ("base", "fill_in_unit_range", "syntax_error", "dead_drive_path")
    graded.submit(*names)
    return [graded.root / "out" / name / "report.html" for name in names if graded[name][1]]


@pytest.mark.parametrize("width", [1300, 420])
def test_a_cards_points_never_wrap(driver, reports, width, tmp_path):
    driver.set_window_size(width, 900)
    for report in reports:
        driver.get(report.as_uri())
        headers = driver.execute_script("return " + CARD_HEADERS.strip())
        assert headers, report
        driver.save_screenshot(str(tmp_path / f"{report.parent.name}.png"))
        for header in headers:
            assert header["lines"] == 1, (f"{header['text']!r} wraps at {width} px in {report.parent.name}", tmp_path)
            assert not header["overlaps"] and not header["outside"], (header, width, report.parent.name)
