"""The admin console in headless Chromium: Debian's /usr/bin/chromium driven by Playwright.

Reuses the e2e stack (`live_api`: chalice local + event runner + DynamoDB Local). Never runs
`playwright install`: the browser is Debian's package (`python -m devtools.ensure_browser`).
A missing browser fails the tests, it does not skip them.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.ensure_browser import CHROMIUM, INSTALL, chromium_path
from tests.e2e import conftest as e2e
from tests.e2e.conftest import LiveApi

live_api = e2e.live_api  # the e2e stack's fixture, shared with these tests
live_runner = e2e.live_runner  # and its event runner, running while a module of these tests does

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000
SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


def save_failure_screenshot(page: Any, nodeid: str, directory: Path = SCREENSHOTS) -> Path:
    """A full-page screenshot named after the test (`build/screenshots/<test>.png`), kept for CI."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / (re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:180] + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        pytest.fail(
            f"{CHROMIUM} is missing: run `.venv/bin/python -m devtools.ensure_browser` (as root) or `{INSTALL}`",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: `.venv/bin/pip install -r requirements-dev.txt`", pytrace=False)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(path), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, live_api: LiveApi, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (own sessionStorage) per test; uncaught script errors fail the test;
    a failed test leaves a screenshot in build/screenshots/."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = browser.new_context(base_url=live_api.url, locale="zh-CN", viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"uncaught: {exc}"))
    page.on(
        "console",
        lambda msg: problems.append(f"console: {msg.text}") if "Content Security Policy" in msg.text else None,
    )
    try:
        yield page
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(f"screenshot of the failure: {save_failure_screenshot(page, request.node.nodeid)}")
    finally:
        context.close()
    assert not problems, problems


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
