"""The Conversations API routes over a real store (SQLite), with httpx and the official SDK.

The app here holds only the conversations router and the common error handlers; the caller
is the bearer key itself (`Bearer a` is tenant a), so the SDK's `api_key` picks the tenant.
"""

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import httpx2
import openai
import pytest
from fastapi import FastAPI, Request

from services.common.database import make_engine, migrate
from services.common.openai_errors import install_error_handlers
from services.gateway.auth import bearer, caller_from_request
from services.gateway.callers import Caller
from services.gateway.conversations import routes
from services.gateway.conversations.sealing import DEV_KEYRING, Sealer
from services.gateway.conversations.store import ConversationStore
from services.gateway.node import get_node

BASE = "/v1/conversations"
USER_HI: dict[str, Any] = {"role": "user", "content": "hi"}
ITEMS: list[dict[str, Any]] = [
    USER_HI,
    {
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "Hello! How can I help?"}],
    },
    {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": '{"a": 1}'},
    {"type": "function_call_output", "call_id": "call_1", "output": '{"sum": 3}'},
]


def build_app(conversations: ConversationStore | None) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(routes.router)
    node = SimpleNamespace(conversations=conversations)

    async def fake_node() -> Any:
        return node

    async def fake_caller(request: Request) -> Caller:
        return Caller(bearer(request.headers.get("authorization")) or "nobody")

    app.dependency_overrides[get_node] = fake_node
    app.dependency_overrides[caller_from_request] = fake_caller
    return app


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[FastAPI]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'conversations.db'}")
    await migrate(engine)
    yield build_app(ConversationStore(engine, Sealer.from_keyring(DEV_KEYRING)))
    await engine.dispose()


def _client(app: FastAPI, tenant: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app),
        base_url="http://gateway",
        headers={"authorization": f"Bearer {tenant}"},
    )


@pytest.fixture
async def a(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app, "a") as client:
        yield client


@pytest.fixture
async def b(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app, "b") as client:
        yield client


@pytest.fixture
async def sdk(app: FastAPI) -> AsyncIterator[openai.AsyncOpenAI]:
    # The SDK's HTTP client is httpx2 (a fork of httpx), so its transport comes from there.
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app))
    async with openai.AsyncOpenAI(
        base_url="http://gateway/v1", api_key="a", http_client=http, max_retries=0
    ) as client:
        yield client


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


