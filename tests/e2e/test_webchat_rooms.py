"""Rooms in the web chat (docs/rooms.md), in real browsers: two people, each in a Chromium
context of their own, in one room. One makes the room, the other opens its link; both see who
is there, who is typing and who said what, and the same answer streams in on both pages.

llmsim's text is deterministic: the answer on the pages is compared with a direct call to
llmsim for the room's history as the AI sees it (each member's message a user message
"<name>: <text>", each earlier answer an assistant message)."""

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, WebSocketRoute, expect

from tests.e2e.helpers import eventually, llmsim_stats
from tests.e2e.room_client import Member
from tests.e2e.webchat import (
    STREAM_WAIT_MS,
    ask,
    direct,
    last_answer,
    open_chat,
    saved_items,
    shown_text,
    watched,
    words_shown,
)
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

ANSWER_TOKENS = 90  # llmsim's answer length when the request names none (the page never does)
LARGE = {"llmsim-large": {"ttft_ms": 600, "tokens_per_second": 30}}  # slow: time to Stop it
TYPING_TTL_S = 5  # docs/rooms.md: a typing frame's ttl_s
ROOM_URL = re.compile(r"#room=(conv_[A-Za-z0-9_-]+)$")


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="wr",
        llmsim_env={
            "TOKENBUS_LLMSIM_TTFT_MS": "50",
            "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "60",
            "TOKENBUS_LLMSIM_DEFAULT_MAX_TOKENS": str(ANSWER_TOKENS),
            "TOKENBUS_LLMSIM_PROFILES": json.dumps(LARGE),
        },
    ) as sys_:
        yield sys_


@pytest.fixture
async def other(browser: Browser, problems: list[tuple[str, str]]) -> AsyncIterator[Page]:
    """A second person's page: a browser context of its own (its own storage, its own name).
    Its script errors and CSP violations fail the test, with the `page` fixture's."""
    ctx = await browser.new_context(viewport={"width": 1100, "height": 760})
    try:
        yield await watched(ctx, problems)
    finally:
        await ctx.close()


def room_in(url: str) -> str:
    match = ROOM_URL.search(url)
    assert match, url
    return match[1]


async def enter_name(page: Page, name: str) -> None:
    dialog = page.get_by_role("dialog", name="Your name in the room")
    await expect(dialog).to_be_visible()
    await dialog.get_by_label("Your name").fill(name)
    await dialog.get_by_role("button", name="Join").click()
    await expect(dialog).to_be_hidden()


async def new_room(page: Page, system: System, name: str) -> str:
    """Open the chat, make a room as `name`; the room's id."""
    await open_chat(page, system.gateway_url)
    await page.get_by_role("button", name="New room").click()
    await enter_name(page, name)
    await expect(page).to_have_url(ROOM_URL)
    await expect(members(page)).to_have_text([f"{name} (you)"])
    return room_in(page.url)


async def join_room(page: Page, system: System, room: str, name: str) -> None:
    """Open the room's link in a fresh browser: the key, then the name."""
    await open_chat(page, system.gateway_url, fragment=f"#room={room}")
    await enter_name(page, name)
    await expect(members(page).get_by_text(f"{name} (you)")).to_be_visible()


def members(page: Page):  # type: ignore[no-untyped-def]
    return page.get_by_role("list", name=re.compile(r"^Members")).get_by_role("listitem")


def typing_line(page: Page):  # type: ignore[no-untyped-def]
    return page.locator("#room-typing")


def said_by(page: Page, name: str, *, asked: bool = False):  # type: ignore[no-untyped-def]
    """The bubbles of the messages `name` said (or, `asked`, asked the AI)."""
    label = f"{name} asked the AI" if asked else f"{name} said"
    return page.get_by_role("article", name=label, exact=True).locator(".bubble")


async def to_room(page: Page, text: str, *, ask_ai: bool = False) -> None:
    """Send `text` to the room from the composer; `ask_ai`: for an answer."""
    toggle = page.get_by_role("checkbox", name="Ask the AI")
    await toggle.set_checked(ask_ai)
    await ask(page, text)


async def answered(page: Page, count: int) -> None:
    await expect(page.locator("article.assistant")).to_have_count(count)
    await expect(last_answer(page)).to_have_attribute("data-state", "done", timeout=STREAM_WAIT_MS)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


