"""A conversation as the backend sees it, and a turn's way through it.

`begin` takes the conversation for one request (a second request meanwhile is a 409, on any
node), folds the oldest turns into the running summary when the history no longer fits the
tier's budget, and gives the messages to send: `[system: summary] + recent turns + new input`.
`finish` follows the request's events to their end and appends the turn (what the user sent,
and the answer, or a marker when there is none), then lets the conversation go.
"""

import asyncio
import math
import secrets
from dataclasses import dataclass, field
from typing import Any

import structlog

from contracts import EdgeCode, Failed, Message
from services.common.openai_errors import OpenAIError
from services.gateway.callers import Caller
from services.gateway.conversations.store import Conversation, ConversationStore, Item
from services.gateway.node import GatewayNode
from services.gateway.openai_wire import ChatCompletionRequest
from services.gateway.responses.events import ResponseRenderer
from services.gateway.responses.wire import input_items, input_messages
from services.gateway.submit import EventStream, submit, watch

log = structlog.get_logger("gateway")
Json = dict[str, Any]

# Fixed, so that a summary means the same thing in every conversation (docs/conversations.md).
SUMMARY_PROMPT = (
    "You keep the memory of a conversation between a user and an assistant. Write a concise "
    "summary of the conversation below, in the language it is written in, keeping every fact, "
    "name, number, decision, open question and instruction from the user that later turns may "
    "need. If a previous summary is given, merge it in. Write only the summary."
)
SUMMARY_MAX_TOKENS = 512
# Room a summary may take in the budget: the longest one, at a generous 6 characters a token.
_SUMMARY_ROOM = "x" * (SUMMARY_MAX_TOKENS * 6)
_INCOMPLETE = "incomplete"


@dataclass
class Turn:
    """One request's hold on a conversation."""

    conversation: Conversation
    messages: list[Json]  # the history to put before the new input
    summarised_turns: int = 0
    lease: str = field(default_factory=lambda: secrets.token_hex(8))


def estimate_tokens(messages: list[Json]) -> int:
    """About 4 characters a token, plus a few per message (a budget check, not billing)."""
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
        for call in message.get("tool_calls") or ():
            chars += len(str(call.get("function", {}).get("arguments", "")))
    return math.ceil(chars / 4) + 4 * len(messages)


def budget_for(node: GatewayNode, model: str) -> int:
    """The context budget of the tier that will answer `model` (`auto`: the smallest)."""
    budgets = node.models.context_budgets
    default = node.settings.context_budget_tokens
    if model in budgets:
        return budgets[model]
    tiers = [
        t for t, backends in node.models.tiers.items() if any(b.model == model for b in backends)
    ]
    if tiers:
        return budgets.get(tiers[0], default)
    if model == "auto" and node.models.tiers:
        return min(budgets.get(t, default) for t in node.models.tiers)
    return default


async def begin(
    node: GatewayNode,
    caller: Caller,
    store: ConversationStore,
    conv_id: str,
    new_messages: list[Json],
    *,
    model: str,
    output_tokens: int,
    truncate: bool,
) -> Turn:
    """Hold the conversation and build its history (folding it if it no longer fits)."""
    conversation = await store.get(conv_id, caller.tenant)
    if conversation is None:
        raise not_found(conv_id)
    turn = Turn(conversation, [])
    if not await store.acquire(
        conv_id, caller.tenant, turn.lease, node.settings.conversation_lease_s
    ):
        raise OpenAIError(
            409,
            f"Conversation '{conv_id}' is answering another request; try again when it ends.",
            param="conversation",
            code=EdgeCode.CONVERSATION_BUSY,
        )
    try:
        await _build(node, caller, store, turn, new_messages, model, output_tokens, truncate)
    except BaseException:
        await store.release(conv_id, turn.lease)
        raise
    return turn


async def _build(
    node: GatewayNode,
    caller: Caller,
    store: ConversationStore,
    turn: Turn,
    new_messages: list[Json],
    model: str,
    output_tokens: int,
    truncate: bool,
) -> None:
    conv = turn.conversation
    items = await store.items_since(conv.id, caller.tenant, conv.summary_upto) or []
    budget = budget_for(node, model) - output_tokens - estimate_tokens(new_messages)
    summary = conv.summary
    kept = _turns(items)
    while kept and estimate_tokens(_history(summary, kept)) > budget:
        if not truncate:
            raise OpenAIError(
                400,
                f"The conversation no longer fits the model's context ({budget_for(node, model)}"
                " tokens) and truncation is disabled.",
                param="truncation",
                code=EdgeCode.CONTEXT_TOO_LONG,
            )
        folded = _fold_count(kept, budget)
        summary = await summarise(node, caller, summary, [i for t in kept[:folded] for i in t])
        kept = kept[folded:]
        upto = kept[0][0].position if kept else items[-1].position + 1
        turn.summarised_turns += folded
        await store.set_summary(
            conv.id, caller.tenant, summary, upto, conv.summary_turns + turn.summarised_turns
        )
    turn.messages = _history(summary, kept)


