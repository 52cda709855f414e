"""A real browser for the web tests: `clafed serve`'s app on a loopback port (uvicorn in a thread)
and Debian's Chromium driven by Playwright (it cannot download its own browsers here).

Without Chromium or Playwright the browser tests are skipped, except where CLAFED_REQUIRE_BROWSER
is set (CI installs Chromium, so there a missing browser fails instead of passing silently).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn

SCREENSHOTS_ENV = "CLAFED_SCREENSHOTS"  # a folder: the tests also save their screenshots there (docs/)


def chromium_path() -> str:
    path = os.environ.get("CLAFED_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        import playwright  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        if os.environ.get("CLAFED_REQUIRE_BROWSER"):
            pytest.fail("the browser tests need Chromium (apt-get install chromium) and Playwright (the test extra)")
        pytest.skip("no Chromium or Playwright here (apt-get install chromium; pip install -e '.[test]')")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def live_server(app):
    """Serve `app` on 127.0.0.1 until the block ends; yields its base address."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def browser_page():
    """A fresh headless Chromium page (1400 px wide)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
            yield page
        finally:
            browser.close()


def wait_until(page, expression: str, timeout: float = 30.0):
    """Poll `expression` in the page until it is truthy; its value. (Playwright's wait_for_function
    evaluates strings in a way the pages' Content-Security-Policy forbids.)"""
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout:.0f} s: {expression}")
        time.sleep(0.2)


def screenshot(page, tmp_path: Path, name: str) -> Path:
    """A full-page screenshot in the test's folder, and in $CLAFED_SCREENSHOTS when set."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get(SCREENSHOTS_ENV):
        target = Path(os.environ[SCREENSHOTS_ENV])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)
    return path
