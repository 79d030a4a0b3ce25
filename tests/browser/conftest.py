"""Debian's Chromium, headless, driven by Playwright against a real uvicorn server.

Playwright's Python wheel bundles its driver; the browser is the system's Chromium
(`apt-get install chromium`), never a download. Outside CI the tests skip with the reason
when Playwright or Chromium is missing; with CI=true that is a failure. Screenshots of
each state go to tests/artifacts/screenshots/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from tests.conftest import REPO_ROOT
from tests.e2e.conftest import SHIPPED_MODELS, LiveServer, start_server, stop_server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = REPO_ROOT / "tests" / "artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
TIMEOUT_MS = 15_000  # generous: a loaded CI machine can be slow
DIGIT_MODEL = "mnist-mlp"
_taken: list[Path] = []


def unavailable(reason: str) -> NoReturn:
    """Skip, or fail under CI=true, where the browser tests must run."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed: .venv/bin/pip install -e '.[dev]'")
    if not CHROMIUM.exists():
        unavailable(f"Chromium not found at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="package")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The shipped models behind a real server: the tests need a trained digit model."""
    if not (SHIPPED_MODELS / DIGIT_MODEL).is_dir():
        unavailable(f"the shipped digit model is missing: {SHIPPED_MODELS / DIGIT_MODEL}")
    folder = tmp_path_factory.mktemp("ui-server")
    # Conversions at load (a shipped model exported without model.tflite) stay in the test.
    cache = str(folder / "runtime-cache")
    server = start_server(
        SHIPPED_MODELS, folder / "server.log", VISION_SERVING_RUNTIME_CACHE_DIR=cache
    )
    yield server
    stop_server(server)


def watch(page: Page) -> list[str]:
    """Collect the page's script errors (failed loads are checked by the tests)."""
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error" and "Failed to load resource" not in message.text
            else None
        ),
    )
    page.set_default_timeout(TIMEOUT_MS)
    return problems


def load(page: Page, server: LiveServer, model: str = DIGIT_MODEL) -> None:
    """Open the page on `model` (the page's `#model=` link; without one it shows the first
    model in name order, which is not the digit model these tests were written for)."""
    page.goto(f"{server.url}/#model={model}")
    page.wait_for_selector("#card dl.facts", state="attached")  # a model's card is shown


@pytest.fixture(scope="package")
def desktop(browser: Browser) -> Iterator[BrowserContext]:
    """One desktop-sized browser context for the package; each test opens its own tab."""
    context = browser.new_context(viewport=DESKTOP)
    yield context
    context.close()


@pytest.fixture
def page(desktop: BrowserContext, ui_server: LiveServer) -> Iterator[Page]:
    """A fresh tab on the page; the test fails on any script error."""
    tab = desktop.new_page()
    problems = watch(tab)
    load(tab, ui_server)
    yield tab
    tab.close()
    assert not problems, problems


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot for review and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    _taken.append(path)
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _taken:
        terminalreporter.write_line(f"browser screenshots ({len(_taken)}): {SCREENSHOTS}")
