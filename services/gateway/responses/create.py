"""Creating a response, for every transport: the one submit path with `api="responses"`, its
entry in the index (unless `store: false`), and the renderer of its events."""

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiokafka.errors import KafkaError

from contracts import EdgeCode, parse_request_id, response_id
from services.common.openai_errors import OpenAIError
from services.gateway.callers import Caller
from services.gateway.node import GatewayNode
from services.gateway.responses.events import ResponseRenderer
from services.gateway.responses.store import ResponseStore, StoredResponse
from services.gateway.responses.wire import ResponsesRequest, input_items, shell, to_chat
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
    """Check, admit, publish and index a response; bad input is a 400 and queues nothing."""
    chat = to_chat(body)
    store = responses_store(node) if body.store else None
    stream, rate_headers = await submit(
        node, caller, chat, stream=True, deadline_s=deadline_s, via=via, api="responses"
    )
    rid = response_id(stream.request_id)
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


def responses_store(node: GatewayNode) -> ResponseStore:
    if node.responses is None:
        raise OpenAIError(
            503, "Responses cannot be stored here (no database).", code=EdgeCode.SERVICE_UNAVAILABLE
        )
    return node.responses


def created_at(request_id: str) -> int:
    ref = parse_request_id(request_id)
    assert ref is not None
    return ref.created_ms // 1000


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
