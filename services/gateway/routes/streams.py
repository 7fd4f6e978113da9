"""GET /v1/streams/{id}: watch or resume a request's stream (on any node); DELETE cancels.

Only the tenant that made a request can reach it: the id carries a keyed tag of its tenant,
and another tenant's id answers 404, exactly like one that never existed.
"""

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from sse_starlette import EventSourceResponse

from contracts import RequestRef, parse_request_id
from services.fanout.history import HistoryReader
from services.fanout.hub import Subscription
from services.gateway.auth import Caller, CallerDep
from services.gateway.errors import ApiError
from services.gateway.node import GatewayNode, NodeDep
from services.gateway.sse import FrameRenderer, sse_frames

router = APIRouter()

LastEventIdHeader = Annotated[
    int | None, Header(alias="last-event-id", ge=-1, description="Resume after this event id")
]
LastEventIdQuery = Annotated[
    int | None, Query(ge=-1, description="Same as Last-Event-ID, for clients without headers")
]


def _ref(node: GatewayNode, request_id: str, caller: Caller) -> RequestRef:
    ref = parse_request_id(request_id)
    if ref is None or not node.owns(request_id, caller.tenant):
        raise _not_found(request_id)
    return ref


def _not_found(request_id: str) -> ApiError:
    return ApiError(
        404, f"No stream with id '{request_id}'.", param="request_id", code="stream_not_found"
    )


@router.get("/v1/streams/{request_id}", response_model=None)
async def watch_stream(
    request_id: str,
    node: NodeDep,
    caller: CallerDep,
    last_event_id: LastEventIdHeader = None,
    after: LastEventIdQuery = None,
) -> EventSourceResponse:
    ref = _ref(node, request_id, caller)
    settings = node.settings
    sub = Subscription(None, request_id, settings.subscriber_buffer)
    reader = HistoryReader(
        settings.bootstrap_servers,
        settings.topics.tokens.name,
        ref,
        sub,
        client_id=f"tokenbus-gateway-watch-{settings.instance}",
        stall_s=settings.watcher_stall_s,
    )
    reader.start()
    try:
        if not await reader.wait_found(settings.first_event_timeout_s):
            raise _not_found(request_id)
    except BaseException:
        await reader.stop()
        raise
    node.fire(node.publisher.attached(request_id))
    resume_after = last_event_id if last_event_id is not None else after
    frames = sse_frames(
        sub,
        FrameRenderer(request_id, -1 if resume_after is None else resume_after),
        idle_timeout_s=settings.idle_timeout_s,
        on_detach=lambda: node.detach(request_id),
    )
    return EventSourceResponse(
        _stopping(frames, reader),
        headers={"x-request-id": request_id},
        sep="\n",
        ping=15,
        send_timeout=settings.send_timeout_s,
    )


async def _stopping(frames: AsyncIterator[bytes], reader: HistoryReader) -> AsyncIterator[bytes]:
    try:
        async for f in frames:
            yield f
    finally:
        await reader.stop()


@router.delete("/v1/streams/{request_id}", status_code=202)
async def cancel_stream(request_id: str, node: NodeDep, caller: CallerDep) -> dict[str, Any]:
    _ref(node, request_id, caller)
    await node.publisher.cancel(request_id, reason="client")
    return {"id": request_id, "object": "chat.completion.cancel", "status": "cancelling"}
