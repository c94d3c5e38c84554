"""Browser test fixtures: headless Chromium from Debian's `chromium` package driven by Playwright
(`executable_path`, never a downloaded browser) against a real `openft serve` process.

`browser` is one Chromium per test session; `page` is a fresh context (1280x800, its own
sessionStorage) per test, which fails the test on a JavaScript error or a Content-Security-Policy
violation reported on the console. Signing in, dropping files and screenshots: tests/support/web.py.
"""

from __future__ import annotations

import os
import re
import shutil

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


_FUNCTION = re.compile(r"^\s*(async\s+)?(function\b|\(|[A-Za-z_$][\w$]*\s*=>)")


def _as_function(wait_for_function):
    """Playwright runs a wait_for_function *expression* through eval() in the page, which the
    dashboard's Content-Security-Policy forbids (no 'unsafe-eval'); a function it compiles over
    the protocol instead. So `"a === b"` is passed on as `"() => (a === b)"`."""
    def wait(expression: str, *args, **kwargs):
        if not _FUNCTION.match(expression):
            expression = f"() => ({expression})"
        return wait_for_function(expression, *args, **kwargs)
    return wait


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.js_errors = errors
    pg.wait_for_function = _as_function(pg.wait_for_function)
    violations: list[str] = []  # the dashboard must work under its Content-Security-Policy
    pg.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    pg.csp_violations = violations
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not violations, f"Content-Security-Policy violations on the page: {violations}"
