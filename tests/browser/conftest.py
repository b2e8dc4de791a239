"""Fixtures for the browser tests: Debian's chromium driven by Playwright (sync API), one context
(cookie jar) per test, screenshots into $TINYSAGA_TEST_ARTIFACTS."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
            "(`apt-get install -y chromium`; `./tiny-saga test` installs it)",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Shots:
    """Screenshots into the suite's artifacts folder; `publish` also copies one to docs/screenshots
    when TINYSAGA_UPDATE_SCREENSHOTS=1 (so a normal test run leaves the tree alone)."""

    def __init__(self) -> None:
        self.dir = Path(os.environ.get("TINYSAGA_TEST_ARTIFACTS", "test-artifacts"))
        self.dir.mkdir(parents=True, exist_ok=True)

    def take(self, page, name: str, *, full_page: bool = True, publish_as: str | None = None) -> Path:
        path = self.dir / f"browser-{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        if publish_as and os.environ.get("TINYSAGA_UPDATE_SCREENSHOTS") == "1":
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_SCREENSHOTS / publish_as)
        return path


@pytest.fixture(scope="session")
def shots() -> Shots:
    return Shots()


@pytest.fixture
def new_context(browser, gateway: str):
    """Make browser contexts (each its own cookies); all are closed after the test. Uncaught
    JavaScript errors on any page fail the test."""
    made = []
    errors: list[str] = []

    def make(width: int = 1280, height: int = 900):
        ctx = browser.new_context(base_url=gateway, viewport={"width": width, "height": height}, locale="en-US")
        ctx.set_default_timeout(20_000)
        ctx.on("page", lambda p: p.on("pageerror", lambda e: errors.append(f"{p.url}: {e}")))
        made.append(ctx)
        return ctx

    yield make
    for ctx in made:
        ctx.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


@pytest.fixture
def page(new_context):
    return new_context().new_page()
