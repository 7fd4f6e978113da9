"""The web chat's page helpers, shared by its e2e tests (`test_webchat.py`,
`test_webchat_rooms.py`; their browser fixtures are conftest.py's): pages that fail a test on a
script error or a CSP violation, opening the chat with a key, and llmsim's answer to compare
the page's with."""

from collections.abc import Callable
from typing import Any

import httpx
from playwright.async_api import BrowserContext, Page, expect

from tests.e2e.browser import RECORD_STATUSES
from tests.e2e.helpers import eventually, stream_text
from tests.system import System

# The mid-answer screenshot goes to pytest's tmp dir; `make screenshot` names docs/webchat.png
# (for the README) here instead. A test run writes nothing into the source tree.
SCREENSHOT_ENV = "TOKENBUS_SCREENSHOT"
STREAM_WAIT_MS = 20_000


async def watched(context: BrowserContext, problems: list[tuple[str, str]]) -> Page:
    """A new page whose script errors and CSP violations go to `problems`."""
    page = await context.new_page()
    await page.add_init_script(RECORD_STATUSES)
    page.on("pageerror", lambda exc: problems.append((f"page error: {exc}", "")))
    page.on(
        "console",
        lambda msg: (
            problems.append((msg.text, msg.location["url"]))
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )
    return page


async def open_chat(page: Page, url: str, key: str = "any-key", *, fragment: str = "") -> None:
    """Open the chat at `url` (with `fragment`, e.g. `#room=...`) and enter `key`."""
    await page.goto(f"{url}/{fragment}")
    dialog = page.get_by_role("dialog", name="Your API key")
    await expect(dialog).to_be_visible()
    await dialog.get_by_label("API key").fill(key)
    await dialog.get_by_role("button", name="Continue").click()
    await expect(dialog).to_be_hidden()


async def ask(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    await box.fill(text)
    await box.press("Enter")


def last_answer(page: Page):  # type: ignore[no-untyped-def]
    return page.locator("article.assistant").last


async def shown_text(page: Page) -> str:
    return " ".join((await last_answer(page).locator(".answer").inner_text()).split())


async def direct(system: System, messages: list[dict[str, str]]) -> str:
    """llmsim's answer to `messages`, asked directly (its text is deterministic)."""
    text, _, _ = await stream_text(system.llmsim_url, messages, model="x")
    return text


async def words_shown(page: Page, condition: Callable[[int], bool]) -> None:
    """Wait until the number of words in the last answer satisfies `condition`."""

    async def holds() -> bool:
        return condition(len((await shown_text(page)).split()))

    await eventually(holds, within=STREAM_WAIT_MS / 1000)


async def saved_items(
    system: System, conv: str, count: int, key: str = "any-key"
) -> list[dict[str, Any]]:
    """The conversation's items, once it holds `count`: the gateway appends a turn just after
    its answer ends."""
    items: list[dict[str, Any]] = []

    async def holds() -> bool:
        nonlocal items
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(
                f"{system.gateway_url}/v1/conversations/{conv}/items",
                params={"order": "asc", "limit": 100},
                headers={"authorization": f"Bearer {key}"},
            )
        response.raise_for_status()
        items = response.json()["data"]
        return len(items) == count

    try:
        # Generous: the turn is kept once the cancelled answer ends, which under a full suite
        # on 2 cores has taken over 10 s.
        await eventually(holds, within=30)
    except TimeoutError:
        raise AssertionError(f"{len(items)} items, not {count}: {items}") from None
    return items
