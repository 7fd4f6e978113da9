"""The web chat in a real browser (headless Chromium) against a running tokenbus.

Answers come from llmsim, whose text is deterministic: what the page renders is compared with
a direct call to llmsim for the same conversation.
"""

import asyncio
import base64
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, Request, Route, expect

from services.tenants.database import open_store
from services.tenants.settings import TenantStoreSettings
from tests.e2e.browser import CuttingProxy
from tests.e2e.helpers import eventually, llmsim_stats
from tests.e2e.webchat import (
    SCREENSHOT_ENV,
    STREAM_WAIT_MS,
    ask,
    direct,
    last_answer,
    open_chat,
    saved_items,
    shown_text,
    words_shown,
)
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

ANSWER_TOKENS = 90  # llmsim's answer length when the request names none (the page never does)
LARGE = {"llmsim-large": {"ttft_ms": 600, "tokens_per_second": 30}}  # slow: time to Stop it


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path) -> Iterator[System]:
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="c",
        llmsim_env={
            "TOKENBUS_LLMSIM_TTFT_MS": "50",
            "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "60",
            "TOKENBUS_LLMSIM_DEFAULT_MAX_TOKENS": str(ANSWER_TOKENS),
            "TOKENBUS_LLMSIM_PROFILES": json.dumps(LARGE),
        },
    ) as sys_:
        yield sys_


@pytest.fixture(scope="module")
async def keyed_gateway(
    system: System, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, str]:
    """A second gateway of the same system that requires API keys: its URL and a good key."""
    database_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('tenants') / 'tenants.db'}"
    pepper = secrets.token_urlsafe(32)
    settings = TenantStoreSettings(database_url=database_url, key_pepper=pepper)  # type: ignore[call-arg]
    async with open_store(settings) as store:
        _, key = await store.create_key("webchat-tenant")
    open_env = system.gateway_env
    system.gateway_env = {
        **open_env,
        "TOKENBUS_AUTH_MODE": "keys",
        "TOKENBUS_DATABASE_URL": database_url,
        "TOKENBUS_KEY_PEPPER": pepper,
        "TOKENBUS_ID_SECRET": secrets.token_urlsafe(32),
        # keys mode refuses the development keyring that seals conversations at rest
        "TOKENBUS_CONVERSATION_KEYS": f"webchat:{base64.b64encode(os.urandom(32)).decode()}",
    }
    try:
        gateway = system.start_gateway("1")  # stopped with the system
    finally:
        system.gateway_env = open_env
    await asyncio.to_thread(gateway.wait_ready, timeout=90)
    return gateway.url, key


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG image, from its IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def conversation_in(page: Page) -> str:
    """The id of the conversation the page's URL names (#conv=...)."""
    match = re.search(r"#conv=(conv_[A-Za-z0-9_-]+)$", page.url)
    assert match, page.url
    return match[1]


class TestConversation:
    async def test_answers_stream_in_token_by_token_with_their_facts_and_history(
        self, system: System, page: Page, tmp_path: Path
    ):
        await open_chat(page, system.gateway_url)
        await expect(page.locator(".badge.dev-hint")).to_have_text("dev mode: any key works")
        picker = page.get_by_label("Model")
        values = await picker.locator("option").evaluate_all("os => os.map(o => o.value)")
        assert values[:3] == ["auto", "small", "large"]
        assert sorted(values[3:]) == ["llmsim-large", "llmsim-small"]  # from /v1/models

        first = "What is a Kafka partition?"
        await ask(page, first)
        answer = last_answer(page)
        await expect(answer.locator(".answer")).to_have_attribute("aria-live", "polite")
        # Token by token: part of the answer is on screen before the rest.
        await words_shown(page, lambda n: 3 <= n < ANSWER_TOKENS)
        expected = await direct(system, [{"role": "user", "content": first}])
        await expect(answer).to_have_attribute("data-state", "done", timeout=STREAM_WAIT_MS)
        assert await shown_text(page) == expected
        facts = answer.locator(".facts")
        await expect(facts.locator('[data-fact="route"]')).to_have_text(
            re.compile(r"route (small|large)")
        )
        await expect(facts.locator('[data-fact="model"]')).to_have_text(
            re.compile(r"model llmsim-(small|large)")
        )
        await expect(facts.locator('[data-fact="score"]')).to_have_text(
            re.compile(r"score -?\d+\.\d{3}")
        )
        await expect(facts.locator('[data-fact="ttft"]')).to_have_text(
            re.compile(r"first token \d+ ms")
        )
        await expect(facts.locator('[data-fact="rate"]')).to_have_text(re.compile(r"\d+ tokens/s"))
        await expect(facts.locator('[data-fact="tokens"]')).to_have_text(
            re.compile(rf"\d+ tokens \(\d+ in, {ANSWER_TOKENS} out\)")
        )

        # Turn two, on the slow large model: a typing indicator until its first token, and
        # the gateway puts the conversation's history before the question (llmsim's answer
        # depends on the whole conversation).
        await picker.select_option("large")
        second = "And how many should a topic have?"
        await ask(page, second)
        answer = last_answer(page)
        await expect(answer.get_by_role("status", name="tokenbus is typing")).to_be_visible()
        await expect(answer.locator('[data-fact="model"]')).to_have_text("model llmsim-large")
        await expect(answer.locator('[data-fact="route"]')).to_have_text("route large")
        await words_shown(page, lambda n: n > 25)
        shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "webchat.png")
        image = await page.screenshot(path=str(shot))  # mid-answer, for the README
        assert png_size(image) == (1100, 760)  # the whole viewport
        await expect(answer).to_have_attribute("data-state", "done", timeout=STREAM_WAIT_MS)
        history = [
            {"role": "user", "content": first},
            {"role": "assistant", "content": expected},
            {"role": "user", "content": second},
        ]
        assert await shown_text(page) == await direct(system, history)
        await expect(answer.locator('[data-fact="score"]')).to_have_count(0)  # not scored

        # Regenerate asks again for the same history (the last turn is taken out of the
        # conversation first): llmsim gives the same text.
        await page.get_by_role("button", name="Regenerate").click()
        await expect(page.locator("article.assistant")).to_have_count(2)
        await expect(last_answer(page)).to_have_attribute(
            "data-state", "done", timeout=STREAM_WAIT_MS
        )
        assert await shown_text(page) == await direct(system, history)

        await page.get_by_role("button", name="New chat").click()
        await expect(page.locator("article")).to_have_count(0)
        await expect(page.get_by_label("Message", exact=True)).to_be_focused()

    async def test_markdown_renders_code_and_model_html_never_runs(
        self, page: Page, system: System, problems: list[tuple[str, str]]
    ):
        evil = (
            "Here:\n\n```python\nprint('<b>hi</b>')\n```\n\n"
            '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
            "[link](javascript:window.__pwned=3) **bold**"
        )
        await page.route("**/v1/chat/completions", lambda route: _fake_stream(route, evil))
        await open_chat(page, system.gateway_url)
        await ask(page, "show me code")
        answer = last_answer(page)
        await expect(answer).to_have_attribute("data-state", "done")
        code = answer.locator("pre code")
        await expect(code).to_have_text("print('<b>hi</b>')\n")
        await expect(answer.locator("strong")).to_have_text("bold")
        assert await answer.locator("img, script, b").count() == 0
        assert await answer.locator("a").get_attribute("href") is None
        assert await page.evaluate("window.__pwned") is None
        # Chromium reports the CSP against `onerror` already when DOMPurify parses the text
        # into its inert document: the handler is refused there, before being stripped.
        sanitizer = [p for p in problems if p[1].endswith("/static/vendor/purify.es.mjs")]
        assert all("inline event handler" in what for what, _ in sanitizer)
        problems[:] = [p for p in problems if p not in sanitizer]


