"""Conversations end to end: the official SDK through two keyed gateway nodes, a real broker, a
worker and llmsim. A turn's answer is llmsim's answer to the explicit history, whichever API
(Responses, `previous_response_id`, chat completions with `x-tokenbus-conversation-id`) and
whichever node asked; a long conversation is folded into one summary per fold and goes on
across nodes and a worker restart; a conversation answers one request at a time; other
tenants' and unknown ids are 404s, bad items 400s, and neither writes anything; the text is
sealed at rest."""

import asyncio
import base64
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from contracts import TOPICS, ChatRequested, UsageRecorded, response_id
from services.gateway.conversations.memory import SUMMARY_PROMPT
from services.gateway.conversations.sealing import Sealer
from services.gateway.conversations.store import conversation_items, conversations
from services.tenants.database import open_store
from services.tenants.settings import TenantStoreSettings
from tests.capabilities import in_ci
from tests.e2e.helpers import complete, eventually
from tests.kafka_records import Record, record_events
from tests.postgres import find_bin_dir, fresh_database
from tests.system import System, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

PEPPER, ID_SECRET = "e2e-conv-pepper-0123456789", "e2e-conv-id-secret-0123456789"
KEYRING = "e2e:" + base64.b64encode(b"tokenbus-e2e-conversations-key!!").decode()
# Small enough that a few long turns fold; large enough for llmsim's summary (always
# SUMMARY_MAX_TOKENS = 512 words, about 670 estimated tokens) and some recent turns beside it.
BUDGET = 2000
# "small" answers quickly; "large" (llmsim-large) at 50 tokens/s, so that a turn holds its
# conversation long enough for a second request to find it busy.
SLOW = '{"llmsim-large": {"ttft_ms": 20, "tokens_per_second": 50}}'
SUMMARY_HEAD = "Summary of the conversation so far:\n"

Json = dict[str, Any]


@pytest.fixture(scope="module")
async def database_url(request: pytest.FixtureRequest, tmp_path_factory: Any) -> str:
    """PostgreSQL when it is available (as in production), else a SQLite file both nodes
    share; under CI=true PostgreSQL is required."""
    if (
        in_ci()
        or os.environ.get("TEST_POSTGRES_URL")
        or os.environ.get("DATABASE_URL")
        or find_bin_dir()
    ):
        return await fresh_database(request.getfixturevalue("postgres_server"))
    return f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('conversations')}/conversations.db"


@pytest.fixture(scope="module")
def system(kafka_bootstrap: str, logs_dir: Path, database_url: str) -> Iterator[System]:
    """Two gateway nodes in keys mode (reply partitions 0,2 and 1,3) on one database, with a
    keyring of their own and a small context budget; one worker."""
    with running_system(
        kafka_bootstrap,
        logs_dir,
        tag="conv",
        gateways=2,
        llmsim_env={
            "TOKENBUS_LLMSIM_TTFT_MS": "5",
            "TOKENBUS_LLMSIM_TOKENS_PER_SECOND": "2000",
            "TOKENBUS_LLMSIM_PROFILES": SLOW,
        },
        gateway_env={
            "TOKENBUS_AUTH_MODE": "keys",
            "TOKENBUS_DATABASE_URL": database_url,
            "TOKENBUS_KEY_PEPPER": PEPPER,
            "TOKENBUS_ID_SECRET": ID_SECRET,
            "TOKENBUS_CONVERSATION_KEYS": KEYRING,
            "TOKENBUS_CONTEXT_BUDGET_TOKENS": str(BUDGET),
        },
    ) as sys_:
        yield sys_


async def _new_key(database_url: str) -> str:
    """A key of a fresh tenant without limits."""
    settings = TenantStoreSettings(database_url=database_url, key_pepper=PEPPER)  # type: ignore[call-arg]
    async with open_store(settings) as store:
        _, key = await store.create_key(f"t-{uuid.uuid4().hex[:8]}")
    return key


@pytest.fixture(scope="module")
async def key(system: System, database_url: str) -> str:
    return await _new_key(database_url)


@pytest.fixture(scope="module")
async def other_key(system: System, database_url: str) -> str:
    return await _new_key(database_url)


