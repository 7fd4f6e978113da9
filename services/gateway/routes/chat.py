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
    new_request_id,
    utcnow,
)
from services.common.logging import bind_request
from services.fanout.hub import SubscriberDropped, Subscription
from services.gateway.auth import TenantDep
from services.gateway.errors import ApiError, error_for_code
from services.gateway.limits import check_input
from services.gateway.node import GatewayNode, NodeDep
from services.gateway.openai_wire import ChatCompletionRequest, completion_body
from services.gateway.sse import FrameRenderer, sse_frames

router = APIRouter()
DeadlineHeader = Annotated[
    float | None,
    Header(
        alias="x-tokenbus-deadline-s",
        gt=0,
        le=86_400,
        description="Give up after this many seconds (default: the workers' deadline)",
    ),
]
log = structlog.get_logger("gateway")


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    tenant: TenantDep,
    node: NodeDep,
    deadline_s: DeadlineHeader = None,
) -> EventSourceResponse | JSONResponse:
    check_input(body, node.settings.limits)
    partition = node.reply_partition()
    request_id = new_request_id(partition, int(time.time() * 1000))
    request = ChatRequested(
        request_id=request_id,
        tenant_id=tenant,
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
            return await _answer(node, request, body)
        except ApiError as exc:
            # Errors name the request too, so it can be found in logs and usage.
            exc.headers = {**(exc.headers or {}), "x-request-id": request_id}
            raise


async def _answer(
    node: GatewayNode, request: ChatRequested, body: ChatCompletionRequest
) -> EventSourceResponse | JSONResponse:
    sub = node.hub.subscribe(request.request_id)
    try:
        started = await _submit(node, sub, request)
    except BaseException:
        sub.close()
        raise
    headers = _route_headers(request.request_id, started)
    if body.stream:
        request_id = request.request_id
        frames = sse_frames(
            sub,
            FrameRenderer(request_id),
            first=started,
            idle_timeout_s=node.settings.idle_timeout_s,
            on_detach=lambda: node.detach(request_id),
        )
        return EventSourceResponse(
            frames, headers=headers, sep="\n", ping=15, send_timeout=node.settings.send_timeout_s
        )
    with sub:
        answer = await _collect(sub, started, node.settings.idle_timeout_s)
        return JSONResponse(answer, headers=headers)


def _route_headers(request_id: str, started: Started) -> dict[str, str]:
    headers = {
        "x-request-id": request_id,
        "x-tokenbus-route": started.tier,
        "x-tokenbus-model": started.model,
        "x-tokenbus-route-reason": started.route_reason,
    }
    if started.route_score is not None:
        headers["x-tokenbus-route-score"] = f"{started.route_score:.3f}"
        headers["x-tokenbus-route-features"] = ",".join(started.route_features)
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
    log.info("request_published", tenant=request.tenant_id, model=request.model)
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