class Relay:
    """A page's room sockets, passed on to the gateway through Playwright. It records what the
    page sends (its joins) and gets (every frame, per connection), and cuts the connection one
    side at a time, as a dropped network does: each side learns of it on its own."""

    def __init__(self) -> None:
        self.joins: list[dict[str, Any]] = []
        self.received: list[list[dict[str, Any]]] = []  # per connection, in order
        self._sides: list[tuple[WebSocketRoute, WebSocketRoute]] = []

    @property
    def frames(self) -> list[dict[str, Any]]:
        return [frame for frames in self.received for frame in frames]

    def route(self, page_side: WebSocketRoute) -> None:
        server_side = page_side.connect_to_server()
        received: list[dict[str, Any]] = []
        self.received.append(received)

        def up(message: str | bytes) -> None:
            sent = json.loads(message)
            if sent.get("type") == "join":
                self.joins.append(sent)
            server_side.send(message)

        def down(message: str | bytes) -> None:
            received.append(json.loads(message))
            page_side.send(message)

        page_side.on_message(up)
        server_side.on_message(down)
        # The gateway's side closing does not close the page's: that is the test's to do.
        server_side.on_close(lambda code, reason: None)
        self._sides.append((page_side, server_side))

    async def cut_server_side(self) -> None:
        await self._sides[-1][1].close()

    async def cut_page_side(self) -> None:
        await self._sides[-1][0].close(code=4000, reason="network cut")


