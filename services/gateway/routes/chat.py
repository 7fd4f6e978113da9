"""POST /v1/chat/completions: submit, then render the events as SSE chunks or one completion."""

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from contracts import Completed, Delta, ErrorCode, Failed, Started
from services.common.logging import bind_request
from services.common.openai_errors import OpenAIError, error_for_code
from services.gateway.answer import Answer
from services.gateway.auth import CallerDep
from services.gateway.conversations.memory import submit_chat
from services.gateway.node import NodeDep
from services.gateway.openai_wire import ChatCompletionRequest, header_value
from services.gateway.sse import FrameRenderer, sse_frames
from services.gateway.submit import (
    EventStream,
    ServerDraining,
    StreamStalled,
    SubscriberDropped,
    shutting_down,
)

router = APIRouter()
ConversationHeader = Annotated[
    str | None,
    Header(
        alias="x-tokenbus-conversation-id",
        max_length=128,
        description="Keep the chat in this conversation (POST /v1/conversations): its history "
        "goes first, and the new messages and the answer are appended",
    ),
]
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


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest,
    caller: CallerDep,
    node: NodeDep,
    deadline_s: DeadlineHeader = None,
    conversation: ConversationHeader = None,
) -> EventSourceResponse | JSONResponse:
    stream, rate_headers = await submit_chat(
        node, caller, body, conversation, stream=body.stream, deadline_s=deadline_s
    )
    request_id = stream.request_id
    with bind_request(request_id=request_id):
        try:
            # The worker's `started` comes first, so the headers can name the route.
            started = await stream.started()
            headers = {**_route_headers(request_id, started), **rate_headers}
            if body.stream:
                frames = sse_frames(stream, FrameRenderer(request_id), first=started)
                return EventSourceResponse(
                    frames,
                    headers=headers,
                    sep="\n",
                    ping=15,
                    send_timeout=node.settings.send_timeout_s,
                )
            async with stream:
                return JSONResponse(await _collect(stream, started), headers=headers)
        except BaseException as exc:
            await stream.aclose()  # idempotent; once returned, the frames close it
            if isinstance(exc, OpenAIError):
                exc.headers = {**(exc.headers or {}), "x-request-id": request_id}
            raise


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


async def _collect(stream: EventStream, started: Started) -> dict[str, Any]:
    answer = Answer()
    try:
        async for batch in stream.batches():
            for event in batch:
                if isinstance(event, Delta):
                    answer.add(event)
                elif isinstance(event, Started):
                    started = event  # a retry or fallback before any text
                elif isinstance(event, Failed):
                    raise error_for_code(event.code, event.message)
                elif isinstance(event, Completed):
                    return answer.completion(
                        stream.request_id, started.created, started.model, event
                    )
    except StreamStalled as exc:
        raise OpenAIError(504, "The answer stalled.", code=ErrorCode.STREAM_TIMEOUT) from exc
    except ServerDraining as exc:
        raise shutting_down() from exc
    except SubscriberDropped as exc:
        message = "The answer could not be buffered."
        raise OpenAIError(502, message, code=ErrorCode.OVERLOADED) from exc
    raise OpenAIError(502, "The stream ended early.", code=ErrorCode.INTERNAL)