def _turns(items: list[Item]) -> list[list[Item]]:
    """Items grouped into turns, each beginning with a user message."""
    turns: list[list[Item]] = []
    for item in items:
        starts = item.data.get("type") == "message" and item.data.get("role") == "user"
        if starts or not turns:
            turns.append([])
        turns[-1].append(item)
    return turns


def _fold_count(turns: list[list[Item]], budget: int) -> int:
    """The fewest oldest turns to fold so the rest fits beside the summary the fold makes
    (always at least one, never the last one unless it alone is over budget)."""
    for n in range(1, len(turns)):
        if estimate_tokens(_history(_SUMMARY_ROOM, turns[n:])) <= budget:
            return n
    return max(1, len(turns) - 1) if len(turns) > 1 else 1


def _history(summary: str | None, turns: list[list[Item]]) -> list[Json]:
    head = [{"role": "system", "content": f"Summary of the conversation so far:\n{summary}"}]
    items = [i.data for t in turns for i in t if i.data.get("status") != _INCOMPLETE]
    return (head if summary else []) + input_messages(items)


async def summarise(
    node: GatewayNode, caller: Caller, previous: str | None, items: list[Item]
) -> str:
    """Ask the `small` tier (through Kafka, billed to the tenant as its own request)."""
    lines = [f"Previous summary:\n{previous}\n"] if previous else []
    for message in input_messages([i.data for i in items if i.data.get("status") != _INCOMPLETE]):
        content = message.get("content") or ""
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        lines.append(f"{message['role']}: {content}")
    body = ChatCompletionRequest.model_validate(
        {
            "model": "small",
            "messages": [
                {"role": "system", "content": SUMMARY_PROMPT},
                {"role": "user", "content": "\n".join(lines)},
            ],
            "max_tokens": SUMMARY_MAX_TOKENS,
        }
    )
    stream, _ = await submit(node, caller, body, stream=False, via="summary")
    pieces: list[str] = []
    async with stream:
        first = await stream.started()
        del first
        async for batch in stream.batches():
            for event in batch:
                if isinstance(event, Failed):
                    raise OpenAIError(
                        502, "The conversation could not be summarised; try again.", code=event.code
                    )
                if event.type == "delta":
                    pieces.append(event.content)
    log.info("conversation_summarised", items=len(items))
    return "".join(pieces)


class TurnRecorder:
    """Keeps a turn as its request's events reach the client: the turn is appended (and the
    conversation let go) before the client sees the end, so its next request finds both.
    A client that leaves first hands the rest to `finish`, which follows the log."""

    def __init__(
        self,
        node: GatewayNode,
        caller: Caller,
        store: ConversationStore,
        turn: Turn,
        request_id: str,
        sent: list[Json],
    ) -> None:
        self._args = (node, caller, store, turn, request_id, sent)
        self._renderer = ResponseRenderer("resp_" + request_id, 0, {})
        self._kept = False

    async def events(self, batch: list[Any]) -> None:
        for event in batch:
            self._renderer.render(event)
        if not self._kept and self._renderer.done:
            self._kept = True
            node, caller, store, turn, _, sent = self._args
            # Its own task: a client leaving at this moment cancels the request's task, and a
            # turn cut mid-write would be lost with the conversation still held (seen on Stop).
            keeping = node.fire(_keep(store, caller, turn, sent, self._renderer.response))
            await asyncio.shield(keeping)

    async def closed(self, finished: bool) -> None:
        if not self._kept:
            self._kept = True
            node = self._args[0]
            node.fire(finish(*self._args))


async def _keep(
    store: ConversationStore, caller: Caller, turn: Turn, sent: list[Json], response: Json
) -> None:
    conv_id = turn.conversation.id
    try:
        # Fresh ids from the store: the input's own are derived from content and position,
        # and the same message sent in two turns must not collide.
        items = [{k: v for k, v in i.items() if k != "id"} for i in sent + _answer(response)]
        await store.add_items(conv_id, caller.tenant, items)
    except Exception as exc:  # the turn is lost, never half-kept: say so in the log
        log.error("conversation_append_failed", conversation=conv_id, error=type(exc).__name__)
    finally:
        await store.release(conv_id, turn.lease)