class TestRoom:
    async def test_two_people_see_each_other_type_talk_and_get_one_streamed_answer(
        self, system: System, page: Page, other: Page, tmp_path: Path
    ):
        ada, bob = page, other
        room = await new_room(ada, system, "Ada")
        # The link to share is the page's own; its title is the room's conversation's.
        link = ada.get_by_label("Room link")
        await expect(link).to_have_value(ada.url)
        await ada.context.grant_permissions(["clipboard-read", "clipboard-write"])
        await ada.get_by_role("button", name="Copy link").click()
        await expect(ada.get_by_role("region", name="Room").get_by_role("status")).to_have_text(
            re.compile("^Link copied")
        )
        assert await ada.evaluate("navigator.clipboard.readText()") == ada.url
        await expect(ada.get_by_role("region", name="Room").get_by_role("heading")).to_have_text(
            "Ada’s room"
        )
        # The sidebar lists it as a room, the open one.
        listed = ada.get_by_role("navigation", name="Recent chats").get_by_role(
            "link", name=re.compile("^Ada’s room")
        )
        await expect(listed).to_have_attribute("href", f"#room={room}")
        await expect(listed).to_have_attribute("aria-current", "page")

        await join_room(bob, system, room, "Bob")
        await expect(members(bob)).to_have_text(["Ada", "Bob (you)"])
        await expect(members(ada)).to_have_text(["Ada (you)", "Bob"])

        # Typing shows on the other page (never on one's own), and goes when the text is sent.
        bob_box = bob.get_by_label("Message", exact=True)
        await bob_box.fill("Hello Ada")
        await expect(typing_line(ada)).to_have_text("Bob is typing…")
        await bob_box.press("Enter")
        for p in (ada, bob):
            await expect(said_by(p, "Bob")).to_have_text(["Hello Ada"])
        await expect(typing_line(ada)).to_be_hidden()
        await expect(bob.get_by_role("article", name="Bob said").locator(".you")).to_have_text(
            " (you)"
        )
        assert await typing_line(bob).is_hidden()

        # A draft emptied stops the indicator at once (typing active: false), well before the
        # others would drop it for want of a refresh (ttl_s: 5).
        ada_box = ada.get_by_label("Message", exact=True)
        await ada_box.fill("Hi B")
        await expect(typing_line(bob)).to_have_text("Ada is typing…")
        await ada_box.fill("")
        await expect(typing_line(bob)).to_be_hidden(timeout=2500)
        await to_room(ada, "Hi Bob")
        for p in (ada, bob):
            await expect(said_by(p, "Ada")).to_have_text(["Hi Bob"])

        # Ada asks the AI: both pages show who asked, and the answer streams in on both.
        question = "What have we said so far?"
        await to_room(ada, question, ask_ai=True)
        for p in (ada, bob):
            await expect(said_by(p, "Ada", asked=True)).to_have_text([question])
        # The next message only tells the room again, unless asked for (an ask costs tokens).
        await expect(ada.get_by_role("checkbox", name="Ask the AI")).not_to_be_checked()
        await words_shown(bob, lambda n: 3 <= n < ANSWER_TOKENS)  # token by token
        await bob.get_by_label("Message", exact=True).fill("Nice")  # Ada sees Bob typing
        await expect(typing_line(ada)).to_have_text("Bob is typing…")
        await ada.screenshot(path=str(tmp_path / "webchat-room.png"))
        await bob.get_by_label("Message", exact=True).fill("")
        for p in (ada, bob):
            await answered(p, 1)
        history = [user("Bob: Hello Ada"), user("Ada: Hi Bob"), user(f"Ada: {question}")]
        expected = await direct(system, history)
        assert await shown_text(ada) == expected
        assert await shown_text(bob) == expected
        for p in (ada, bob):
            await expect(last_answer(p).locator('[data-fact="model"]')).to_have_text(
                re.compile(r"model llmsim-(small|large)")
            )
            await expect(last_answer(p)).to_have_attribute("aria-label", "tokenbus, answering Ada")

        # Bob asks next: the AI sees the first answer too, as an assistant message.
        follow = "And what did you answer?"
        await to_room(bob, follow, ask_ai=True)
        for p in (ada, bob):
            await answered(p, 2)
        history += [{"role": "assistant", "content": expected}, user(f"Bob: {follow}")]
        expected = await direct(system, history)
        assert await shown_text(ada) == expected
        assert await shown_text(bob) == expected

    async def test_typing_is_dropped_after_its_ttl_without_a_refresh(
        self, system: System, page: Page, tmp_path: Path
    ):
        room = await new_room(page, system, "Ada")
        # A member that says it is typing once and never again (a client that went away).
        cy = Member(system.gateway_url, room, "Cy", "any-key")
        state = await cy.join()
        assert state["type"] == "room_state", state
        try:
            await expect(members(page)).to_have_text(["Ada (you)", "Cy"])
            await cy.send({"type": "typing", "active": True})
            await expect(typing_line(page)).to_have_text("Cy is typing…")
            shown = time.monotonic()
            # Gone after its ttl (5 s), though no `active: false` came; not before.
            await expect(typing_line(page)).to_be_hidden(timeout=8000)
            assert time.monotonic() - shown > TYPING_TTL_S - 1
            await cy.send({"type": "say", "content": "still here"})
            await expect(said_by(page, "Cy")).to_have_text(["still here"])
        finally:
            await cy.leave()
        await expect(members(page)).to_have_text(["Ada (you)"])

        # On a phone-sized screen the room's controls fit, and nothing is wider than it.
        await page.set_viewport_size({"width": 375, "height": 667})
        await page.screenshot(path=str(tmp_path / "webchat-room-phone.png"))
        assert await page.evaluate("document.documentElement.scrollWidth") <= 375
        for name in ("Copy link", "Change name", "Leave room", "Send"):
            await expect(page.get_by_role("button", name=name)).to_be_in_viewport(ratio=1)
        await expect(page.get_by_role("checkbox", name="Ask the AI")).to_be_in_viewport()

    async def test_any_member_stops_the_answer_for_everyone(
        self, system: System, page: Page, other: Page
    ):
        ada, bob = page, other
        room = await new_room(ada, system, "Ada")
        await join_room(bob, system, room, "Bob")
        await ada.get_by_label("Model").select_option("large")  # 30 tokens/s: 3 s to go
        before = await llmsim_stats(system.llmsim_url)
        await to_room(ada, "Tell us a long story", ask_ai=True)
        await words_shown(bob, lambda n: n >= 5)
        # One answer at a time: Bob's question waits in his box, still an ask.
        await to_room(bob, "Me too?", ask_ai=True)
        await expect(bob.get_by_role("alert")).to_contain_text(
            "The AI is still answering. Ask again once its answer is done."
        )
        await expect(bob.get_by_label("Message", exact=True)).to_have_value("Me too?")
        await expect(bob.get_by_role("checkbox", name="Ask the AI")).to_be_checked()
        stop = bob.get_by_role("button", name="Stop")
        await expect(stop).to_be_visible()
        await stop.click()
        for p in (ada, bob):
            answer = last_answer(p)
            await expect(answer).to_have_attribute("data-state", "stopped")
            await expect(answer.locator(".status")).to_have_text("This answer was cancelled.")
            await expect(p.get_by_role("button", name="Stop")).to_be_hidden()

        async def upstream_closed() -> bool:
            stats = await llmsim_stats(system.llmsim_url)
            return stats["streams_closed_early"] == before["streams_closed_early"] + 1

        await eventually(upstream_closed, within=5)
        stopped = await shown_text(ada)
        assert stopped == await shown_text(bob)
        full = await direct(system, [user("Ada: Tell us a long story")])
        assert full.startswith(stopped.removesuffix(".")) and len(stopped) < len(full)

    async def test_a_cut_socket_comes_back_as_the_same_member_with_what_it_missed(
        self, system: System, page: Page, other: Page
    ):
        ada, bob = page, other
        seen_by_ada, seen_by_bob = Relay(), Relay()
        await ada.route_web_socket(re.compile(r"/v1/rooms/"), seen_by_ada.route)
        await bob.route_web_socket(re.compile(r"/v1/rooms/"), seen_by_bob.route)
        room = await new_room(ada, system, "Ada")
        await join_room(bob, system, room, "Bob")
        await to_room(ada, "Before the cut")
        await expect(said_by(bob, "Ada")).to_have_text(["Before the cut"])
        assert seen_by_bob.joins == [{"type": "join", "user": "Bob"}]

        # The network drops Bob's connection: the gateway sees it go at once, Bob's page only
        # after Ada said something more, which it never got.
        await seen_by_bob.cut_server_side()
        await to_room(ada, "During the cut")
        await expect(said_by(ada, "Ada")).to_have_text(["Before the cut", "During the cut"])
        await seen_by_bob.cut_page_side()

        async def rejoined() -> bool:
            return len(seen_by_bob.joins) == 2

        await eventually(rejoined, within=15)
        # Bob comes back as the same member, from the last frame he had; what he missed comes
        # first, and nothing twice.
        first = seen_by_bob.received[0]
        state = next(f for f in first if f["type"] == "room_state")
        assert seen_by_bob.joins[1] == {
            "type": "join",
            "user": "Bob",
            "member": state["member"],
            "since": max(f["pos"] for f in first if "pos" in f),
        }
        await expect(said_by(bob, "Ada")).to_have_text(["Before the cut", "During the cut"])
        await expect(members(bob)).to_have_text(["Ada", "Bob (you)"])
        await to_room(bob, "Back again")
        await expect(said_by(ada, "Bob")).to_have_text(["Back again"])
        # Ada never saw him leave, nor join again.
        presence = [(f["user"], f["status"]) for f in seen_by_ada.frames if f["type"] == "presence"]
        assert presence == [("Bob", "joined")]
        await expect(members(ada)).to_have_text(["Ada (you)", "Bob"])

    async def test_a_reload_rejoins_and_shows_the_history_with_names(
        self, system: System, page: Page, other: Page
    ):
        ada, bob = page, other
        room = await new_room(ada, system, "Ada")
        await join_room(bob, system, room, "Bob")
        await to_room(bob, "Kept in the conversation")
        question = "Do you remember this?"
        await to_room(ada, question, ask_ai=True)
        for p in (ada, bob):
            await answered(p, 1)
        answer = await shown_text(bob)
        await saved_items(system, room, 3)  # the turn is kept just after its answer ends

        # The name is remembered: the reload joins at once, and the room's history is shown.
        await bob.reload()
        await expect(members(bob)).to_have_text(["Ada", "Bob (you)"])
        await expect(said_by(bob, "Bob")).to_have_text(["Kept in the conversation"])
        await expect(said_by(bob, "Ada")).to_have_text([question])
        await expect(bob.locator("article.assistant .answer")).to_have_text([answer])
        await expect(members(ada)).to_have_text(["Ada (you)", "Bob"])

        # Another name: Bob joins again under it.
        await bob.get_by_role("button", name="Change name").click()
        await enter_name(bob, "Robert")
        await expect(members(ada)).to_have_text(["Ada (you)", "Robert"])
        await expect(members(bob)).to_have_text(["Ada", "Robert (you)"])

        # Leaving: the others see it at once, and the page is a chat again.
        await bob.get_by_role("button", name="Leave room").click()
        await expect(members(ada)).to_have_text(["Ada (you)"])
        await expect(bob.get_by_role("region", name="Room")).to_be_hidden()
        assert "#" not in bob.url
        await expect(bob.locator("article")).to_have_count(0)

    async def test_a_room_that_does_not_exist_says_so_and_leaves_a_new_chat(
        self, system: System, page: Page
    ):
        await open_chat(page, system.gateway_url, fragment="#room=conv_0123456789abcdef")
        await expect(page.get_by_role("alert")).to_contain_text(
            "That room does not exist (deleted, or unused for too long)."
        )
        await expect(page.get_by_role("region", name="Room")).to_be_hidden()
        await expect(page.get_by_role("dialog", name="Your name in the room")).to_be_hidden()
        assert "#" not in page.url
        await ask(page, "Then a plain chat")  # the composer is a chat's again
        await expect(last_answer(page)).to_have_attribute(
            "data-state", "done", timeout=STREAM_WAIT_MS
        )
        assert await shown_text(page) == await direct(system, [user("Then a plain chat")])
