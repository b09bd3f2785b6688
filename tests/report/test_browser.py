"""The report in a real browser: headless Chromium (Debian's package) through Playwright's driver.

Every image must decode (``naturalWidth > 0``), the console must stay free of errors and
the page must fetch nothing but itself. A full-page screenshot is saved next to the run
(``<tmp>/multitask*/screenshot.png``) for a person to look at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pixcore.report import build_report

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, and nothing that talks to the network or to Google's services on its own.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_the_report_renders_in_chromium(multitask_run: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) for the browser "
                    "check (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra's playwright is not installed")
    page_file = build_report(multitask_run)
    screenshot = multitask_run / "screenshot.png"
    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
                    if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("requestfailed", lambda request: problems.append(f"failed request: {request.url}"))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(page_file.as_uri(), wait_until="load")
            images: list[dict[str, Any]] = page.eval_on_selector_all(
                "img", "all => all.map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth}))")
            headings = page.eval_on_selector_all("section h2", "all => all.map(h => h.textContent)")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert len(images) == len(list((multitask_run / "report").glob("*.png"))) > 10
    assert [i["alt"] for i in images if not (i["complete"] and i["width"] > 0)] == []
    assert headings[:3] == ["Summary", "Training curves", "Validation metrics over the steps"]
    # Only the page itself (its images are data: URIs, which are not requests of their own).
    assert [url for url in requests if not url.startswith("data:")] == [page_file.as_uri()]
    assert screenshot.stat().st_size > 10_000