async def finish(
    node: GatewayNode,
    caller: Caller,
    store: ConversationStore,
    turn: Turn,
    request_id: str,
    sent: list[Json],
) -> None:
    """Follow the request's log to its end (its client left, or never waits: a background
    response), then append the turn and let the conversation go."""
    renderer = ResponseRenderer("resp_" + request_id, 0, {})
    try:
        events = await watch(node, caller, request_id, via="internal")
        events.keep_running()
        async with events:
            async for batch in events.batches():
                for event in batch:
                    renderer.render(event)
    except Exception as exc:
        log.error("conversation_follow_failed", request_id=request_id, error=type(exc).__name__)
    await _keep(store, caller, turn, sent, renderer.response)


def _answer(response: Json) -> list[Json]:
    """The output items of a finished answer, or a marker that there is none."""
    if response["status"] in ("completed", "incomplete"):  # cut by the limit asked for
        return [as_input(item) for item in response["output"] if item["type"] != "reasoning"]
    status = response["status"]
    return [
        {
            "type": "message",
            "role": "assistant",
            "status": _INCOMPLETE,
            "content": [{"type": "output_text", "text": f"[no answer: {status}]"}],
        }
    ]


def as_input(item: Json) -> Json:
    """An output item as an input item of later turns (no logprobs, no annotations)."""
    if item["type"] == "message":
        text = "".join(p.get("text", p.get("refusal", "")) for p in item.get("content", []))
        part = {"type": "output_text", "text": text, "annotations": []}
        return {"type": "message", "role": "assistant", "content": [part], "status": "completed"}
    keep = ("type", "call_id", "name", "arguments", "status")
    return {k: item[k] for k in keep if k in item}


def chat_items(messages: list[Json]) -> list[Json]:
    """Chat messages as conversation items (so either API can continue the other's)."""
    items: list[Json] = []
    for message in messages:
        role = message.get("role")
        if role == "tool":
            output = message.get("content") or ""
            call_id = message.get("tool_call_id")
            items.append({"type": "function_call_output", "call_id": call_id, "output": output})
            continue
        content = message.get("content")
        if content:
            items.append({"type": "message", "role": role, "content": _parts(role, content)})
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            items.append(
                {
                    "type": "function_call",
                    "call_id": call.get("id"),
                    "name": function.get("name"),
                    "arguments": function.get("arguments"),
                }
            )
    return input_items(items)


def _parts(role: Any, content: Any) -> Any:
    if isinstance(content, str):
        return content
    kind = "output_text" if role == "assistant" else "input_text"
    parts = []
    for part in content:
        if part.get("type") == "text":
            parts.append({"type": kind, "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            image = part.get("image_url") or {}
            parts.append({"type": "input_image", "image_url": image.get("url")})
    return parts


def not_found(conv_id: str) -> OpenAIError:
    return OpenAIError(
        404, f"No conversation with id '{conv_id}'.", param="conversation", code=EdgeCode.NOT_FOUND
    )


async def submit_chat(
    node: GatewayNode,
    caller: Caller,
    body: ChatCompletionRequest,
    conv_id: str | None,
    **options: Any,
) -> tuple[EventStream, dict[str, str]]:
    """The one submit path, with a conversation's history before `body`'s messages when
    `conv_id` is given (chat completions' `x-tokenbus-conversation-id`, a WebSocket `chat`'s
    `conversation`); the new messages and the answer are appended when it ends."""
    if conv_id is None:
        return await submit(node, caller, body, **options)
    store = conversations_of(node)
    new = [m.model_dump(exclude_none=True) for m in body.messages]
    output = body.max_completion_tokens or body.max_tokens or node.settings.default_output_tokens
    turn = await begin(
        node, caller, store, conv_id, new, model=body.model, output_tokens=output, truncate=True
    )
    merged = body.model_copy(
        update={"messages": [*map(Message.model_validate, turn.messages), *body.messages]}
    )
    try:
        stream, headers = await submit(
            node, caller, merged, summarised_turns=turn.summarised_turns, **options
        )
    except BaseException:
        await store.release(conv_id, turn.lease)
        raise
    stream.tap = TurnRecorder(node, caller, store, turn, stream.request_id, chat_items(new))
    return stream, headers


def conversations_of(node: GatewayNode) -> ConversationStore:
    if node.conversations is None:
        raise OpenAIError(503, "Conversations need a database.", code=EdgeCode.SERVICE_UNAVAILABLE)
    return node.conversations