PARSE_IN_CHUNKS = """async ([raw, sizes]) => {
  const { sseFrames } = await import("/static/stream.js");
  const bytes = new TextEncoder().encode(raw);
  const results = [];
  for (const size of sizes) {
    const body = new ReadableStream({
      start(c) {
        for (let i = 0; i < bytes.length; i += size) c.enqueue(bytes.slice(i, i + size));
        c.close();
      },
    });
    const frames = [];
    for await (const frame of sseFrames(body)) frames.push(frame);
    results.push(frames);
  }
  return results;
}"""


class TestStreamParser:
    async def test_frames_survive_any_chunking_and_a_cut_frame_is_never_shown(
        self, page: Page, system: System
    ):
        raw = (
            'id: 0\r\ndata: {"a":1}\r\n\r\n'  # CRLF, split anywhere
            ": ping\n\n"  # a keep-alive comment
            "id: 1\ndata: line one\ndata: line two\n\n"
            "id: 2\ndata:h\u00e9llo \U0001f680\n\n"  # no space after the colon; multi-byte
            "data: [DONE]\n\n"
            "id: 3\ndata: a frame the cut interrupted"
        )
        await page.goto(f"{system.gateway_url}/")
        sizes = [1, 2, 3, 5, 64, len(raw.encode())]
        results = await page.evaluate(PARSE_IN_CHUNKS, [raw, sizes])
        expected = [
            {"id": "0", "data": '{"a":1}'},
            {"id": "1", "data": "line one\nline two"},
            {"id": "2", "data": "h\u00e9llo \U0001f680"},
            {"id": None, "data": "[DONE]"},
        ]
        assert results == [expected] * len(sizes)


class TestStop:
    @pytest.mark.parametrize("how", ["button", "escape"])
    async def test_stop_halts_the_answer_and_the_upstream_generation(
        self, system: System, page: Page, how: str
    ):
        await open_chat(page, system.gateway_url)
        await page.get_by_label("Model").select_option("large")  # 30 tokens/s: 3 s to go
        before = await llmsim_stats(system.llmsim_url)
        await ask(page, f"Stop me ({how})")
        await words_shown(page, lambda n: n >= 5)
        assert (await llmsim_stats(system.llmsim_url))["open_streams"] == 1
        if how == "button":
            await page.get_by_role("button", name="Stop").click()
        else:
            await page.keyboard.press("Escape")
        answer = last_answer(page)
        await expect(answer).to_have_attribute("data-state", "stopped")
        await expect(answer.locator(".status")).to_have_text("Stopped.")

        async def upstream_closed() -> bool:
            stats = await llmsim_stats(system.llmsim_url)
            return stats["open_streams"] == 0

        await eventually(upstream_closed, within=2.0)
        after = await llmsim_stats(system.llmsim_url)
        assert after["streams_closed_early"] == before["streams_closed_early"] + 1
        stopped_at = await shown_text(page)
        await page.wait_for_timeout(300)
        assert await shown_text(page) == stopped_at  # nothing more arrives
        full = await direct(system, [{"role": "user", "content": f"Stop me ({how})"}])
        assert full.startswith(stopped_at.removesuffix(".")) and len(stopped_at) < len(full)
        await expect(page.get_by_role("button", name="Send")).to_be_visible()
        await expect(page.get_by_role("button", name="Regenerate")).to_be_enabled()


