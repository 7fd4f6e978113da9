"""E2E fixtures: a tokenbus started as real processes on the session's broker, and headless
Chromium for the web chat's tests."""

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page

from tests.capabilities import CHROMIUM, missing_capability
from tests.e2e.browser import chromium, chromium_path
from tests.e2e.webchat import SCREENSHOT_ENV, watched
from tests.system import System, running_system


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    """One worker; llmsim paced so that 50 streams take long enough to overlap visibly."""
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="e",
        llmsim_env={"TOKENBUS_LLMSIM_TTFT_MS": "20", "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "100"},
    ) as sys_:
        yield sys_


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_path()
    if executable is None:
        asked = f"{SCREENSHOT_ENV} is set" if os.environ.get(SCREENSHOT_ENV) else None
        missing_capability(*CHROMIUM, required_by=asked)  # a skip, or a failure under CI=true
    async with chromium(executable) as browser:
        yield browser


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context(viewport={"width": 1100, "height": 760})
    yield ctx
    await ctx.close()


@pytest.fixture
def problems() -> list[tuple[str, str]]:
    """(what, where) of script errors and Content-Security-Policy violations on the page."""
    return []


@pytest.fixture
async def page(context: BrowserContext, problems: list[tuple[str, str]]) -> AsyncIterator[Page]:
    """A page that fails the test on a script error or a CSP violation."""
    yield await watched(context, problems)
    assert problems == []
