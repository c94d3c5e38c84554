"""Browser test fixtures: headless Chromium from Debian's `chromium` package driven by Playwright
(`executable_path`, never a downloaded browser) against a real `openft serve` process.

`browser` is one Chromium per test session; `page` is a fresh context (1280x800, its own
sessionStorage) per test; `signed_in(page, server)` opens the dashboard and signs in with the
server's admin key. Screenshots for docs/: set OPENFT_SCREENSHOTS=DIR and call `shot(page, name)`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    return None


@pytest.fixture(scope="session")
def browser():
    path = chromium_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's chromium is not installed (scripts/test.sh installs it as root)")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.js_errors = errors
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def dashboard_url(server) -> str:
    return server.base_url.removesuffix("/v1") + "/"


def signed_in(page, server, path: str = "/jobs", key: str | None = None):
    """Open the dashboard at #path and sign in through the form (as a person would)."""
    page.goto(dashboard_url(server) + f"#{path}")
    page.fill("#api-key", key or server.api_key)
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("nav.topnav")
    return page


def shot(page, name: str) -> None:
    """Save a full-page screenshot as DIR/NAME.png when OPENFT_SCREENSHOTS=DIR (for docs/)."""
    if folder := os.environ.get("OPENFT_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