async def make(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    return ok(await client.post(BASE, json=body))  # type: ignore[no-any-return]


class TestConversation:
    async def test_create_with_items_and_metadata_then_retrieve(self, a: httpx.AsyncClient) -> None:
        made = await make(a, items=ITEMS, metadata={"topic": "demo"})
        assert set(made) == {"id", "object", "created_at", "metadata"}
        assert made["object"] == "conversation"
        assert made["id"].startswith("conv_")
        assert isinstance(made["created_at"], int)
        assert made["metadata"] == {"topic": "demo"}
        assert ok(await a.get(f"{BASE}/{made['id']}")) == made

        page = ok(await a.get(f"{BASE}/{made['id']}/items", params={"order": "asc"}))
        assert [item["type"] for item in page["data"]] == [
            "message",
            "message",
            "function_call",
            "function_call_output",
        ]
        first = page["data"][0]
        # Normalised as the Responses API's input items: typed, with content parts and status.
        assert first["content"] == [{"type": "input_text", "text": "hi"}]
        assert first["status"] == "completed"
        assert first["id"].startswith("msg_")
        assert page["data"][2]["id"].startswith("fc_")
        assert len({item["id"] for item in page["data"]}) == 4

    async def test_create_empty(self, a: httpx.AsyncClient) -> None:
        made = await make(a)
        assert made["metadata"] == {}
        page = ok(await a.get(f"{BASE}/{made['id']}/items"))
        assert page == {
            "object": "list",
            "data": [],
            "first_id": None,
            "last_id": None,
            "has_more": False,
        }

    async def test_update_replaces_the_metadata(self, a: httpx.AsyncClient) -> None:
        made = await make(a, metadata={"x": "1", "y": "2"})
        updated = ok(await a.post(f"{BASE}/{made['id']}", json={"metadata": {"z": "3"}}))
        assert updated == {**made, "metadata": {"z": "3"}}
        assert ok(await a.get(f"{BASE}/{made['id']}"))["metadata"] == {"z": "3"}
        cleared = ok(await a.post(f"{BASE}/{made['id']}", json={"metadata": None}))
        assert cleared["metadata"] == {}

    async def test_delete_then_404_everywhere(self, a: httpx.AsyncClient) -> None:
        made = await make(a, items=[USER_HI])
        cid = made["id"]
        item_id = ok(await a.get(f"{BASE}/{cid}/items"))["data"][0]["id"]
        deleted = ok(await a.delete(f"{BASE}/{cid}"))
        assert deleted == {"id": cid, "object": "conversation.deleted", "deleted": True}
        for response in await _every_route(a, cid, item_id):
            found = error(response, 404)
            assert found["code"] == "not_found"
            assert found["param"] == "conversation_id"

    async def test_metadata_limits(self, a: httpx.AsyncClient) -> None:
        too_many = {f"k{i}": "v" for i in range(17)}
        assert error(await a.post(BASE, json={"metadata": too_many}), 400)["param"] == "metadata"
        long_value = {"k": "v" * 513}
        assert error(await a.post(BASE, json={"metadata": long_value}), 400)["param"] == (
            "metadata.k"
        )
        not_a_string = {"k": 1}
        assert error(await a.post(BASE, json={"metadata": not_a_string}), 400)["param"] == (
            "metadata.k"
        )
        assert ok(await a.post(BASE, json={"metadata": {f"k{i}": "v" for i in range(16)}}))


class TestItems:
    async def test_list_both_orders_and_paginate(self, a: httpx.AsyncClient) -> None:
        cid = (await make(a, items=[_said(n) for n in range(5)]))["id"]
        url = f"{BASE}/{cid}/items"
        asc = ok(await a.get(url, params={"order": "asc", "limit": 100}))
        texts = [_text(item) for item in asc["data"]]
        assert texts == ["0", "1", "2", "3", "4"]
        desc = ok(await a.get(url))  # default: newest first
        assert [item["id"] for item in desc["data"]] == [i["id"] for i in reversed(asc["data"])]
        assert desc["first_id"] == asc["last_id"] and desc["last_id"] == asc["first_id"]

        for order, expected in (("asc", "01234"), ("desc", "43210")):
            seen: list[str] = []
            after: str | None = None
            while True:
                params: dict[str, str | int] = {"order": order, "limit": 2}
                if after:
                    params["after"] = after
                page = ok(await a.get(url, params=params))
                seen += [_text(item) for item in page["data"]]
                assert page["first_id"] == page["data"][0]["id"]
                assert page["last_id"] == page["data"][-1]["id"]
                if not page["has_more"]:
                    break
                after = page["last_id"]
            assert "".join(seen) == expected

    async def test_list_limits(self, a: httpx.AsyncClient) -> None:
        cid = (await make(a))["id"]
        for params in ({"limit": 0}, {"limit": 101}, {"order": "sideways"}):
            assert error(await a.get(f"{BASE}/{cid}/items", params=params), 400)
        bad = await a.get(f"{BASE}/{cid}/items", params={"include": "everything"})
        assert error(bad, 400)["param"] == "include.0"
        bad = await a.get(
            f"{BASE}/{cid}/items", params={"include[]": ["reasoning.encrypted_content", "x"]}
        )
        assert error(bad, 400)["param"] == "include.1"
        fine = {"include[]": "message.output_text.logprobs"}
        assert ok(await a.get(f"{BASE}/{cid}/items", params=fine))["object"] == "list"

    async def test_create_retrieve_delete(self, a: httpx.AsyncClient) -> None:
        made = await make(a, items=[_said(0)])
        cid = made["id"]
        added = ok(await a.post(f"{BASE}/{cid}/items", json={"items": [_said(1), _said(2)]}))
        assert added["object"] == "list" and added["has_more"] is False
        assert [_text(item) for item in added["data"]] == ["1", "2"]
        assert added["first_id"] == added["data"][0]["id"]
        assert added["last_id"] == added["data"][1]["id"]

        item = added["data"][0]
        assert ok(await a.get(f"{BASE}/{cid}/items/{item['id']}")) == item

        after = ok(await a.delete(f"{BASE}/{cid}/items/{item['id']}"))
        assert after["id"] == cid and after["object"] == "conversation"
        assert after["created_at"] == made["created_at"]
        gone = error(await a.get(f"{BASE}/{cid}/items/{item['id']}"), 404)
        assert gone["param"] == "item_id"
        assert error(await a.delete(f"{BASE}/{cid}/items/{item['id']}"), 404) == gone
        left = ok(await a.get(f"{BASE}/{cid}/items", params={"order": "asc"}))
        assert [_text(i) for i in left["data"]] == ["0", "2"]

    async def test_the_same_item_twice_gets_two_ids(self, a: httpx.AsyncClient) -> None:
        cid = (await make(a, items=[USER_HI]))["id"]
        ok(await a.post(f"{BASE}/{cid}/items", json={"items": [USER_HI]}))
        ok(await a.post(f"{BASE}/{cid}/items", json={"items": [USER_HI, USER_HI]}))
        page = ok(await a.get(f"{BASE}/{cid}/items"))
        assert len({item["id"] for item in page["data"]}) == 4

    async def test_given_ids_are_kept_and_unique(self, a: httpx.AsyncClient) -> None:
        cid = (await make(a, items=[{**USER_HI, "id": "msg_mine"}]))["id"]
        assert ok(await a.get(f"{BASE}/{cid}/items/msg_mine"))["content"][0]["text"] == "hi"
        again = await a.post(f"{BASE}/{cid}/items", json={"items": [{**USER_HI, "id": "msg_mine"}]})
        assert error(again, 400)["param"] == "items"
        twice = [{**USER_HI, "id": "x"}, {**USER_HI, "id": "x"}]
        assert error(await a.post(BASE, json={"items": twice}), 400)["param"] == "items.1.id"
        for bad_id in (5, "", "has space", "x" * 65):
            body = {"items": [USER_HI, {**USER_HI, "id": bad_id}]}
            assert error(await a.post(BASE, json=body), 400)["param"] == "items.1.id"

    @pytest.mark.parametrize(
        ("item", "param"),
        [
            ({"type": "web_search_call"}, "items.1.type"),
            ({"role": "robot", "content": "x"}, "items.1.role"),
            ({"role": "user", "content": 3}, "items.1.content"),
            ({"role": "user", "content": [{"type": "input_audio"}]}, "items.1.content.0.type"),
            ({"type": "function_call", "call_id": "c", "name": "f"}, "items.1.arguments"),
            ({"type": "function_call_output", "call_id": "c"}, "items.1"),
        ],
    )
    async def test_bad_items_are_400_naming_the_item(
        self, a: httpx.AsyncClient, item: dict[str, Any], param: str
    ) -> None:
        made = await make(a)
        for url in (BASE, f"{BASE}/{made['id']}/items"):
            refused = error(await a.post(url, json={"items": [USER_HI, item]}), 400)
            assert refused["param"] == param
            assert refused["code"] == "invalid_value"
        # Nothing of a refused batch is kept.
        assert ok(await a.get(f"{BASE}/{made['id']}/items"))["data"] == []

    async def test_item_counts(self, a: httpx.AsyncClient) -> None:
        cid = (await make(a))["id"]
        assert ok(await a.post(BASE, json={"items": [USER_HI] * 20}))
        assert error(await a.post(BASE, json={"items": [USER_HI] * 21}), 400)["param"] == "items"
        url = f"{BASE}/{cid}/items"
        assert error(await a.post(url, json={"items": [USER_HI] * 21}), 400)["param"] == "items"
        assert error(await a.post(url, json={"items": []}), 400)["param"] == "items"
        assert error(await a.post(url, json={}), 400)["param"] == "items"


class TestRefusals:
    async def test_unknown_fields_are_400_by_name(self, a: httpx.AsyncClient) -> None:
        cid = (await make(a))["id"]
        for url, body in (
            (BASE, {"metadata": {}, "title": "x"}),
            (f"{BASE}/{cid}", {"metadata": {}, "title": "x"}),
            (f"{BASE}/{cid}/items", {"items": [USER_HI], "title": "x"}),
        ):
            refused = error(await a.post(url, json=body), 400)
            assert refused["param"] == "title"
            assert refused["code"] == "invalid_value"
        assert error(await a.post(f"{BASE}/{cid}", json={}), 400)["param"] == "metadata"

    async def test_another_tenant_sees_nothing(
        self, a: httpx.AsyncClient, b: httpx.AsyncClient
    ) -> None:
        made = await make(a, items=[USER_HI], metadata={"k": "v"})
        cid = made["id"]
        item_id = ok(await a.get(f"{BASE}/{cid}/items"))["data"][0]["id"]
        theirs = await _every_route(b, cid, item_id)
        missing_id = "conv_" + "0" * 48
        missing = await _every_route(a, missing_id, item_id)
        for response, never in zip(theirs, missing, strict=True):
            assert error(response, 404)["code"] == "not_found"
            body = response.json()
            assert body == _with_id(never.json(), missing_id, cid)
        # Nothing changed for a, and b lists nothing.
        assert ok(await a.get(f"{BASE}/{cid}")) == made
        assert len(ok(await a.get(f"{BASE}/{cid}/items"))["data"]) == 1
        assert ok(await b.get(BASE))["data"] == []

    async def test_a_malformed_id_is_the_same_404(self, a: httpx.AsyncClient) -> None:
        for cid in ("not a conversation", "x" * 65, "conv_'; drop table conversations; --"):
            for response in await _every_route(a, cid, "msg_1"):
                assert error(response, 404) == {
                    "message": f"No conversation with id '{cid}'.",
                    "type": "invalid_request_error",
                    "param": "conversation_id",
                    "code": "not_found",
                }

    async def test_no_database_is_503(self) -> None:
        transport = httpx.ASGITransport(build_app(None))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            for response in [await client.get(BASE), *await _every_route(client, "c", "i")]:
                assert error(response, 503)["code"] == "service_unavailable"


class TestRecentList:
    async def test_most_recently_used_first_with_pagination(self, a: httpx.AsyncClient) -> None:
        ids = [(await make(a, metadata={"n": str(n)}))["id"] for n in range(3)]
        ok(await a.post(f"{BASE}/{ids[0]}/items", json={"items": [USER_HI]}))  # used: first
        listed = ok(await a.get(BASE))
        assert listed["object"] == "list" and listed["has_more"] is False
        assert [c["id"] for c in listed["data"]] == [ids[0], ids[2], ids[1]]
        assert set(listed["data"][0]) == {"id", "object", "created_at", "metadata", "updated_at"}
        first = ok(await a.get(BASE, params={"limit": 2}))
        assert first["has_more"] is True and first["last_id"] == ids[2]
        rest = ok(await a.get(BASE, params={"limit": 2, "after": first["last_id"]}))
        assert [c["id"] for c in rest["data"]] == [ids[1]] and rest["has_more"] is False
        assert error(await a.get(BASE, params={"limit": 0}), 400)


class TestSdk:
    async def test_the_official_client(self, sdk: openai.AsyncOpenAI) -> None:
        conversation = await sdk.conversations.create(
            items=[
                {"type": "message", "role": "user", "content": "What is 1 + 2?"},
                {"type": "message", "role": "assistant", "content": "3."},
            ],
            metadata={"topic": "sums"},
        )
        assert conversation.object == "conversation"
        assert conversation.metadata == {"topic": "sums"}
        assert await sdk.conversations.retrieve(conversation.id) == conversation

        updated = await sdk.conversations.update(conversation.id, metadata={"topic": "maths"})
        assert updated.metadata == {"topic": "maths"}

        added = await sdk.conversations.items.create(
            conversation.id,
            items=[{"type": "message", "role": "user", "content": f"n{n}"} for n in range(3)],
            include=["message.output_text.logprobs"],
        )
        assert len(added.data) == 3 and added.has_more is False
        assert added.first_id == added.data[0].id

        page = await sdk.conversations.items.list(conversation.id, limit=2, order="asc")
        assert page.has_more is True and len(page.data) == 2
        every = [item async for item in sdk.conversations.items.list(conversation.id, limit=2)]
        assert len(every) == 5  # the SDK follows `after` itself
        newest = every[0]
        assert newest.type == "message" and newest.role == "user"
        assert newest.content[0].type == "input_text" and newest.content[0].text == "n2"
        assert [i.id for i in every][::-1] == [
            i.id async for i in sdk.conversations.items.list(conversation.id, order="asc")
        ]

        one = await sdk.conversations.items.retrieve(newest.id, conversation_id=conversation.id)
        assert one == newest
        after = await sdk.conversations.items.delete(newest.id, conversation_id=conversation.id)
        assert after.id == conversation.id and after.object == "conversation"
        with pytest.raises(openai.NotFoundError) as gone:
            await sdk.conversations.items.retrieve(newest.id, conversation_id=conversation.id)
        assert gone.value.code == "not_found"

        robot: Any = {"type": "message", "role": "robot", "content": "x"}  # not a role
        with pytest.raises(openai.BadRequestError) as refused:
            await sdk.conversations.items.create(conversation.id, items=[robot])
        assert refused.value.param == "items.0.role"

        deleted = await sdk.conversations.delete(conversation.id)
        assert deleted.deleted is True and deleted.id == conversation.id
        with pytest.raises(openai.NotFoundError):
            await sdk.conversations.retrieve(conversation.id)
        with pytest.raises(openai.NotFoundError):
            await sdk.conversations.items.list(conversation.id)


def _said(n: int) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": str(n)}


def _text(item: dict[str, Any]) -> str:
    return item["content"][0]["text"]  # type: ignore[no-any-return]


def _with_id(body: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    error = body["error"]
    return {"error": {**error, "message": error["message"].replace(old, new)}}


async def _every_route(client: httpx.AsyncClient, cid: str, item_id: str) -> list[httpx.Response]:
    """One request to each route of conversation `cid` (all valid but for the id)."""
    url = f"{BASE}/{cid}"
    return [
        await client.get(url),
        await client.post(url, json={"metadata": {"k": "changed"}}),
        await client.get(f"{url}/items"),
        await client.post(f"{url}/items", json={"items": [USER_HI]}),
        await client.get(f"{url}/items/{item_id}"),
        await client.delete(f"{url}/items/{item_id}"),
        await client.delete(url),
    ]
