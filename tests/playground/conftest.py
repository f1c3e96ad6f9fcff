"""A real headless Chromium for the playground tests: Debian's ``chromium`` driven by the
``playwright`` Python package (no browser download). Every page a test opens fails the
test on any console error or uncaught exception; screenshots go to the artifacts folder
($COGKIT_TEST_ARTIFACTS, default test-artifacts/ in the checkout)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("COGKIT_TEST_ARTIFACTS") or REPO / "test-artifacts") / "playground"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("Chromium is not installed: run scripts/install-hub-tools.sh (apt-get install chromium); "
                "the playground's tests need a real browser")


# Per module, not per session: playwright's sync API keeps an asyncio loop running in this
# thread while it is open, and every later test calling asyncio.run() would fail.
@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]'")
    with sync_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        b = pw.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Console:
    """What a page wrote to its console: errors and uncaught exceptions fail the test.

    ``expect_http_status(422)`` allows exactly one of the browser's own "Failed to load
    resource: ... 422" lines: a test that sends the hub invalid input on purpose gets
    Replicate's 422, and Chromium notes every 4xx response in the console."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.expected: list[str] = []

    def watch(self, page) -> None:
        page.on("console", lambda m: self._error(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def _error(self, text: str) -> None:
        for want in self.expected:
            if want in text:
                self.expected.remove(want)
                return
        self.errors.append(text)

    def expect_http_status(self, status: int) -> None:
        self.expected.append(f"the server responded with a status of {status}")


@pytest.fixture
def open_page(browser):
    """``open_page(url, width=1280, height=900)`` -> a new page at ``url``, watched
    (``open_page.console`` is the watcher)."""
    console = Console()
    contexts = []

    def make(url: str, width: int = 1280, height: int = 900, context=None):
        if context is None:
            context = browser.new_context(viewport={"width": width, "height": height})
            contexts.append(context)
        context.set_default_timeout(60_000)
        page = context.new_page()
        console.watch(page)
        page.goto(url)
        return page

    make.console = console
    yield make
    for c in contexts:
        c.close()
    assert not console.errors, "the page logged errors:\n" + "\n".join(console.errors)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
