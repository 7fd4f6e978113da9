"""`/v1/responses`: create, retrieve (or resume a stream), cancel, delete, list input items.

A response is a chat request submitted on the one submit path with `api="responses"`; its
events are the request's events in Kafka, rendered by `ResponseRenderer`. The SQL index
(`ResponseStore`) says whose it is, what it asked and until when it can be retrieved.
"""

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from contracts import (
    ErrorCode,
    StreamEvent,
)
from services.common.openai_errors import OpenAIError
from services.gateway.auth import CallerDep
from services.gateway.node import NodeDep
from services.gateway.responses.create import create
from services.gateway.responses.events import ResponseRenderer
from services.gateway.responses.lookup import (
    created_at,
    not_found,
    owned,
    request_of,
    responses_store,
    snapshot_now,
    watch_log,
)
from services.gateway.responses.wire import ResponsesRequest
from services.gateway.routes.chat import DeadlineHeader
from services.gateway.submit import (
    EventStream,
    ServerDraining,
    StreamStalled,
    SubscriberDropped,
    cancel,
    shutting_down,
)

router = APIRouter()
Json = dict[str, Any]


@router.post("/v1/responses", response_model=None)
async def create_response(
    body: ResponsesRequest, caller: CallerDep, node: NodeDep, deadline_s: DeadlineHeader = None
) -> JSONResponse | EventSourceResponse:
    made = await create(node, caller, body, deadline_s=deadline_s)
    stream, renderer = made.stream, made.renderer
    headers = {"x-request-id": stream.request_id, **made.rate_headers}
    try:
        if body.background and not body.stream:
            await stream.aclose()
            return JSONResponse(renderer.snapshot(), headers=headers)
        first = await stream.started()  # a refusal before any output is an HTTP error
        if body.stream:
            frames = _frames(stream, renderer, first=first)
            return EventSourceResponse(frames, headers=headers, sep="\n", ping=15)
        async with stream:
            renderer.render(first)
            await _follow(stream, renderer)
            return JSONResponse(renderer.snapshot(), headers=headers)
    except BaseException as exc:
        await stream.aclose()  # idempotent; once returned, the frames close it
        if isinstance(exc, OpenAIError):
            exc.headers = {**(exc.headers or {}), **headers}
        raise


StreamQuery = Annotated[bool, Query(description="Replay the events, then follow them live")]
AfterQuery = Annotated[int | None, Query(ge=-1, description="Only events after this number")]


@router.get("/v1/responses/{rid}", response_model=None)
async def retrieve_response(
    rid: str,
    caller: CallerDep,
    node: NodeDep,
    stream: StreamQuery = False,
    starting_after: AfterQuery = None,
) -> JSONResponse | EventSourceResponse:
    record = await owned(node, caller, rid)
    renderer = ResponseRenderer(rid, created_at(record.request_id), record.shell)
    if not stream:
        return JSONResponse(await snapshot_now(node, caller, record, renderer))
    events = await watch_log(node, caller, record)
    after = -1 if starting_after is None else starting_after
    return EventSourceResponse(_frames(events, renderer, after=after), sep="\n", ping=15)


@router.post("/v1/responses/{rid}/cancel", response_model=None)
async def cancel_response(rid: str, caller: CallerDep, node: NodeDep) -> JSONResponse:
    record = await owned(node, caller, rid)
    renderer = ResponseRenderer(rid, created_at(record.request_id), record.shell)
    current = await snapshot_now(node, caller, record, renderer)
    if renderer.done:  # a second cancel just returns the final object
        return JSONResponse(current)
    # Still queued or running: a worker that has it stops it; one that takes it later answers
    # it as cancelled at once (workers keep early cancels).
    await cancel(node, caller, record.request_id)
    final = ResponseRenderer(rid, created_at(record.request_id), record.shell)
    events = await watch_log(node, caller, record)  # the whole log again, to its end
    async with events:
        await _follow(events, final)
    return JSONResponse(final.snapshot())


@router.delete("/v1/responses/{rid}")
async def delete_response(rid: str, caller: CallerDep, node: NodeDep) -> Json:
    request_of(node, caller, rid)
    if not await responses_store(node).delete(rid, caller.tenant):
        raise not_found(rid)
    return {"id": rid, "object": "response.deleted", "deleted": True}


@router.get("/v1/responses/{rid}/input_items")
async def list_input_items(
    rid: str,
    caller: CallerDep,
    node: NodeDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    after: Annotated[str | None, Query(max_length=128)] = None,
) -> Json:
    items = list((await owned(node, caller, rid)).input_items)
    if order == "desc":
        items.reverse()
    ids = [item["id"] for item in items]
    start = ids.index(after) + 1 if after in ids else 0
    page = items[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": start + limit < len(items),
    }


async def _follow(stream: EventStream, renderer: ResponseRenderer) -> None:
    try:
        async for batch in stream.batches():
            for event in batch:
                renderer.render(event)
    except StreamStalled as exc:
        raise OpenAIError(504, "The answer stalled.", code=ErrorCode.STREAM_TIMEOUT) from exc
    except ServerDraining as exc:
        raise shutting_down() from exc
    except SubscriberDropped as exc:
        message = "The answer could not be buffered."
        raise OpenAIError(502, message, code=ErrorCode.OVERLOADED) from exc


async def _frames(
    stream: EventStream,
    renderer: ResponseRenderer,
    *,
    first: StreamEvent | None = None,
    after: int = -1,
) -> AsyncIterator[bytes]:
    """SSE frames (`event:` = the JSON `type`, `id:` = its sequence number) of the events
    numbered after `after`, then `[DONE]`."""
    try:
        if first is not None:
            yield _encode(renderer.render(first), after)
        async for batch in stream.batches():
            out = _encode([e for event in batch for e in renderer.render(event)], after)
            if out:
                yield out
        yield ServerSentEvent("[DONE]", sep="\n").encode()
    except StreamStalled:
        yield _encode([_stream_error(renderer, ErrorCode.STREAM_TIMEOUT, "stalled")], -1)
    except SubscriberDropped as exc:
        yield _encode([_stream_error(renderer, exc.code, exc.message)], -1)
    finally:
        await stream.aclose()


def _stream_error(renderer: ResponseRenderer, code: Any, what: str) -> Json:
    message = f"The stream ended: {what}; resume with starting_after."
    return {
        "type": "error",
        "sequence_number": renderer.seq,
        "code": code.value,
        "message": message,
        "param": None,
    }


def _encode(events: list[Json], after: int) -> bytes:
    return b"".join(
        ServerSentEvent(
            json.dumps(e, separators=(",", ":")),
            event=e["type"],
            id=str(e["sequence_number"]),
            sep="\n",
        ).encode()
        for e in events
        if e["sequence_number"] > after
    )
