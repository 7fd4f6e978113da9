"""Creating a response, for every transport: the one submit path with `api="responses"`, its
entry in the index (unless `store: false`), and the renderer of its events."""

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka.errors import KafkaError

from contracts import response_id
from services.gateway.callers import Caller
from services.gateway.conversations import memory
from services.gateway.node import GatewayNode
from services.gateway.responses import chain
from services.gateway.responses.events import ResponseRenderer
from services.gateway.responses.lookup import created_at, responses_store
from services.gateway.responses.store import StoredResponse
from services.gateway.responses.wire import (
    ResponsesRequest,
    conversation_id,
    input_items,
    input_messages,
    shell,
    to_chat,
)
from services.gateway.submit import EventStream, submit


@dataclass
class Created:
    stream: EventStream
    renderer: ResponseRenderer
    rate_headers: dict[str, str]

    @property
    def id(self) -> str:
        return str(self.renderer.response["id"])


async def create(
    node: GatewayNode,
    caller: Caller,
    body: ResponsesRequest,
    *,
    deadline_s: float | None = None,
    via: str = "http",
) -> Created:
    """Check, admit, publish and index a response; bad input is a 400 and queues nothing.

    With a `conversation`, its history comes first and the turn is appended when the answer
    ends; with `previous_response_id`, the chain of earlier responses does (their
    `instructions` stay behind, as OpenAI's rule is)."""
    to_chat(body)  # every refusal of bad input before any state is touched
    store = responses_store(node) if body.store else None
    turn, history = None, []
    conv_id = conversation_id(body)
    if conv_id is not None:
        turn = await memory.begin(
            node,
            caller,
            memory.conversations_of(node),
            conv_id,
            input_messages(body.input),
            model=body.model,
            output_tokens=body.max_output_tokens or node.settings.default_output_tokens,
            truncate=body.truncation != "disabled",
        )
        history = turn.messages
    elif body.previous_response_id is not None:
        history = await chain.history(node, caller, body.previous_response_id)
    try:
        stream, rate_headers = await submit(
            node,
            caller,
            to_chat(body, history),
            stream=True,
            deadline_s=deadline_s,
            via=via,
            api="responses",
            summarised_turns=turn.summarised_turns if turn else 0,
        )
    except BaseException:
        if turn is not None:
            await memory.conversations_of(node).release(turn.conversation.id, turn.lease)
        raise
    rid = response_id(stream.request_id)
    if turn is not None:
        conversations, sent = memory.conversations_of(node), input_items(body.input)
        stream.tap = memory.TurnRecorder(node, caller, conversations, turn, stream.request_id, sent)
    try:
        if store is not None:
            await store.add(_record(node, caller, rid, stream.request_id, body))
    except BaseException:
        # Not retrievable, so not wanted: withdraw it rather than let it run for nobody.
        with contextlib.suppress(KafkaError):
            await node.publisher.cancel(stream.request_id, reason="not_stored")
        stream.keep_running()
        await stream.aclose()
        raise
    if body.background:
        stream.keep_running()  # it runs without a client; only a cancel stops it
    renderer = ResponseRenderer(rid, created_at(stream.request_id), shell(body))
    return Created(stream, renderer, rate_headers)


def _record(
    node: GatewayNode, caller: Caller, rid: str, request_id: str, body: ResponsesRequest
) -> StoredResponse:
    now = datetime.now(UTC)
    retention = timedelta(seconds=node.settings.responses_retention_s)
    return StoredResponse(
        id=rid,
        tenant=caller.tenant,
        request_id=request_id,
        created_at=now,
        expires_at=now + retention,
        background=body.background,
        shell=shell(body),
        input_items=input_items(body.input),
    )