@pytest.fixture(scope="module")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The gateways' database, to look at what they stored."""
    engine = create_async_engine(database_url)
    yield engine
    await engine.dispose()


async def settled(engine: AsyncEngine, conv_id: str) -> None:
    """Wait until no request holds the conversation. A turn's items are appended and its hold
    released by a background task after the answer has returned (memory.finish, fired in
    responses/create.py and memory.submit_chat), so a next turn sent at once may find it busy:
    test_the_next_turn_may_follow_as_soon_as_the_answer_has_returned fails on that. The other
    tests wait for this instead, to check what they are about."""

    async def free() -> bool:
        async with engine.connect() as conn:
            query = select(conversations.c.busy_request).where(conversations.c.id == conv_id)
            return (await conn.execute(query)).scalar_one_or_none() is None

    try:
        await eventually(free, within=15)
    except TimeoutError:
        raise AssertionError(
            f"{conv_id} is still held 15 s after its answer ended: its turn was not appended"
        ) from None


@contextlib.asynccontextmanager
async def client(base_url: str, api_key: str) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=60
    ) as sdk_client:
        yield sdk_client


def auth(api_key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {api_key}"}


def conv_header(conv_id: str) -> dict[str, str]:
    return {"x-tokenbus-conversation-id": conv_id}


def user(text: str) -> Json:
    return {"role": "user", "content": text}


def assistant(text: str) -> Json:
    return {"role": "assistant", "content": text}


async def direct(system: System, messages: list[Json], **params: Any) -> str:
    """llmsim's own answer to these messages (its answer depends on them only)."""
    answer = await complete(system.llmsim_url, messages, model="x", **params)
    return str(answer.choices[0].message.content)


def plain(messages: Any) -> list[Json]:
    """Messages as role and text (content parts joined as llmsim reads them)."""
    out = []
    for message in messages:
        data = message if isinstance(message, dict) else message.model_dump()
        content = data.get("content")
        if isinstance(content, list):
            content = "\n".join(p.get("text", "") for p in content if p.get("type") == "text")
        out.append({"role": data["role"], "content": content})
    return out


def item_texts(items: list[Any]) -> list[tuple[str, str, str]]:
    """(type, role, text) of conversation items, as the SDK returns them. The content's shape
    is the concern of test_items_have_openai_s_shape; here a bare string passes too."""
    out = []
    for item in items:
        data = item.model_dump(warnings=False)
        content = data.get("content") or ()
        if isinstance(content, str):
            text = content
        else:
            text = "".join(part.get("text") or "" for part in content)
        out.append((data["type"], data.get("role"), text))
    return out


async def all_items(c: AsyncOpenAI, conv_id: str) -> list[tuple[str, str, str]]:
    page = await c.conversations.items.list(conv_id, order="asc", limit=100)
    assert page.has_more is False
    return item_texts(page.data)


async def listed_ids(system: System, api_key: str) -> list[str]:
    """The tenant's conversations, by the extension `GET /v1/conversations`."""
    async with httpx.AsyncClient(timeout=30) as http:
        resp = await http.get(
            f"{system.gateway_url}/v1/conversations", params={"limit": 100}, headers=auth(api_key)
        )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["object"] == "list" and body["has_more"] is False
    return [c["id"] for c in body["data"]]


def topic(system: System, name: str) -> str:
    return getattr(TOPICS.with_prefix(system.prefix), name).name  # type: ignore[no-any-return]


def requested(records: list[Record]) -> list[ChatRequested]:
    return [ChatRequested.model_validate_json(r.value or b"") for r in records]


def is_summary(request: ChatRequested) -> bool:
    return request.messages[0].role == "system" and request.messages[0].content == SUMMARY_PROMPT


def words(tag: str, n: int) -> str:
    """`n` distinct words of a turn: its text is known and its length chosen."""
    return " ".join(f"{tag}w{i:03d}" for i in range(n))


class TestTurns:
    async def test_a_conversation_s_second_turn_answers_the_whole_history_on_another_node(
        self, system: System, key: str, engine: AsyncEngine
    ) -> None:
        first, second = "My name is Ada and I like owls.", "What is my name?"
        node_a, node_b = (g.url for g in system.gateways)
        async with client(node_a, key) as a, client(node_b, key) as b:
            conv = await a.conversations.create()
            assert conv.id.startswith("conv_") and conv.object == "conversation"
            r1 = await a.responses.create(conversation=conv.id, input=first, model="small")
            await settled(engine, conv.id)
            r2 = await b.responses.create(conversation=conv.id, input=second, model="small")
            await settled(engine, conv.id)
            answer1 = await direct(system, [user(first)])
            answer2 = await direct(system, [user(first), assistant(answer1), user(second)])
            assert r1.output_text == answer1
            assert r2.output_text == answer2
            assert r2.conversation is not None and r2.conversation.id == conv.id
            for c in (a, b):
                assert await all_items(c, conv.id) == [
                    ("message", "user", first),
                    ("message", "assistant", answer1),
                    ("message", "user", second),
                    ("message", "assistant", answer2),
                ]

    async def test_the_next_turn_may_follow_as_soon_as_the_answer_has_returned(
        self, system: System, key: str
    ) -> None:
        """As OpenAI's: once a turn's answer has returned (whole, or its stream has ended) the
        conversation holds the turn and takes the next one: no 409, nothing missing."""
        node_a, node_b = (g.url for g in system.gateways)
        async with client(node_a, key) as a, client(node_b, key) as b:
            conv = await a.conversations.create()
            sent = []
            for n, c in enumerate((a, b)):
                sent.append(f"Whole {n}.")
                await c.responses.create(conversation=conv.id, input=sent[-1], model="small")
            sent.append("Streamed.")
            stream = await b.responses.create(
                conversation=conv.id, input=sent[-1], model="small", stream=True
            )
            assert [e.type async for e in stream][-1] == "response.completed"
            sent.append("Chat whole.")
            await a.chat.completions.create(
                model="small",
                messages=[user(sent[-1])],  # type: ignore[list-item]
                extra_headers=conv_header(conv.id),
            )
            sent.append("Chat streamed.")
            chunks = await b.chat.completions.create(
                model="small",
                messages=[user(sent[-1])],  # type: ignore[list-item]
                stream=True,
                extra_headers=conv_header(conv.id),
            )
            assert [c.choices[0].finish_reason async for c in chunks if c.choices][-1] == "stop"
            items = await all_items(a, conv.id)
        assert [text for _, role, text in items if role == "user"] == sent
        assert [role for _, role, _ in items] == ["user", "assistant"] * len(sent)

    async def test_items_have_openai_s_shape(
        self, system: System, key: str, engine: AsyncEngine
    ) -> None:
        """Every message item, whichever API made it, is listed as OpenAI lists one: an id, a
        status, and its content as a list of parts (`input_text` from the user, `output_text`
        from the assistant)."""
        async with client(system.gateway_url, key) as c:
            conv = await c.conversations.create(items=[user("Given at creation.")])
            r = await c.responses.create(conversation=conv.id, input="By Responses.", model="small")
            await settled(engine, conv.id)
            chat = await c.chat.completions.create(
                model="small",
                messages=[user("By chat.")],  # type: ignore[list-item]
                extra_headers=conv_header(conv.id),
            )
            await settled(engine, conv.id)
        async with httpx.AsyncClient(timeout=30) as http:
            resp = await http.get(
                f"{system.gateways[1].url}/v1/conversations/{conv.id}/items",
                params={"order": "asc"},
                headers=auth(key),
            )
        assert resp.status_code == 200, resp.text
        items = resp.json()["data"]
        expected = [
            ("user", "input_text", "Given at creation."),
            ("user", "input_text", "By Responses."),
            ("assistant", "output_text", r.output_text),
            ("user", "input_text", "By chat."),
            ("assistant", "output_text", chat.choices[0].message.content),
        ]
        assert len(items) == len(expected), items
        for item, (role, part, text) in zip(items, expected, strict=True):
            assert item["type"] == "message" and item["role"] == role, item
            assert item["id"].startswith("msg_") and item["status"] == "completed", item
            assert isinstance(item["content"], list), item
            assert [(p["type"], p["text"]) for p in item["content"]] == [(part, text)], item
        async with client(system.gateway_url, key) as c:
            page = await c.conversations.items.list(conv.id, order="asc")
            dumped = [i.model_dump() for i in page.data]  # warnings are errors here
        assert [d["id"] for d in dumped] == [i["id"] for i in items]

    async def test_the_same_input_in_two_turns_is_kept_twice(
        self, system: System, key: str, engine: AsyncEngine
    ) -> None:
        async with client(system.gateway_url, key) as c:
            conv = await c.conversations.create(items=[user("Hi")])
            answers = []
            for _ in range(2):
                r = await c.responses.create(conversation=conv.id, input="Hi", model="small")
                await settled(engine, conv.id)
                answers.append(r.output_text)
            page = await c.conversations.items.list(conv.id, order="asc")
        history = [user("Hi"), user("Hi")]
        assert answers[0] == await direct(system, history)
        history += [assistant(answers[0]), user("Hi")]
        assert answers[1] == await direct(system, history)
        assert [text for _, _, text in item_texts(page.data)] == [
            "Hi",
            "Hi",
            answers[0],
            "Hi",
            answers[1],
        ]
        assert len({item.id for item in page.data}) == 5

    async def test_previous_response_id_continues_with_the_same_history(
        self, system: System, key: str
    ) -> None:
        first, second = "Remember the number 41.", "Add one to it."
        answer1 = await direct(system, [user(first)])
        answer2 = await direct(system, [user(first), assistant(answer1), user(second)])
        async with client(system.gateways[0].url, key) as a:
            r1 = await a.responses.create(input=first, model="small")
        async with client(system.gateways[1].url, key) as b:
            r2 = await b.responses.create(previous_response_id=r1.id, input=second, model="small")
        assert r1.output_text == answer1
        assert r2.output_text == answer2
        assert r2.previous_response_id == r1.id

    async def test_a_deleted_conversation_is_a_404_everywhere(
        self, system: System, key: str, engine: AsyncEngine
    ) -> None:
        async with client(system.gateway_url, key) as a:
            conv = await a.conversations.create(items=[user("Keep this for a moment.")])
            await a.responses.create(conversation=conv.id, input="And this.", model="small")
            await settled(engine, conv.id)
            [item_id, *_] = [i.id for i in (await a.conversations.items.list(conv.id)).data]
            deleted = await a.conversations.delete(conv.id)
            assert deleted.id == conv.id and deleted.deleted is True
        assert conv.id not in await listed_ids(system, key)
        for node in system.gateways:
            async with client(node.url, key) as c:
                with pytest.raises(openai.NotFoundError):
                    await c.conversations.retrieve(conv.id)
                with pytest.raises(openai.NotFoundError):
                    await c.conversations.items.list(conv.id)
                with pytest.raises(openai.NotFoundError):
                    await c.conversations.items.retrieve(item_id, conversation_id=conv.id)
                with pytest.raises(openai.NotFoundError):
                    await c.conversations.delete(conv.id)
                with pytest.raises(openai.NotFoundError) as refused:
                    await c.responses.create(conversation=conv.id, input="Hello?", model="small")
                assert refused.value.code == "not_found"
                with pytest.raises(openai.NotFoundError):
                    await c.chat.completions.create(
                        model="small",
                        messages=[user("Hello?")],  # type: ignore[list-item]
                        extra_headers=conv_header(conv.id),
                    )


class TestChatCompletions:
    async def test_the_conversation_header_gives_chat_completions_the_history(
        self, system: System, key: str, engine: AsyncEngine
    ) -> None:
        first, second = "Chat: the sky is green here.", "Chat: what colour is the sky?"
        async with client(system.gateway_url, key) as a:
            conv = await a.conversations.create()
            c1 = await a.chat.completions.create(
                model="small",
                messages=[user(first)],  # type: ignore[list-item]
                extra_headers=conv_header(conv.id),
            )
        await settled(engine, conv.id)
        answer1 = await direct(system, [user(first)])
        answer2 = await direct(system, [user(first), assistant(answer1), user(second)])
        assert c1.choices[0].message.content == answer1
        async with client(system.gateways[1].url, key) as b:
            stream = await b.chat.completions.create(
                model="small",
                messages=[user(second)],  # type: ignore[list-item]
                stream=True,
                extra_headers=conv_header(conv.id),
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == answer2
            await settled(engine, conv.id)
            assert await all_items(b, conv.id) == [
                ("message", "user", first),
                ("message", "assistant", answer1),
                ("message", "user", second),
                ("message", "assistant", answer2),
            ]

    async def test_either_api_continues_a_conversation_the_other_began(
        self, system: System, key: str, engine: AsyncEngine
    ) -> None:
        one, two, three = "Chat first: I have two cats.", "Responses: how many?", "Chat: names?"
        async with (
            client(system.gateways[0].url, key) as a,
            client(system.gateways[1].url, key) as b,
        ):
            conv = await a.conversations.create()
            c1 = await a.chat.completions.create(
                model="small",
                messages=[user(one)],  # type: ignore[list-item]
                extra_headers=conv_header(conv.id),
            )
            await settled(engine, conv.id)
            r2 = await b.responses.create(conversation=conv.id, input=two, model="small")
            await settled(engine, conv.id)
            c3 = await a.chat.completions.create(
                model="small",
                messages=[user(three)],  # type: ignore[list-item]
                extra_headers=conv_header(conv.id),
            )
        history = [user(one)]
        history.append(assistant(await direct(system, history)))
        assert c1.choices[0].message.content == history[-1]["content"]
        history.append(user(two))
        history.append(assistant(await direct(system, history)))
        assert r2.output_text == history[-1]["content"]
        history.append(user(three))
        assert c3.choices[0].message.content == await direct(system, history)


class TestMemory:
    async def test_a_long_conversation_is_folded_once_and_goes_on_across_nodes_and_a_restart(
        self, system: System, key: str, engine: AsyncEngine
    ) -> None:
        """Long turns 1, 2 and 5, short ones between: turn 5 no longer fits the budget and
        folds turns 1 and 2 (one summary request); turns 6 and 7 fit beside the summary and
        make none. Turns alternate between the nodes; the worker restarts before turn 7."""
        sizes = {1: 300, 2: 300, 3: 60, 4: 60, 5: 330, 6: 60, 7: 40}
        inputs = {t: f"Turn {t}. {words(f't{t}', n)}" for t, n in sizes.items()}
        rids: dict[int, str] = {}
        answers: dict[int, str] = {}
        async with (
            record_events(system.bootstrap, topic(system, "requests")) as asked,
            record_events(system.bootstrap, topic(system, "usage")) as billed,
        ):
            async with client(system.gateway_url, key) as c:
                conv = await c.conversations.create()
            for t, text in inputs.items():
                if t == 7:
                    await asyncio.to_thread(system.restart_workers)
                async with client(system.gateways[t % 2].url, key) as c:
                    r = await c.responses.create(
                        conversation=conv.id, input=text, model="small", max_output_tokens=40
                    )
                assert r.status == "incomplete", r.status  # cut at max_output_tokens
                await settled(engine, conv.id)
                rids[t], answers[t] = r.id, r.output_text

            def seen_all(records: Any) -> bool:
                return {response_id(q.request_id) for q in requested(records)} >= set(rids.values())

            await asked.wait_for(seen_all)

        requests = sorted(requested(asked.records), key=lambda q: q.ts)
        turn_of = {rid: t for t, rid in rids.items()}
        kinds = [
            "summary" if is_summary(q) else turn_of.get(response_id(q.request_id)) for q in requests
        ]
        by_turn = {turn_of[response_id(q.request_id)]: q for q in requests if not is_summary(q)}
        summaries = [q for q in requests if is_summary(q)]
        assert summaries and {q.model for q in summaries} == {"small"}
        folded = "\n".join(str(q.messages[1].content) for q in summaries)
        assert inputs[1] in folded and inputs[2] in folded and answers[1] in folded
        assert inputs[3] not in folded
        last = summaries[-1]  # the summary turn 5 and later get
        summary = await direct(
            system,
            plain(last.messages),
            **{k: v for k, v in last.params.items() if k.startswith("max")},
        )

        # Before the fold: the whole history; from turn 5: the summary and the recent turns.
        history: list[Json] = []
        for t in range(1, 8):
            if t == 5:
                history = history[4:]  # turns 1 and 2 are in the summary now
            head = [{"role": "system", "content": SUMMARY_HEAD + summary}] if t >= 5 else []
            sent = [*head, *history, user(inputs[t])]
            assert plain(by_turn[t].messages) == sent, f"turn {t}"
            assert answers[t] == await direct(system, sent, max_completion_tokens=40), t
            history += [user(inputs[t]), assistant(answers[t])]
        assert len(plain(by_turn[7].messages)) < 2 * 7  # fewer than all the turns

        def usage_of_every_turn(records: Any) -> bool:
            seen = {UsageRecorded.model_validate_json(r.value).request_id for r in records}
            return {q.request_id for q in requests} <= seen

        usage = [
            UsageRecorded.model_validate_json(r.value or b"")
            for r in await billed.wait_for(usage_of_every_turn)
        ]
        summarised = {
            turn_of[response_id(u.request_id)]: u
            for u in usage
            if response_id(u.request_id) in turn_of
        }
        assert {t: u.summarised_turns for t, u in summarised.items()} == {
            1: 0,
            2: 0,
            3: 0,
            4: 0,
            5: 2,
            6: 0,
            7: 0,
        }
        assert summarised[5].api == "responses"
        summary_ids = {q.request_id for q in summaries}
        assert [u.summarised_turns for u in usage if u.request_id in summary_ids] == [0] * len(
            summaries
        )  # billed to the tenant, each as its own request
        assert {u.tenant_id for u in usage} == {by_turn[1].tenant_id}

        async with client(system.gateways[1].url, key) as c:
            kept = await all_items(c, conv.id)  # the items stay, the summary is beside them
        assert kept == [
            entry
            for t in range(1, 8)
            for entry in (("message", "user", inputs[t]), ("message", "assistant", answers[t]))
        ]

        async with engine.connect() as conn:  # the summary is stored sealed
            query = select(conversations.c.summary).where(conversations.c.id == conv.id)
            sealed = bytes((await conn.execute(query)).scalar_one())
        assert summary[:40].encode() not in sealed
        assert Sealer.from_keyring(KEYRING).open(sealed, f"{conv.id}/summary".encode()) == (
            summary.encode()
        )

        # One fold, one summary request, made by turn 5 just before its own request; turns 6
        # and 7 fit beside the summary and make none.
        assert kinds == [1, 2, 3, 4, "summary", 5, 6, 7], kinds


class TestOneAtATime:
    async def test_a_second_request_meanwhile_is_a_409_and_queues_nothing(
        self, system: System, key: str, engine: AsyncEngine
    ) -> None:
        async with (
            client(system.gateways[0].url, key) as a,
            client(system.gateways[1].url, key) as b,
        ):
            conv = await a.conversations.create()
            async with record_events(system.bootstrap, topic(system, "requests")) as asked:
                # "large" at 50 tokens/s: each answer holds the conversation for 2 seconds.
                results = await asyncio.gather(
                    *(
                        c.responses.create(
                            conversation=conv.id,
                            input=f"Race {n}: write at length.",
                            model="large",
                            max_output_tokens=100,
                        )
                        for n, c in enumerate((a, b))
                    ),
                    return_exceptions=True,
                )
                won = [r for r in results if not isinstance(r, BaseException)]
                lost = [r for r in results if isinstance(r, BaseException)]
                assert len(won) == 1 and len(lost) == 1, results
                [busy] = lost
                assert isinstance(busy, openai.ConflictError), repr(busy)
                assert busy.status_code == 409 and busy.code == "conversation_busy"
                assert isinstance(busy.body, dict) and busy.body.get("param") == "conversation"
                await settled(engine, conv.id)
                third = await b.responses.create(
                    conversation=conv.id, input="Third: and now?", model="small"
                )
                assert third.status == "completed"
                await asked.wait_for(2)
                await settled(engine, conv.id)
            assert len(asked.records) == 2  # the winner's and the third's: the 409 queued none
            [winner] = won
            winner_input = (
                "Race 0: write at length." if results[0] is winner else ("Race 1: write at length.")
            )
            assert await all_items(a, conv.id) == [
                ("message", "user", winner_input),
                ("message", "assistant", winner.output_text),
                ("message", "user", "Third: and now?"),
                ("message", "assistant", third.output_text),
            ]
        expected = await direct(
            system,
            [user(winner_input), assistant(winner.output_text), user("Third: and now?")],
        )
        assert third.output_text == expected


def _fake_id(real: str) -> str:
    return real[:-1] + ("0" if real[-1] != "0" else "1")


class TestRefusals:
    async def test_another_tenant_s_or_an_unknown_conversation_is_the_same_404_and_untouched(
        self, system: System, key: str, other_key: str
    ) -> None:
        async with client(system.gateway_url, key) as mine:
            conv = await mine.conversations.create(
                items=[user("Mine, not yours.")], metadata={"owner": "me"}
            )
            [item] = (await mine.conversations.items.list(conv.id)).data
            before = await all_items(mine, conv.id)
        missing = _fake_id(conv.id)
        async with httpx.AsyncClient(timeout=30) as http:  # unknown or malformed, to anyone
            for conv_id in (missing, "conv_nope", "not-a-conversation-" + "x" * 80):
                for tail in ("", "/items", f"/items/{item.id}"):
                    resp = await http.get(
                        f"{system.gateway_url}/v1/conversations/{conv_id}{tail}",
                        headers=auth(key),
                    )
                    assert resp.status_code == 404, (conv_id, tail, resp.text)
                    error = resp.json()["error"]
                    assert set(error) == {"message", "type", "param", "code"}, error
                    assert error["code"] == "not_found"
            resp = await http.get(
                f"{system.gateway_url}/v1/conversations/{conv.id}/items/msg_{'0' * 48}",
                headers=auth(key),
            )
            assert resp.status_code == 404 and resp.json()["error"]["param"] == "item_id"
        theirs_before = await listed_ids(system, other_key)
        calls: list[tuple[str, str, Json | None]] = [
            ("GET", "", None),
            ("POST", "", {"metadata": {"owner": "them"}}),
            ("DELETE", "", None),
            ("GET", "/items", None),
            ("POST", "/items", {"items": [user("Sneaked in.")]}),
            ("GET", f"/items/{item.id}", None),
            ("DELETE", f"/items/{item.id}", None),
        ]
        async with httpx.AsyncClient(timeout=30) as http:
            for node in system.gateways:
                for method, tail, body in calls:
                    answers = [
                        await http.request(
                            method,
                            f"{node.url}/v1/conversations/{conv_id}{tail}",
                            json=body,
                            headers=auth(other_key),
                        )
                        for conv_id in (conv.id, missing)
                    ]
                    theirs, nothing = answers
                    assert theirs.status_code == nothing.status_code == 404, (method, tail)
                    error = theirs.json()["error"]
                    assert set(error) == {"message", "type", "param", "code"}, error
                    assert error["type"] == "invalid_request_error"
                    assert error["code"] == "not_found"
                    assert theirs.text.replace(conv.id, "ID") == nothing.text.replace(missing, "ID")
                for conv_id in (conv.id, missing):
                    resp = await http.post(
                        f"{node.url}/v1/responses",
                        json={"model": "small", "input": "Hi", "conversation": conv_id},
                        headers=auth(other_key),
                    )
                    assert resp.status_code == 404, resp.text
                    assert resp.json()["error"]["code"] == "not_found"
                    chat = await http.post(
                        f"{node.url}/v1/chat/completions",
                        json={"model": "small", "messages": [user("Hi")]},
                        headers={**auth(other_key), **conv_header(conv_id)},
                    )
                    assert chat.status_code == 404, chat.text
                    assert chat.json()["error"]["code"] == "not_found"
        async with client(system.gateways[1].url, other_key) as theirs_sdk:
            with pytest.raises(openai.NotFoundError):
                await theirs_sdk.conversations.retrieve(conv.id)
            with pytest.raises(openai.NotFoundError):
                await theirs_sdk.conversations.items.list(conv.id)
        assert await listed_ids(system, other_key) == theirs_before
        async with client(system.gateways[1].url, key) as mine:
            still = await mine.conversations.retrieve(conv.id)
            assert still.model_dump() == conv.model_dump()
            assert await all_items(mine, conv.id) == before
            assert (await mine.conversations.items.list(conv.id)).data[0].id == item.id

    async def test_malformed_items_are_a_400_and_write_nothing(
        self, system: System, key: str
    ) -> None:
        before = await listed_ids(system, key)
        bad_items: list[tuple[list[Json], str]] = [
            ([{"type": "banana"}], "items.0.type"),
            ([user("fine"), {"role": "wizard", "content": "x"}], "items.1.role"),
            ([user("fine"), {"role": "user", "content": 7}], "items.1.content"),
        ]
        async with httpx.AsyncClient(timeout=30) as http:
            for items, param in bad_items:
                for node in system.gateways:
                    resp = await http.post(
                        f"{node.url}/v1/conversations", json={"items": items}, headers=auth(key)
                    )
                    assert resp.status_code == 400, resp.text
                    error = resp.json()["error"]
                    assert set(error) == {"message", "type", "param", "code"}, error
                    assert error["type"] == "invalid_request_error"
                    assert error["param"] == param, error
                    assert error["message"] and error["code"]
        async with client(system.gateway_url, key) as c:
            with pytest.raises(openai.BadRequestError):
                await c.conversations.create(items=[{"type": "banana"}])  # type: ignore[list-item]
            assert await listed_ids(system, key) == before  # no conversation was made

            conv = await c.conversations.create(items=[user("One good item.")])
            kept = await all_items(c, conv.id)
            for items, param in bad_items:
                with pytest.raises(openai.BadRequestError) as refused:
                    await c.conversations.items.create(conv.id, items=items)  # type: ignore[arg-type]
                assert isinstance(refused.value.body, dict)
                assert refused.value.body.get("param") == param
            assert await all_items(c, conv.id) == kept  # nothing half-added


class TestAtRest:
    async def test_conversation_text_is_sealed_in_the_database(
        self, system: System, key: str, database_url: str, engine: AsyncEngine
    ) -> None:
        phrase = f"Purple-quokka-{uuid.uuid4().hex[:12]} sings at midnight"
        async with client(system.gateway_url, key) as c:
            conv = await c.conversations.create(items=[user(f"Created with: {phrase}")])
            await c.conversations.items.create(conv.id, items=[user(f"Added with: {phrase}")])
            await c.chat.completions.create(
                model="small",
                messages=[user(f"Chat with: {phrase}")],  # type: ignore[list-item]
                extra_headers=conv_header(conv.id),
            )
            await settled(engine, conv.id)
            # store=False: the Responses index (which keeps stored inputs) gets nothing.
            await c.responses.create(
                conversation=conv.id, input=f"Responses with: {phrase}", model="small", store=False
            )
            await settled(engine, conv.id)
            shown = await all_items(c, conv.id)
        assert sum(phrase in text for _, _, text in shown) == 4
        assert len(shown) == 6

        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(conversation_items.c.id, conversation_items.c.sealed).where(
                        conversation_items.c.conversation_id == conv.id
                    )
                )
            ).all()
            everything = (await conn.execute(select(conversation_items.c.sealed))).scalars()
            blobs = [bytes(b) for b in everything]
            summaries = (await conn.execute(select(conversations.c.summary))).scalars()
            blobs += [bytes(s) for s in summaries if s is not None]
        assert len(rows) == 6
        needle = phrase.encode()
        assert not any(needle in blob for blob in blobs)
        assert not any(needle.lower() in blob.lower() for blob in blobs)
        # The rows do hold the text: sealed under the keyring, bound to their own row.
        sealer = Sealer.from_keyring(KEYRING)
        opened = [sealer.open_json(bytes(blob), f"{conv.id}/{iid}".encode()) for iid, blob in rows]
        assert sum(phrase in str(item) for item in opened) == 4

        if database_url.startswith("sqlite"):  # the file as a copy of it would be
            path = Path(database_url.split("///", 1)[1])
            for name in (path, Path(f"{path}-wal"), Path(f"{path}-journal")):
                if name.exists():
                    assert needle not in name.read_bytes(), name
