"""`/v1/conversations`: OpenAI's Conversations API, as the SDKs' `client.conversations` calls it.

Create, retrieve, update (the metadata) and delete a conversation; list, add, retrieve and
delete its items. Items are checked and normalised as the Responses API's input items are
(`responses.wire`): a message, `function_call` or `function_call_output`, stored with an id
(generated unless given), a `type` and a `status`. A conversation of another tenant, a missing
one and a malformed id all answer the same 404; without a database every route is a 503.

One extension, for the web chat's sidebar: `GET /v1/conversations?limit=&after=` lists the
caller's conversations, most recently used (created, updated, added to) first, as a list object
(`data`, `first_id`, `last_id`, `has_more`) of conversation objects that also carry
`updated_at` (Unix seconds). `limit` is 1..100 (default 20); `after` is the `last_id` of the
previous page.
"""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictStr, StringConstraints

from contracts import EdgeCode
from services.common.openai_errors import OpenAIError
from services.gateway.auth import CallerDep
from services.gateway.conversations.store import Conversation, ConversationStore
from services.gateway.node import GatewayNode, NodeDep
from services.gateway.responses.wire import input_items, input_messages

router = APIRouter()
Json = dict[str, Any]

MAX_ITEMS = 20  # per request, as OpenAI
MAX_METADATA = 16
_ID_MAX = 64  # the store's id columns
_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{_ID_MAX}}}")
_RESERVED_IDS = frozenset({"summary"})  # the store seals the summary under this name
# What `include` may ask for: the items are stored and returned whole, so there is nothing
# more to add for any of them; anything else is refused by name.
_INCLUDABLE = frozenset(
    {
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
    }
)

MetadataKey = Annotated[StrictStr, StringConstraints(max_length=64)]
MetadataValue = Annotated[StrictStr, StringConstraints(max_length=512)]
Metadata = dict[MetadataKey, MetadataValue]
RawItems = list[dict[str, JsonValue]]


class CreateConversation(BaseModel):
    """`POST /v1/conversations`; unknown fields are refused (400), never dropped."""

    model_config = ConfigDict(extra="forbid")

    items: RawItems | None = Field(default=None, max_length=MAX_ITEMS)
    metadata: Metadata | None = Field(default=None, max_length=MAX_METADATA)


class UpdateConversation(BaseModel):
    """`POST /v1/conversations/{id}`: the new metadata replaces the old (null: none)."""

    model_config = ConfigDict(extra="forbid")

    metadata: Metadata | None = Field(max_length=MAX_METADATA)


class CreateItems(BaseModel):
    """`POST /v1/conversations/{id}/items`."""

    model_config = ConfigDict(extra="forbid")

    items: RawItems = Field(min_length=1, max_length=MAX_ITEMS)


LimitQuery = Annotated[int, Query(ge=1, le=100, description="1 to 100 objects a page")]
AfterQuery = Annotated[str | None, Query(max_length=128, description="The previous last_id")]
OrderQuery = Annotated[Literal["asc", "desc"], Query(description="Items oldest or newest first")]
# The SDKs send arrays as `include[]=a&include[]=b`; plain `include=a` is accepted too.
IncludeQuery = Annotated[list[str] | None, Query(description="Accepted includables")]
IncludeBracketsQuery = Annotated[
    list[str] | None, Query(alias="include[]", include_in_schema=False)
]


@router.post("/v1/conversations")
async def create_conversation(body: CreateConversation, caller: CallerDep, node: NodeDep) -> Json:
    store = conversations_store(node)
    items = _checked(body.items or [])
    conversation, _ = await store.create(caller.tenant, body.metadata or {}, items)
    return _conversation(conversation)


@router.get("/v1/conversations")
async def list_conversations(
    caller: CallerDep, node: NodeDep, limit: LimitQuery = 20, after: AfterQuery = None
) -> Json:
    """The extension: the caller's conversations, most recently used first."""
    page, has_more = await conversations_store(node).list_recent(caller.tenant, limit, after)
    listed = [{**_conversation(c), "updated_at": _unix(c.updated_at)} for c in page]
    return _list(listed, has_more)


@router.get("/v1/conversations/{conv_id}")
async def retrieve_conversation(conv_id: str, caller: CallerDep, node: NodeDep) -> Json:
    return _conversation(await _owned(conversations_store(node), conv_id, caller.tenant))


@router.post("/v1/conversations/{conv_id}")
async def update_conversation(
    conv_id: str, body: UpdateConversation, caller: CallerDep, node: NodeDep
) -> Json:
    store = conversations_store(node)
    _check_id(conv_id)
    conversation = await store.update_metadata(conv_id, caller.tenant, body.metadata or {})
    if conversation is None:
        raise _not_found(conv_id)
    return _conversation(conversation)


@router.delete("/v1/conversations/{conv_id}")
async def delete_conversation(conv_id: str, caller: CallerDep, node: NodeDep) -> Json:
    store = conversations_store(node)
    _check_id(conv_id)
    if not await store.delete(conv_id, caller.tenant):
        raise _not_found(conv_id)
    return {"id": conv_id, "object": "conversation.deleted", "deleted": True}