class TestConnectionLoss:
    async def test_a_network_cut_mid_answer_resumes_to_the_exact_text(
        self, system: System, page: Page
    ):
        port = int(system.gateway_url.rsplit(":", 1)[1])
        async with CuttingProxy(port) as proxy:
            await open_chat(page, proxy.url)
            resumes: list[dict[str, str]] = []
            page.on(
                "request",
                lambda r: resumes.append(r.headers) if "/v1/streams/" in r.url else None,
            )
            # The headers and a dozen frames, then a cut mid-frame; the network stays down
            # for the first two reconnects, so the page has to back off and try again.
            proxy.arm(after=3000, refuse=2)
            prompt = "Tell me about the network, while it fails"
            await ask(page, prompt)
            answer = last_answer(page)
            await expect(answer).to_have_attribute("data-state", "done", timeout=STREAM_WAIT_MS)
            assert (proxy.cuts, proxy.refused) == (1, 2)
        expected = await direct(system, [{"role": "user", "content": prompt}])
        assert await shown_text(page) == expected
        # The gateway kept the turn, whole, though the page's first connection was cut.
        items = await saved_items(system, conversation_in(page), 2)
        assert [item_text(i) for i in items] == [prompt, expected]
        statuses = await page.evaluate("window.__statuses")
        # Two tries dropped (with Chromium's own retries of them), the third one through.
        assert statuses[:2] == [
            "connection lost — reconnecting…",
            "connection lost — reconnecting… (attempt 2)",
        ], statuses
        assert statuses[-1] == "reconnected — continuing where it stopped", statuses
        await expect(answer.locator('[data-fact="reconnects"]')).to_have_text("reconnected 1×")
        # Every try resumes after the last event shown, which was well into the answer.
        assert len(resumes) >= 2
        assert len({r["last-event-id"] for r in resumes}) == 1
        assert int(resumes[0]["last-event-id"]) >= 3

    async def test_a_stream_that_ends_without_done_is_resumed(self, system: System, page: Page):
        cut = {"done": False}

        async def truncate_once(route: Route) -> None:
            if cut["done"]:
                await route.continue_()
                return
            cut["done"] = True
            response = await route.fetch()  # the whole stream, then only its first part
            body = await response.body()
            await route.fulfill(response=response, body=body[: len(body) // 3])

        await page.route("**/v1/chat/completions", truncate_once)
        await open_chat(page, system.gateway_url)
        prompt = "An answer cut short by a proxy"
        await ask(page, prompt)
        answer = last_answer(page)
        await expect(answer).to_have_attribute("data-state", "done", timeout=STREAM_WAIT_MS)
        assert await shown_text(page) == await direct(system, [{"role": "user", "content": prompt}])
        await expect(answer.locator('[data-fact="reconnects"]')).to_have_text("reconnected 1×")


class TestErrors:
    async def test_a_wrong_key_is_refused_in_the_dialog(
        self, keyed_gateway: tuple[str, str], page: Page
    ):
        url, good_key = keyed_gateway
        await page.goto(f"{url}/")
        dialog = page.get_by_role("dialog", name="Your API key")
        await expect(dialog.locator(".dev-hint")).to_be_hidden()  # keys are required here
        await dialog.get_by_label("API key").fill("sk-wrong")
        await dialog.get_by_role("button", name="Continue").click()
        await expect(dialog.get_by_role("alert")).to_have_text(
            "The gateway did not accept this key. Check it and try again."
        )
        await expect(dialog).to_be_visible()
        await dialog.get_by_label("API key").fill(good_key)
        await dialog.get_by_role("button", name="Continue").click()
        await expect(dialog).to_be_hidden()

    async def test_a_refused_key_keeps_the_typed_message(
        self, keyed_gateway: tuple[str, str], system: System, page: Page
    ):
        url, good_key = keyed_gateway
        # A key that was good when saved and is refused now (rotated): the page learns it at
        # the first send.
        await page.add_init_script("sessionStorage.setItem('tokenbus.apiKey', 'sk-revoked')")
        await page.goto(f"{url}/")
        prompt = "A message I typed with care,\nover two lines"
        box = page.get_by_label("Message", exact=True)
        await box.fill(prompt)
        await box.press("Enter")
        notice = page.locator("#notice")
        await expect(notice).to_contain_text("The gateway did not accept your API key")
        await expect(box).to_have_value(prompt)
        await expect(page.locator("article")).to_have_count(0)

        await notice.get_by_role("button", name="Enter another API key").click()
        dialog = page.get_by_role("dialog", name="Your API key")
        await dialog.get_by_label("API key").fill(good_key)
        await dialog.get_by_role("button", name="Continue").click()
        await expect(dialog).to_be_hidden()  # the key was checked and accepted
        await expect(box).to_be_focused()
        await page.keyboard.press("Enter")  # the same text, sent now
        await expect(last_answer(page)).to_have_attribute(
            "data-state", "done", timeout=STREAM_WAIT_MS
        )
        assert await shown_text(page) == await direct(system, [{"role": "user", "content": prompt}])

    @pytest.mark.parametrize(
        ("status", "headers", "message"),
        [
            (429, {"retry-after": "7"}, "Too many requests right now. Try again in 7 s."),
            (503, {}, "The server had a problem (503): No inference worker took the request"),
        ],
    )
    async def test_http_errors_are_plain_words_and_the_input_stays(
        self, system: System, page: Page, status: int, headers: dict[str, str], message: str
    ):
        body = {"error": {"message": "No inference worker took the request in time; try again."}}
        await page.route(
            "**/v1/chat/completions",
            lambda route: route.fulfill(status=status, headers=headers, json=body),
        )
        await open_chat(page, system.gateway_url)
        await ask(page, "hello?")
        await expect(page.locator("#notice")).to_contain_text(message)
        await expect(page.get_by_label("Message", exact=True)).to_have_value("hello?")
        # The conversation the question would have begun is gone again: no empty chat.
        assert "#" not in page.url
        await expect(chats(page).get_by_role("link", name=re.compile("^hello"))).to_have_count(0)

    async def test_a_failed_stream_says_why_and_keeps_the_partial_answer(
        self, system: System, page: Page
    ):
        error = {"message": "worker died", "type": "api_error", "code": "worker_lost"}
        await page.route(
            "**/v1/chat/completions", lambda route: _fake_stream(route, "Half an", error)
        )
        await open_chat(page, system.gateway_url)
        await ask(page, "break, please")
        answer = last_answer(page)
        await expect(answer).to_have_attribute("data-state", "failed")
        await expect(answer.get_by_role("alert")).to_have_text(
            "The model worker stopped mid-answer. Regenerate to try again."
        )
        await expect(answer.locator(".answer")).to_have_text("Half an")
        await expect(page.get_by_role("button", name="Regenerate")).to_be_enabled()


# Two function tools, offered through the page's "Extra request fields": llmsim calls both.
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                    "days": {"type": "integer", "minimum": 1, "maximum": 7},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
                    "exact": {"type": "boolean"},
                },
            },
        },
    },
]
TOOLS_NOT_RUN = "The model asked to call tools. This page shows the calls but cannot run them."
# Records, as the answer streams, each text the first tool call's arguments show and each
# state of the Thinking section: what a test cannot catch between two polls.
RECORD_PARTS = """
window.__args = [];
window.__thinking = [];
new MutationObserver(() => {
  const args = document.querySelector("article.assistant .tool-args");
  if (args && window.__args.at(-1) !== args.textContent) window.__args.push(args.textContent);
  const t = document.querySelector("article.assistant details.thinking");
  const state = t && `${t.dataset.state} ${t.open ? "open" : "closed"}`;
  if (state && window.__thinking.at(-1) !== state) window.__thinking.push(state);
}).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
"""


async def set_extra_fields(page: Page, text: str) -> None:
    """Type `text` into Advanced › Extra request fields (JSON), opening the section first."""
    box = page.get_by_label("Extra request fields (JSON)")
    if not await box.is_visible():
        await page.locator("#advanced > summary").click()
    await box.fill(text)


async def direct_message(
    system: System, messages: list[dict[str, Any]], extra: dict[str, Any]
) -> dict[str, Any]:
    """llmsim's answer to the same request sent directly: its whole (non-stream) message,
    which joins the pieces its stream sends."""
    body = {"model": "x", "messages": messages, **extra}
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(f"{system.llmsim_url}/v1/chat/completions", json=body)
    response.raise_for_status()
    return response.json()["choices"][0]["message"]  # type: ignore[no-any-return]


def chat_posts(page: Page) -> list[dict[str, Any]]:
    """The bodies of the chat requests the page sends from now on."""
    bodies: list[dict[str, Any]] = []

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/v1/chat/completions"):
            bodies.append(request.post_data_json or {})

    page.on("request", record)
    return bodies


def pretty(arguments: str) -> str:
    """A call's arguments as the page shows them (JSON.stringify(value, null, 2))."""
    return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)


