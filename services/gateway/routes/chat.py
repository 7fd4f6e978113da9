"""POST /v1/chat/completions: publish the request, then stream (or collect) its events."""

import asyncio
import time
from datetime import timedelta
from typing import Annotated, Any

import structlog
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from contracts import (
    ChatRequested,
    Completed,
    ErrorCode,
    Failed,
    Started,
    utcnow,
)
from services.common.logging import bind_request
from services.common.redact import content_for_log
from services.fanout.hub import SubscriberDropped, Subscription
from services.gateway.admission import admit
from services.gateway.auth import CallerDep
from services.gateway.errors import ApiError, error_for_code
from services.gateway.limits import check_input
from services.gateway.node import GatewayNode, NodeDep
from services.gateway.openai_wire import ChatCompletionRequest, completion_body, header_value
from services.gateway.sse import FrameRenderer, sse_frames
from services.tenants.limiter import Ticket

router = APIRouter()
DeadlineHeader = Annotated[
    float | None,
    Header(
        alias="x-tokenbus-deadline-s",
        # Below a second no answer can arrive: that is bad input (400), not a 504 later.
        ge=1,
        le=86_400,
        description="Give up after this many seconds, 1 or more (default: the workers' deadline)",
    ),
]
log = structlog.get_logger("gateway")


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    caller: CallerDep,
    node: NodeDep,
    deadline_s: DeadlineHeader = None,
) -> EventSourceResponse | JSONResponse:
    check_input(body, node.settings.limits)
    partition = node.reply_partition()
    request_id = node.new_request_id(partition, caller.tenant, int(time.time() * 1000))
    request = ChatRequested(
        request_id=request_id,
        tenant_id=caller.tenant,
        model=body.model,
        messages=tuple(body.messages),
        params=body.passthrough_params(),
        stream=body.stream,
        include_usage=body.include_usage,
        reply_partition=partition,
        deadline=utcnow() + timedelta(seconds=deadline_s) if deadline_s else None,
    )
    with bind_request(request_id=request_id):
        try:
            ticket, rate_headers = await admit(node, caller, body, request_id)
            return await _answer(node, request, body, ticket, rate_headers)
        except ApiError as exc:
            # Errors name the request too, so it can be found in logs and usage.
            exc.headers = {**(exc.headers or {}), "x-request-id": request_id}
            raise


async def _answer(
    node: GatewayNode,
    request: ChatRequested,
    body: ChatCompletionRequest,
    ticket: Ticket | None,
    rate_headers: dict[str, str],
) -> EventSourceResponse | JSONResponse:
    """The answer; the stream's end (whichever way) releases `ticket`."""
    request_id, tokens = request.request_id, None
    try:
        sub = node.hub.subscribe(request_id)
        try:
            started = await _submit(node, sub, request)
        except BaseException:
            sub.close()
            raise
        headers = {**_route_headers(request_id, started), **rate_headers}
        if body.stream:
            owned, ticket = ticket, None  # from here on, the frames release it
            frames = sse_frames(
                sub,
                FrameRenderer(request_id),
                first=started,
                idle_timeout_s=node.settings.idle_timeout_s,
                on_detach=lambda: node.detach(request_id),
                on_end=lambda total: node.release(owned, total),
            )
            return EventSourceResponse(
                frames,
                headers=headers,
                sep="\n",
                ping=15,
                send_timeout=node.settings.send_timeout_s,
            )
        with sub:
            answer = await _collect(sub, started, node.settings.idle_timeout_s)
            tokens = answer["usage"]["total_tokens"]
            return JSONResponse(answer, headers=headers)
    finally:
        node.release(ticket, tokens)


def _route_headers(request_id: str, started: Started) -> dict[str, str]:
    headers = {
        "x-request-id": request_id,
        "x-tokenbus-route": header_value(started.tier),
        # The client may name any model: one outside printable ASCII is percent-encoded.
        "x-tokenbus-model": header_value(started.model),
        "x-tokenbus-route-reason": header_value(started.route_reason),
    }
    if started.route_score is not None:
        headers["x-tokenbus-route-score"] = f"{started.route_score:.3f}"
        headers["x-tokenbus-route-features"] = header_value(",".join(started.route_features))
    return headers


async def _submit(node: GatewayNode, sub: Subscription, request: ChatRequested) -> Started:
    """Publish and wait for the worker's `started` (so route headers can be sent)."""
    try:
        await node.publisher.chat(request)
    except KafkaError as exc:
        log.error("publish_failed", error=type(exc).__name__)
        raise ApiError(
            503,
            "The request queue is unavailable; try again.",
            type_="api_error",
            code="service_unavailable",
        ) from exc
    log.info(
        "request_published",
        tenant=request.tenant_id,
        model=request.model,
        **content_for_log(node.settings.log_content, request.messages),
    )
    try:
        async with asyncio.timeout(node.settings.first_event_timeout_s):
            first = await sub.next()
    except TimeoutError as exc:
        await node.publisher.cancel(request.request_id, reason="no_worker")
        raise ApiError(
            503,
            "No inference worker took the request in time; try again.",
            type_="api_error",
            code=ErrorCode.OVERLOADED.value,
        ) from exc
    if isinstance(first, Failed):
        raise error_for_code(first.code, first.message)
    if not isinstance(first, Started):
        raise ApiError(
            502, "The stream began out of order.", type_="api_error", code=ErrorCode.INTERNAL.value
        )
    return first


async def _next(sub: Subscription, idle_timeout_s: float) -> Any:
    async with asyncio.timeout(idle_timeout_s):
        return await sub.next()


async def _collect(sub: Subscription, started: Started, idle_timeout_s: float) -> dict[str, Any]:
    parts: list[str] = []
    while True:
        try:
            event = await _next(sub, idle_timeout_s)
        except TimeoutError as exc:
            raise ApiError(
                504, "The answer stalled.", type_="api_error", code=ErrorCode.STREAM_TIMEOUT.value
            ) from exc
        except SubscriberDropped as exc:
            raise ApiError(
                502,
                "The answer could not be buffered.",
                type_="api_error",
                code=ErrorCode.OVERLOADED.value,
            ) from exc
        if event is None:
            raise ApiError(
                502, "The stream ended early.", type_="api_error", code=ErrorCode.INTERNAL.value
            )
        if event.type == "delta":
            parts.append(event.content)
        elif isinstance(event, Started):
            started = event  # a retry or fallback before any text
        elif isinstance(event, Failed):
            raise error_for_code(event.code, event.message)
        elif isinstance(event, Completed):
            return completion_body(
                sub.request_id,
                started.created,
                started.model,
                "".join(parts),
                event.finish_reason,
                event.usage,
            )