@router.get("/v1/conversations/{conv_id}/items")
async def list_items(
    conv_id: str,
    caller: CallerDep,
    node: NodeDep,
    limit: LimitQuery = 20,
    order: OrderQuery = "desc",
    after: AfterQuery = None,
    include: IncludeQuery = None,
    include_brackets: IncludeBracketsQuery = None,
) -> Json:
    store = conversations_store(node)
    _check_include(include, include_brackets)
    _check_id(conv_id)
    page = await store.items(conv_id, caller.tenant, limit=limit, order=order, after=after)
    if page is None:
        raise _not_found(conv_id)
    items, has_more = page
    return _list([item.data for item in items], has_more)


@router.post("/v1/conversations/{conv_id}/items")
async def create_items(
    conv_id: str,
    body: CreateItems,
    caller: CallerDep,
    node: NodeDep,
    include: IncludeQuery = None,
    include_brackets: IncludeBracketsQuery = None,
) -> Json:
    store = conversations_store(node)
    _check_include(include, include_brackets)
    _check_id(conv_id)
    items = _checked(body.items)
    try:
        added = await store.add_items(conv_id, caller.tenant, items)
    except ValueError as exc:  # a given id the conversation holds already
        raise _bad("An item with this id is already in the conversation.", "items") from exc
    if added is None:
        raise _not_found(conv_id)
    return _list([item.data for item in added], False)


@router.get("/v1/conversations/{conv_id}/items/{item_id}")
async def retrieve_item(
    conv_id: str,
    item_id: str,
    caller: CallerDep,
    node: NodeDep,
    include: IncludeQuery = None,
    include_brackets: IncludeBracketsQuery = None,
) -> Json:
    store = conversations_store(node)
    _check_include(include, include_brackets)
    _check_id(conv_id)
    item = await store.get_item(conv_id, item_id, caller.tenant) if _ID.fullmatch(item_id) else None
    if item is None:
        await _owned(store, conv_id, caller.tenant)  # the conversation's 404 comes first
        raise _item_not_found(item_id)
    return item.data


@router.delete("/v1/conversations/{conv_id}/items/{item_id}")
async def delete_item(conv_id: str, item_id: str, caller: CallerDep, node: NodeDep) -> Json:
    """As OpenAI: the conversation object, once the item is gone."""
    store = conversations_store(node)
    _check_id(conv_id)
    deleted = bool(_ID.fullmatch(item_id)) and await store.delete_item(
        conv_id, item_id, caller.tenant
    )
    conversation = await _owned(store, conv_id, caller.tenant)
    if not deleted:
        raise _item_not_found(item_id)
    return _conversation(conversation)


def conversations_store(node: GatewayNode) -> ConversationStore:
    if node.conversations is None:
        raise OpenAIError(
            503,
            "Conversations cannot be stored here (no database).",
            code=EdgeCode.SERVICE_UNAVAILABLE,
        )
    return node.conversations


def _checked(items: list[dict[str, Any]]) -> list[Json]:
    """The items as the Responses API takes them (400 naming `items.N...` otherwise), in the
    form they are stored and shown: typed, with a status, ids only where the client gave one
    (the store makes unique ones for the rest)."""
    try:
        input_messages(items)
    except OpenAIError as exc:
        if exc.param is not None and (exc.param == "input" or exc.param.startswith("input.")):
            exc.param = "items" + exc.param.removeprefix("input")
        raise
    seen: set[str] = set()
    normalised = input_items(items)
    for i, (raw, item) in enumerate(zip(items, normalised, strict=True)):
        given = raw.get("id")
        if given is None:
            del item["id"]  # input_items' ids depend on position only: not unique here
            continue
        if not isinstance(given, str) or not _ID.fullmatch(given) or given in _RESERVED_IDS:
            message = f"An item id is 1 to {_ID_MAX} of A-Z a-z 0-9 _ -, or left out."
            raise _bad(message, f"items.{i}.id")
        if given in seen:
            raise _bad(f"The item id {given!r} is given twice.", f"items.{i}.id")
        seen.add(given)
    return normalised


def _check_include(*lists: list[str] | None) -> None:
    for values in lists:
        for i, value in enumerate(values or ()):
            if value not in _INCLUDABLE:
                raise _bad(f"include value {value!r} is not supported.", f"include.{i}")


def _check_id(conv_id: str) -> None:
    """A malformed id is a conversation that does not exist (and never reaches the store)."""
    if not _ID.fullmatch(conv_id):
        raise _not_found(conv_id)


async def _owned(store: ConversationStore, conv_id: str, tenant: str) -> Conversation:
    """The tenant's conversation: else 404, exactly as for one that never was."""
    _check_id(conv_id)
    conversation = await store.get(conv_id, tenant)
    if conversation is None:
        raise _not_found(conv_id)
    return conversation


def _conversation(conversation: Conversation) -> Json:
    return {
        "id": conversation.id,
        "object": "conversation",
        "created_at": _unix(conversation.created_at),
        "metadata": conversation.metadata,
    }


def _unix(when: datetime) -> int:
    return int(when.timestamp())


def _list(data: list[Json], has_more: bool) -> Json:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def _bad(message: str, param: str) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=EdgeCode.INVALID_VALUE)


def _not_found(conv_id: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"No conversation with id '{conv_id}'.",
        param="conversation_id",
        code=EdgeCode.NOT_FOUND,
    )


def _item_not_found(item_id: str) -> OpenAIError:
    message = f"No item with id '{item_id}' in this conversation."
    return OpenAIError(404, message, param="item_id", code=EdgeCode.NOT_FOUND)