class TestToolsReasoningRefusal:
    async def test_tool_calls_stream_into_collapsed_blocks_and_stay_out_of_the_history(
        self, system: System, page: Page
    ):
        await page.add_init_script(RECORD_PARTS)
        await open_chat(page, system.gateway_url)
        posts = chat_posts(page)
        await set_extra_fields(page, json.dumps({"tools": TOOLS}, indent=2))
        await expect(page.locator("#extra-active")).to_have_text("extra fields on")
        prompt = "What is the weather in Oslo, and where are the docs about it?"
        await ask(page, prompt)
        answer = last_answer(page)
        await expect(answer).to_have_attribute("data-state", "done", timeout=STREAM_WAIT_MS)
        user = {"role": "user", "content": prompt}
        expected = (await direct_message(system, [user], {"tools": TOOLS}))["tool_calls"]
        assert [c["function"]["name"] for c in expected] == ["get_weather", "search_docs"]

        blocks = answer.locator("details.tool-call")
        await expect(blocks).to_have_count(2)
        for block, call in zip(await blocks.all(), expected, strict=True):
            assert await block.evaluate("d => d.open") is False  # collapsed
            await expect(block.locator("summary")).to_have_text(
                f"tool call {call['function']['name']}"
            )
            await expect(block).to_have_attribute("data-call-id", call["id"])
            await expect(block.locator(".tool-args")).to_be_hidden()
            await expect(block.locator(".tool-args")).to_have_text(
                pretty(call["function"]["arguments"])
            )
        await expect(answer.locator(".answer")).to_be_empty()  # no text: no text bubble
        await expect(answer.locator(".status")).to_have_text(TOOLS_NOT_RUN)

        # Expanding a block shows its arguments, pretty-printed, as text (never as HTML).
        first = blocks.first
        await first.locator("summary").click()
        args = first.locator(".tool-args")
        await expect(args).to_be_visible()
        await expect(args).to_have_text(pretty(expected[0]["function"]["arguments"]))
        assert await args.evaluate("e => e.children.length") == 0
        # The arguments grew on screen as their fragments came: raw JSON, longer each time.
        raw = expected[0]["function"]["arguments"]
        grown = await page.evaluate("window.__args")
        assert len(grown) >= 3, grown
        assert all(raw.startswith(text) for text in grown[:-1]), grown
        assert grown[-1] == pretty(raw)

        # The next request carries only the new question: the conversation's history is the
        # gateway's to add.
        await ask(page, "Thanks. And tomorrow?")
        await expect(blocks).to_have_count(2)  # the first answer's blocks stay as they were
        await expect(page.locator("article.assistant")).to_have_count(2)
        await expect(last_answer(page)).to_have_attribute(
            "data-state", "done", timeout=STREAM_WAIT_MS
        )
        assert len(posts) == 2
        assert posts[1]["messages"] == [{"role": "user", "content": "Thanks. And tomorrow?"}]
        assert posts[1]["tools"] == TOOLS and posts[1]["stream"] is True
        await expect(last_answer(page).locator("details.tool-call")).to_have_count(2)

    async def test_reasoning_streams_into_a_thinking_section_that_folds_when_the_answer_starts(
        self, system: System, page: Page
    ):
        await page.add_init_script(RECORD_PARTS)
        await open_chat(page, system.gateway_url)
        extra = {"metadata": {"llmsim_reasoning": "30"}}
        await set_extra_fields(page, json.dumps(extra))
        prompt = "Think first: why do partitions matter?"
        await ask(page, prompt)
        answer = last_answer(page)
        thinking = answer.locator("details.thinking")
        await expect(thinking.locator("summary")).to_have_text(re.compile(r"^Thinking"))
        await expect(answer).to_have_attribute("data-state", "done", timeout=STREAM_WAIT_MS)
        expected = await direct_message(system, [{"role": "user", "content": prompt}], extra)
        assert expected["reasoning_content"] and expected["content"]
        await expect(thinking.locator(".thinking-text")).to_have_text(expected["reasoning_content"])
        assert await shown_text(page) == expected["content"]  # the answer text, exactly
        # Open while the reasoning streamed, folded once the answer began.
        assert await page.evaluate("window.__thinking") == ["streaming open", "done closed"]
        await expect(thinking.locator(".thinking-text")).to_be_hidden()
        await thinking.locator("summary").click()
        await expect(thinking.locator(".thinking-text")).to_be_visible()
        usage = answer.locator('[data-fact="tokens"]')
        await expect(usage).to_have_text(re.compile(rf"\(\d+ in, {ANSWER_TOKENS + 30} out\)"))

    async def test_a_refusal_is_labelled_and_goes_back_as_text(self, system: System, page: Page):
        await open_chat(page, system.gateway_url)
        posts = chat_posts(page)
        extra = {"metadata": {"llmsim_refusal": "true"}}
        await set_extra_fields(page, json.dumps(extra))
        prompt = "Please do something you must refuse"
        await ask(page, prompt)
        answer = last_answer(page)
        await expect(answer).to_have_attribute("data-state", "done", timeout=STREAM_WAIT_MS)
        user = {"role": "user", "content": prompt}
        expected = await direct_message(system, [user], extra)
        assert expected["content"] is None and expected["refusal"]
        refusal = answer.get_by_label("Refusal")
        await expect(refusal.locator(".refusal-label")).to_have_text("Refused")
        await expect(refusal.locator(".refusal-text")).to_have_text(expected["refusal"])
        await expect(answer.locator(".answer")).to_be_empty()

        # Without the extra fields the next answer is text again, and the refusal went back
        # to the model as the assistant turn's content (the gateway keeps the history: the
        # page sends the new question alone).
        await set_extra_fields(page, "")
        await expect(page.locator("#extra-active")).to_be_hidden()
        await ask(page, "Then something else")
        await expect(last_answer(page)).to_have_attribute(
            "data-state", "done", timeout=STREAM_WAIT_MS
        )
        history = [
            user,
            {"role": "assistant", "content": expected["refusal"]},
            {"role": "user", "content": "Then something else"},
        ]
        assert posts[1]["messages"] == history[-1:] and "metadata" not in posts[1]
        assert await shown_text(page) == await direct(system, history)
        await expect(last_answer(page).locator(".refusal")).to_have_count(0)

    async def test_bad_extra_fields_block_sending_and_keep_the_message(
        self, system: System, page: Page
    ):
        await open_chat(page, system.gateway_url)
        posts = chat_posts(page)
        box = page.get_by_label("Message", exact=True)
        extras = page.get_by_label("Extra request fields (JSON)")
        error = page.locator("#extra-error")
        cases: list[tuple[str, str | re.Pattern[str]]] = [
            ('{"tools": [', re.compile(r"^The extra request fields are not valid JSON \(.+\)\. ")),
            ('["tools"]', 'The extra request fields must be a JSON object, like {"metadata": {}}.'),
            (
                '{"stream": false}',
                "The extra request fields may not set “stream”: the page sets it",
            ),
        ]
        for text, problem in cases:
            await set_extra_fields(page, text)
            await box.fill("A message worth keeping")
            await box.press("Enter")
            await expect(error).to_contain_text(problem)
            await expect(error).to_contain_text("Fix it, or empty the box, to send.")
            await expect(extras).to_have_attribute("aria-invalid", "true")
            await expect(extras).to_be_focused()
            await expect(box).to_have_value("A message worth keeping")
            await expect(page.locator("#extra-active")).to_be_hidden()
        await expect(page.locator("article")).to_have_count(0)
        assert posts == []

        # Fixed, the message goes out with the fields; they outlive a reload of the tab.
        fixed = '{"metadata": {"llmsim_reasoning": "3"}, "temperature": 0.5}'
        await extras.fill(fixed)
        await expect(error).to_be_empty()
        await expect(extras).to_have_attribute("aria-invalid", "false")
        await box.press("Enter")
        await expect(last_answer(page)).to_have_attribute(
            "data-state", "done", timeout=STREAM_WAIT_MS
        )
        assert len(posts) == 1
        assert posts[0]["metadata"] == {"llmsim_reasoning": "3"} and posts[0]["temperature"] == 0.5
        await page.reload()
        await expect(page.locator("body")).to_have_attribute("data-ready", "true")
        await expect(page.get_by_label("Extra request fields (JSON)")).to_have_value(fixed)
        await expect(page.locator("#extra-active")).to_be_visible()

    async def test_a_resumed_answer_shows_its_reasoning_and_calls_once(
        self, system: System, page: Page
    ):
        cut = {"done": False}

        async def truncate_once(route: Route) -> None:
            if cut["done"]:
                await route.continue_()
                return
            cut["done"] = True
            response = await route.fetch()  # the whole stream, then only part of it
            body = await response.body()
            await route.fulfill(response=response, body=body[: len(body) // 2])

        await page.route("**/v1/chat/completions", truncate_once)
        await open_chat(page, system.gateway_url)
        extra = {"tools": TOOLS, "metadata": {"llmsim_reasoning": "20"}}
        await set_extra_fields(page, json.dumps(extra))
        prompt = "Reason, call tools, and survive a cut"
        await ask(page, prompt)
        answer = last_answer(page)
        await expect(answer).to_have_attribute("data-state", "done", timeout=STREAM_WAIT_MS)
        await expect(answer.locator('[data-fact="reconnects"]')).to_have_text("reconnected 1×")
        expected = await direct_message(system, [{"role": "user", "content": prompt}], extra)
        await expect(answer.locator(".thinking-text")).to_have_text(expected["reasoning_content"])
        blocks = answer.locator("details.tool-call")
        await expect(blocks).to_have_count(2)
        for block, call in zip(await blocks.all(), expected["tool_calls"], strict=True):
            await expect(block.locator("summary")).to_have_text(
                f"tool call {call['function']['name']}"
            )
            await expect(block.locator(".tool-args")).to_have_text(
                pretty(call["function"]["arguments"])
            )


class TestPhoneAndKeyboard:
    async def test_a_phone_sized_screen_and_keys_alone_work(self, browser: Browser, system: System):
        ctx = await browser.new_context(
            viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True
        )
        try:
            page = await ctx.new_page()
            await open_chat(page, system.gateway_url)
            box = page.get_by_label("Message", exact=True)
            await box.focus()
            await page.keyboard.type("first line")
            await page.keyboard.press("Shift+Enter")  # a new line, not a send
            await page.keyboard.type("second line")
            await expect(box).to_have_value("first line\nsecond line")
            await expect(page.locator("article")).to_have_count(0)
            await page.keyboard.press("Enter")
            await expect(last_answer(page)).to_have_attribute(
                "data-state", "done", timeout=STREAM_WAIT_MS
            )
            # Nothing is wider than the screen, and every control is on it.
            assert await page.evaluate("document.documentElement.scrollWidth") <= 375
            for name in ("Send", "Regenerate", "New chat", "API key", "Chats"):
                box_ = await page.get_by_role("button", name=name).bounding_box()
                assert box_ is not None and box_["x"] >= 0 and box_["x"] + box_["width"] <= 375
                assert box_["y"] + box_["height"] <= 667, name
            await expect(page.get_by_label("Model")).to_be_in_viewport()

            # The recent chats are a drawer here: closed, then opened by "Chats" (focus goes
            # to the open chat's link), closed again by Escape (focus back on the button).
            sidebar = page.get_by_role("navigation", name="Recent chats")
            toggle = page.get_by_role("button", name="Chats")
            await expect(sidebar).to_be_hidden()
            await expect(toggle).to_have_attribute("aria-expanded", "false")
            await toggle.click()
            await expect(toggle).to_have_attribute("aria-expanded", "true")
            current = sidebar.locator('a[aria-current="page"]')
            await expect(current.locator(".chat-title")).to_have_text("first line second line")
            await expect(current).to_be_focused()
            assert await page.evaluate("document.documentElement.scrollWidth") <= 375
            await page.keyboard.press("Escape")
            await expect(sidebar).to_be_hidden()
            await expect(toggle).to_be_focused()
            await expect(last_answer(page)).to_have_attribute("data-state", "done")
        finally:
            await ctx.close()


def _sse(frames: list[tuple[int | None, str]]) -> str:
    return "".join(
        (f"id: {i}\n" if i is not None else "") + f"data: {data}\n\n" for i, data in frames
    )


def _chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-1-0-0123456789abcdef",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "fake-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
    )


async def _fake_stream(route: Route, text: str, error: dict[str, Any] | None = None) -> None:
    """Answer the chat POST with a canned SSE stream (no backend involved)."""
    frames: list[tuple[int | None, str]] = [
        (0, _chunk({"role": "assistant", "content": ""})),
        (1, _chunk({"content": text})),
    ]
    if error is None:
        frames += [(None, _chunk({}, "stop")), (None, "[DONE]")]
    else:
        frames.append((2, json.dumps({"error": error})))
    await route.fulfill(
        status=200,
        headers={
            "content-type": "text/event-stream",
            "x-request-id": "chatcmpl-1-0-0123456789abcdef",
            "x-tokenbus-route": "small",
            "x-tokenbus-model": "fake-model",
        },
        body=_sse(frames),
    )


# The same two tools in the Responses API's flat form.
RESPONSES_TOOLS = [{"type": "function", **tool["function"]} for tool in TOOLS]


async def use_responses_api(page: Page) -> None:
    """Choose Advanced › API › Responses, opening the section first."""
    radio = page.get_by_role("radio", name="Responses")
    if not await radio.is_visible():
        await page.locator("#advanced > summary").click()
    await radio.check()
    await expect(page.locator("#api-active")).to_have_text("Responses API")


def api_calls(page: Page) -> list[tuple[str, str, Any]]:
    """(method, path and query, JSON body or None) of the API requests the page sends from
    now on."""
    calls: list[tuple[str, str, Any]] = []

    def record(request: Request) -> None:
        url = httpx.URL(request.url)
        if url.path.startswith("/v1/"):
            target = url.raw_path.decode()
            body = request.post_data_json if request.post_data else None
            calls.append((request.method, target, body))

    page.on("request", record)
    return calls


class TestResponsesApi:
    async def test_answers_stream_through_the_responses_api_over_two_turns(
        self, system: System, page: Page
    ):
        await open_chat(page, system.gateway_url)
        calls = api_calls(page)
        await use_responses_api(page)
        first = "What does the Responses API add?"
        await ask(page, first)
        answer = last_answer(page)
        await words_shown(page, lambda n: 3 <= n < ANSWER_TOKENS)  # token by token
        await expect(answer).to_have_attribute("data-state", "done", timeout=STREAM_WAIT_MS)
        expected = await direct(system, [{"role": "user", "content": first}])
        assert await shown_text(page) == expected
        facts = answer.locator(".facts")
        await expect(facts.locator('[data-fact="model"]')).to_have_text(
            re.compile(r"model llmsim-(small|large)")
        )
        await expect(facts.locator('[data-fact="ttft"]')).to_have_text(
            re.compile(r"first token \d+ ms")
        )
        await expect(facts.locator('[data-fact="rate"]')).to_have_text(re.compile(r"\d+ tokens/s"))
        await expect(facts.locator('[data-fact="tokens"]')).to_have_text(
            re.compile(rf"\d+ tokens \(\d+ in, {ANSWER_TOKENS} out\)")
        )
        await expect(answer).to_have_attribute("data-request-id", re.compile(r"^chatcmpl-"))

        # Turn two: only the question goes, in the conversation; the answer is llmsim's for
        # the same chat.
        second = "And how do I resume one?"
        await ask(page, second)
        await expect(page.locator("article.assistant")).to_have_count(2)
        await expect(last_answer(page)).to_have_attribute(
            "data-state", "done", timeout=STREAM_WAIT_MS
        )
        history = [
            {"role": "user", "content": first},
            {"role": "assistant", "content": expected},
            {"role": "user", "content": second},
        ]
        answer2 = await shown_text(page)
        assert answer2 == await direct(system, history)

        posts = [(target, body) for method, target, body in calls if method == "POST"]
        assert [target for target, _ in posts] == [
            "/v1/conversations",
            "/v1/responses",
            "/v1/responses",
        ]
        assert posts[0][1] == {"metadata": {"title": first}}
        conv = conversation_in(page)
        for (_, body), question in zip(posts[1:], (first, second), strict=True):
            user = {"role": "user", "content": question}
            assert body == {"model": "auto", "input": [user], "conversation": conv, "stream": True}
        assert not [c for c in calls if c[1].startswith("/v1/chat/")]
        await saved_items(system, conv, 4)

        # The setting outlives a reload of the tab; back on Chat Completions, chat it is, and
        # it continues the same conversation.
        await page.reload()
        await expect(page.locator("body")).to_have_attribute("data-ready", "true")
        await expect(page.locator("#api-active")).to_be_visible()  # the folded section says so
        await page.locator("#advanced > summary").click()
        await expect(page.get_by_role("radio", name="Responses")).to_be_checked()
        await page.get_by_role("radio", name="Chat Completions").check()
        await expect(page.locator("#api-active")).to_be_hidden()
        await expect(page.locator("article.assistant")).to_have_count(2)  # the history again
        await ask(page, first)
        await expect(page.locator("article.assistant")).to_have_count(3)
        await expect(last_answer(page)).to_have_attribute(
            "data-state", "done", timeout=STREAM_WAIT_MS
        )
        history += [{"role": "assistant", "content": answer2}, {"role": "user", "content": first}]
        assert await shown_text(page) == await direct(system, history)
        assert [c for c in calls if c[0] == "POST"][-1][:2] == ("POST", "/v1/chat/completions")

    async def test_stop_cancels_the_response_and_the_upstream_generation(
        self, system: System, page: Page
    ):
        await open_chat(page, system.gateway_url)
        calls = api_calls(page)
        await use_responses_api(page)
        await page.get_by_label("Model").select_option("large")  # 30 tokens/s: 3 s to go
        before = await llmsim_stats(system.llmsim_url)
        prompt = "Stop me (Responses)"
        await ask(page, prompt)
        await words_shown(page, lambda n: n >= 5)
        assert (await llmsim_stats(system.llmsim_url))["open_streams"] == 1
        async with page.expect_response(lambda r: r.url.endswith("/cancel")) as cancelled:
            await page.get_by_role("button", name="Stop").click()
        answer = last_answer(page)
        await expect(answer).to_have_attribute("data-state", "stopped")
        await expect(answer.locator(".status")).to_have_text("Stopped.")
        response = await cancelled.value
        assert response.status == 200, await response.text()
        assert (await response.json())["status"] == "cancelled"

        async def upstream_closed() -> bool:
            stats = await llmsim_stats(system.llmsim_url)
            return stats["open_streams"] == 0

        await eventually(upstream_closed, within=2.0)
        after = await llmsim_stats(system.llmsim_url)
        assert after["streams_closed_early"] == before["streams_closed_early"] + 1
        cancels = [target for method, target, _ in calls if target.endswith("/cancel")]
        assert len(cancels) == 1 and re.fullmatch(r"/v1/responses/resp_[^/]+/cancel", cancels[0])
        stopped_at = await shown_text(page)
        full = await direct(system, [{"role": "user", "content": prompt}])
        assert full.startswith(stopped_at.removesuffix(".")) and len(stopped_at) < len(full)
        await expect(answer.locator(".status")).to_have_text("Stopped.")  # the cancel went well
        await expect(page.get_by_role("button", name="Send")).to_be_visible()

    async def test_a_network_cut_mid_answer_resumes_to_the_exact_text(
        self, system: System, page: Page
    ):
        port = int(system.gateway_url.rsplit(":", 1)[1])
        async with CuttingProxy(port) as proxy:
            await open_chat(page, proxy.url)
            calls = api_calls(page)
            await use_responses_api(page)
            # The headers and some events, then a cut mid-frame; the network stays down for
            # the first reconnect, so the page has to back off and try again.
            proxy.arm(after=6000, refuse=1, api="responses")
            prompt = "Tell me about Responses, while the network fails"
            await ask(page, prompt)
            answer = last_answer(page)
            await expect(answer).to_have_attribute("data-state", "done", timeout=STREAM_WAIT_MS)
            assert (proxy.cuts, proxy.refused) == (1, 1)
        expected = await direct(system, [{"role": "user", "content": prompt}])
        assert await shown_text(page) == expected
        items = await saved_items(system, conversation_in(page), 2)
        assert [item_text(i) for i in items] == [prompt, expected]  # kept whole, once
        statuses = await page.evaluate("window.__statuses")
        assert statuses[0] == "connection lost — reconnecting…", statuses
        assert statuses[-1] == "reconnected — continuing where it stopped", statuses
        await expect(answer.locator('[data-fact="reconnects"]')).to_have_text("reconnected 1×")
        # Every try resumes the same response after the last event shown, well into the text.
        resumes = [httpx.URL(target) for method, target, _ in calls if method == "GET"]
        resumes = [url for url in resumes if url.path.startswith("/v1/responses/")]
        assert len(resumes) >= 2
        assert len({str(url) for url in resumes}) == 1
        assert re.fullmatch(r"/v1/responses/resp_[^/]+", resumes[0].path)
        assert resumes[0].params["stream"] == "true"
        # response.created, in_progress, output_item.added, content_part.added: 0 to 3
        assert int(resumes[0].params["starting_after"]) > 4

    async def test_reasoning_calls_and_refusals_show_as_for_chat(
        self, system: System, page: Page, tmp_path: Path
    ):
        await open_chat(page, system.gateway_url)
        await use_responses_api(page)
        await set_extra_fields(
            page, json.dumps({"tools": RESPONSES_TOOLS, "metadata": {"llmsim_reasoning": "20"}})
        )
        prompt = "Reason, then call the tools"
        await ask(page, prompt)
        answer = last_answer(page)
        await expect(answer).to_have_attribute("data-state", "done", timeout=STREAM_WAIT_MS)
        user = {"role": "user", "content": prompt}
        extra = {"tools": TOOLS, "metadata": {"llmsim_reasoning": "20"}}  # as chat sees them
        expected = await direct_message(system, [user], extra)
        await expect(answer.locator(".thinking-text")).to_have_text(expected["reasoning_content"])
        await expect(answer.locator("details.thinking")).to_have_attribute("data-state", "done")
        blocks = answer.locator("details.tool-call")
        await expect(blocks).to_have_count(len(expected["tool_calls"]))
        for block, call in zip(await blocks.all(), expected["tool_calls"], strict=True):
            await expect(block.locator("summary")).to_have_text(
                f"tool call {call['function']['name']}"
            )
            await expect(block).to_have_attribute("data-call-id", call["id"])
            await expect(block.locator(".tool-args")).to_have_text(
                pretty(call["function"]["arguments"])
            )
        await expect(answer.locator(".status")).to_have_text(TOOLS_NOT_RUN)
        usage = answer.locator('[data-fact="tokens"]')
        await expect(usage).to_have_text(re.compile(r"\d+ tokens \(\d+ in, \d+ out\)"))
        await blocks.first.locator("summary").click()
        image = await page.screenshot(path=str(tmp_path / "webchat-responses.png"))
        assert png_size(image) == (1100, 760)

        await page.get_by_role("button", name="New chat").click()
        refusal_extra = {"metadata": {"llmsim_refusal": "true"}}
        await set_extra_fields(page, json.dumps(refusal_extra))
        prompt = "Please do something you must refuse"
        await ask(page, prompt)
        answer = last_answer(page)
        await expect(answer).to_have_attribute("data-state", "done", timeout=STREAM_WAIT_MS)
        expected = await direct_message(
            system, [{"role": "user", "content": prompt}], refusal_extra
        )
        refusal = answer.get_by_label("Refusal")
        await expect(refusal.locator(".refusal-label")).to_have_text("Refused")
        await expect(refusal.locator(".refusal-text")).to_have_text(expected["refusal"])
        await expect(answer.locator(".answer")).to_be_empty()

    async def test_errors_are_plain_words(self, system: System, page: Page):
        await open_chat(page, system.gateway_url)
        await use_responses_api(page)
        # The page's own fields of this API are refused before anything is sent...
        await set_extra_fields(page, '{"input": "sneaked in"}')
        await ask(page, "hello?")
        await expect(page.locator("#extra-error")).to_contain_text(
            "The extra request fields may not set “input”: the page sets it itself."
        )
        # ... and a field the gateway refuses comes back in its own words, the text kept.
        await set_extra_fields(page, '{"reasoning": {"effort": "low"}}')
        await ask(page, "hello?")
        notice = page.locator("#notice")
        await expect(notice).to_contain_text(
            "The gateway refused the request: 'reasoning' is not supported"
        )
        await expect(page.get_by_label("Message", exact=True)).to_have_value("hello?")
        await expect(page.locator("article")).to_have_count(0)

        # A response that fails mid-answer keeps what it showed and says why.
        await set_extra_fields(page, "")
        await page.route("**/v1/responses", _fake_failed_response)
        await ask(page, "break, please")
        answer = last_answer(page)
        await expect(answer).to_have_attribute("data-state", "failed")
        await expect(answer.get_by_role("alert")).to_have_text(
            "The model worker stopped mid-answer. Regenerate to try again."
        )
        await expect(answer.locator(".answer")).to_have_text("Half an")
        await expect(answer.locator('[data-fact="model"]')).to_have_text("model fake-model")


def _event(seq: int, type_: str, **fields: Any) -> tuple[int | None, str]:
    return seq, json.dumps({"type": type_, "sequence_number": seq, **fields})


async def _fake_failed_response(route: Route) -> None:
    """Answer the Responses POST with a canned stream that fails after two words."""
    response = {"id": "resp_1-0-0123456789abcdef", "status": "in_progress", "model": "fake-model"}
    item = {"id": "msg_1", "type": "message", "role": "assistant", "content": []}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    failed = {**response, "status": "failed"}
    frames = [
        _event(0, "response.created", response=response),
        _event(1, "response.in_progress", response=response),
        _event(2, "response.output_item.added", output_index=0, item=item),
        _event(3, "response.content_part.added", **where, part={"type": "output_text"}),
        _event(4, "response.output_text.delta", **where, delta="Half an"),
        _event(5, "error", code="worker_lost", message="worker died (worker_lost)", param=None),
        _event(6, "response.failed", response=failed),
        (None, "[DONE]"),
    ]
    await route.fulfill(
        status=200,
        headers={"content-type": "text/event-stream", "x-request-id": "chatcmpl-1-0-0"},
        body=_sse(frames),
    )


def chat_requests(page: Page) -> list[tuple[dict[str, str], dict[str, Any]]]:
    """(headers, body) of the chat requests the page sends from now on."""
    sent: list[tuple[dict[str, str], dict[str, Any]]] = []

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/v1/chat/completions"):
            sent.append((request.headers, request.post_data_json or {}))

    page.on("request", record)
    return sent


def chats(page: Page):  # type: ignore[no-untyped-def]
    """The sidebar's list of recent conversations."""
    return page.get_by_role("navigation", name="Recent chats")


def chat_link(page: Page, title: str):  # type: ignore[no-untyped-def]
    return chats(page).get_by_role("link", name=re.compile(f"^{re.escape(title)}"))


def item_text(item: dict[str, Any]) -> str:
    content = item["content"]
    return content if isinstance(content, str) else "".join(p["text"] for p in content)


async def until_done(page: Page, answers: int) -> None:
    """Wait for the `answers`-th answer on the page to be whole."""
    await expect(page.locator("article.assistant")).to_have_count(answers)
    await expect(last_answer(page)).to_have_attribute("data-state", "done", timeout=STREAM_WAIT_MS)


async def reload(page: Page) -> None:
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")


class TestServerConversations:
    """The chat is kept in a server-side conversation: the page sends each question alone."""

    async def test_a_reload_shows_the_history_and_the_next_question_continues_it(
        self, system: System, page: Page
    ):
        await open_chat(page, system.gateway_url)
        sent = chat_requests(page)
        calls = api_calls(page)
        questions = [
            "Where does a conversation live after a reload?",
            "And who keeps its history?",
            "So what does the third question see?",
        ]
        history: list[dict[str, str]] = []
        for question in questions[:2]:
            await ask(page, question)
            await until_done(page, len(history) // 2 + 1)
            history.append({"role": "user", "content": question})
            answer = await shown_text(page)
            assert answer == await direct(system, history)
            history.append({"role": "assistant", "content": answer})
        conv = conversation_in(page)
        creates = [b for m, t, b in calls if (m, t) == ("POST", "/v1/conversations")]
        assert creates == [{"metadata": {"title": questions[0]}}]  # the first question
        items = await saved_items(system, conv, 4)
        assert [item_text(i) for i in items] == [m["content"] for m in history]

        # A reload shows the conversation again, and the sidebar marks it as the open one.
        await reload(page)
        assert conversation_in(page) == conv
        await expect(page.locator("article.user")).to_have_text(questions[:2])
        await expect(page.locator("article.assistant .answer")).to_have_text(
            [m["content"] for m in history[1::2]]
        )
        await expect(chat_link(page, questions[0])).to_have_attribute("aria-current", "page")

        # The third question continues it: llmsim's answer to the whole five-message chat.
        await ask(page, questions[2])
        await until_done(page, 3)
        history.append({"role": "user", "content": questions[2]})
        assert len(history) == 5
        expected = await direct(system, history)
        assert await shown_text(page) == expected
        # Each request carried its own question alone, in the conversation.
        assert [body["messages"] for _, body in sent] == [
            [{"role": "user", "content": q}] for q in questions
        ]
        assert [headers.get("x-tokenbus-conversation-id") for headers, _ in sent] == [conv] * 3

        # Regenerate takes the last turn out of the conversation, then asks again: the same
        # answer, and the conversation holds it once.
        await page.get_by_role("button", name="Regenerate").click()
        await until_done(page, 3)
        assert await shown_text(page) == expected
        assert sent[-1][0].get("x-tokenbus-conversation-id") == conv
        assert sent[-1][1]["messages"] == [history[-1]]
        items = await saved_items(system, conv, 6)
        assert [item_text(i) for i in items] == [m["content"] for m in history] + [expected]

    async def test_new_chat_starts_another_conversation_and_the_sidebar_opens_either(
        self, system: System, page: Page, tmp_path: Path
    ):
        await open_chat(page, system.gateway_url)
        first, second = "Sidebar: the first chat", "Sidebar: the second chat"
        await ask(page, first)
        await until_done(page, 1)
        answer = await shown_text(page)
        conv1 = conversation_in(page)

        await page.get_by_role("button", name="New chat").click()
        await expect(page.locator("article")).to_have_count(0)
        assert "#" not in page.url
        await expect(chat_link(page, first)).not_to_have_attribute("aria-current", "page")
        await ask(page, second)
        await until_done(page, 1)
        conv2 = conversation_in(page)
        assert conv2 != conv1

        # Both are listed, newest first, with their titles and a relative time.
        link1, link2 = chat_link(page, first), chat_link(page, second)
        await expect(link2).to_have_attribute("aria-current", "page")
        await expect(link2).to_have_attribute("href", f"#conv={conv2}")
        await expect(link2.locator("time")).to_have_text("just now")
        await expect(link1).not_to_have_attribute("aria-current", "page")
        titles = await chats(page).locator(".chat-title").all_inner_texts()
        assert titles.index(second) < titles.index(first)

        # Keys alone open the first one: its history comes back, and it is the open one.
        await link1.focus()
        await page.keyboard.press("Enter")
        await expect(page).to_have_url(re.compile(f"#conv={conv1}$"))
        await expect(page.locator("article.user")).to_have_text([first])
        await expect(page.locator("article.assistant .answer")).to_have_text([answer])
        await expect(link1).to_have_attribute("aria-current", "page")
        await expect(link2).not_to_have_attribute("aria-current", "page")

        # One without a title (made through the API) is listed as such.
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                f"{system.gateway_url}/v1/conversations",
                json={},
                headers={"authorization": "Bearer any-key"},
            )
        untitled = response.raise_for_status().json()["id"]
        await reload(page)
        await expect(chats(page).locator(f'a[href="#conv={untitled}"] .chat-title')).to_have_text(
            "Untitled"
        )
        await expect(link1).to_have_attribute("aria-current", "page")  # still the open one
        await page.screenshot(path=str(tmp_path / "webchat-sidebar.png"))

    async def test_a_stopped_answer_comes_back_as_such(self, system: System, page: Page):
        await open_chat(page, system.gateway_url)
        await page.get_by_label("Model").select_option("large")  # 30 tokens/s: time to Stop
        prompt = "Stop me, then reload"
        await ask(page, prompt)
        await words_shown(page, lambda n: n >= 3)
        await page.get_by_role("button", name="Stop").click()
        await expect(last_answer(page)).to_have_attribute("data-state", "stopped")
        conv = conversation_in(page)
        items = await saved_items(system, conv, 2)
        assert items[1]["status"] == "incomplete"  # the gateway's marker, not half an answer

        await reload(page)
        await expect(page.locator("article.user")).to_have_text([prompt])
        answer = last_answer(page)
        await expect(answer).to_have_attribute("data-state", "stopped")
        await expect(answer.locator(".status")).to_have_text("This answer was cancelled.")
        await expect(answer.locator(".answer")).to_be_empty()

        # The next question goes on without the marker (the model never sees it).
        await page.get_by_label("Model").select_option("auto")
        follow = "Now answer in full"
        await ask(page, follow)
        await until_done(page, 2)
        history = [{"role": "user", "content": prompt}, {"role": "user", "content": follow}]
        assert await shown_text(page) == await direct(system, history)

    async def test_a_question_while_the_conversation_is_busy_waits_for_it(
        self, system: System, page: Page
    ):
        await open_chat(page, system.gateway_url)
        first = "Busy: the first question"
        await ask(page, first)
        await until_done(page, 1)
        history = [{"role": "user", "content": first}]
        history.append({"role": "assistant", "content": await shown_text(page)})
        conv = conversation_in(page)
        await saved_items(system, conv, 2)

        # Another client's turn holds the conversation (slowly, on the large model)...
        other = {"role": "user", "content": "Another client's question"}

        async def elsewhere() -> str:
            async with httpx.AsyncClient(timeout=30) as client:
                response = await client.post(
                    f"{system.gateway_url}/v1/chat/completions",
                    json={"model": "large", "messages": [other]},
                    headers={"authorization": "Bearer any-key", "x-tokenbus-conversation-id": conv},
                )
            return str(response.raise_for_status().json()["choices"][0]["message"]["content"])

        async def streaming() -> bool:
            return (await llmsim_stats(system.llmsim_url))["open_streams"] == 1

        before = await llmsim_stats(system.llmsim_url)
        held = asyncio.create_task(elsewhere())
        await eventually(streaming, within=10)
        # ... so the page's question waits (409 conversation_busy), then goes after it.
        second = "Busy: the second question"
        await ask(page, second)
        status = last_answer(page).locator(".status")
        await expect(status).to_have_text("waiting for the previous turn to be saved…")
        history += [other, {"role": "assistant", "content": await held}]
        await until_done(page, 2)
        history.append({"role": "user", "content": second})
        assert await shown_text(page) == await direct(system, history)
        await expect(status).to_be_empty()
        after = await llmsim_stats(system.llmsim_url)
        assert after["streams_closed_early"] == before["streams_closed_early"]

    async def test_the_responses_api_keeps_the_conversation_across_a_reload(
        self, system: System, page: Page
    ):
        await open_chat(page, system.gateway_url)
        calls = api_calls(page)
        await use_responses_api(page)
        first = "Responses in a conversation: what is kept?"
        await ask(page, first)
        await until_done(page, 1)
        history = [{"role": "user", "content": first}]
        answer = await shown_text(page)
        assert answer == await direct(system, history)
        conv = conversation_in(page)
        await saved_items(system, conv, 2)

        await reload(page)
        await expect(page.locator("#api-active")).to_be_visible()  # still the Responses API
        await expect(page.locator("article.user")).to_have_text([first])
        await expect(page.locator("article.assistant .answer")).to_have_text([answer])
        second = "And after the reload?"
        await ask(page, second)
        await until_done(page, 2)
        history += [{"role": "assistant", "content": answer}, {"role": "user", "content": second}]
        assert await shown_text(page) == await direct(system, history)

        posts = [b for m, t, b in calls if (m, t) == ("POST", "/v1/responses")]
        assert posts == [
            {
                "model": "auto",
                "input": [{"role": "user", "content": q}],
                "conversation": conv,
                "stream": True,
            }
            for q in (first, second)
        ]
        assert not [c for c in calls if c[1].startswith("/v1/chat/")]
        items = await saved_items(system, conv, 4)
        assert [item_text(i) for i in items[:3]] == [m["content"] for m in history]
