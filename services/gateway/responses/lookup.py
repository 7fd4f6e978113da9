"""Finding a stored response and reading its events: for the routes, and for chains of
`previous_response_id`."""

from typing import Any, overload

from contracts import EdgeCode, parse_request_id, request_of_response
from services.common.openai_errors import OpenAIError
from services.gateway.callers import Caller
from services.gateway.node import GatewayNode
from services.gateway.responses.events import ResponseRenderer
from services.gateway.responses.store import ResponseStore, StoredResponse
from services.gateway.submit import EventStream, watch

Json = dict[str, Any]


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


async def snapshot_now(
    node: GatewayNode, caller: Caller, record: StoredResponse, renderer: ResponseRenderer
) -> Json:
    """The response as its events in the log say now; still `queued` when no worker has
    taken it yet (no waiting for one)."""
    events = await watch_log(node, caller, record, found_within_s=_PEEK_S)
    if events is None:
        return renderer.snapshot()
    async with events:
        for event in await events.so_far():
            renderer.render(event)
    return renderer.snapshot()


def request_of(node: GatewayNode, caller: Caller, rid: str) -> str:
    request_id = request_of_response(rid)
    if request_id is None or not node.owns(request_id, caller.tenant):
        raise not_found(rid)
    return request_id


async def owned(node: GatewayNode, caller: Caller, rid: str) -> StoredResponse:
    """The stored response if it is `caller`'s: else 404, exactly as for one that never was."""
    request_of(node, caller, rid)
    record = await responses_store(node).get(rid, caller.tenant)
    if record is None:
        raise not_found(rid)
    return record


_PEEK_S = 1.0  # how long a snapshot looks for the first event of a response just created


@overload
async def watch_log(node: GatewayNode, caller: Caller, record: StoredResponse) -> EventStream: ...


@overload
async def watch_log(
    node: GatewayNode, caller: Caller, record: StoredResponse, *, found_within_s: float
) -> EventStream | None: ...


async def watch_log(
    node: GatewayNode,
    caller: Caller,
    record: StoredResponse,
    *,
    found_within_s: float | None = None,
) -> EventStream | None:
    """The response's events from the log; None for a peek at one not started yet."""
    try:
        events = await watch(node, caller, record.request_id, found_within_s=found_within_s)
    except OpenAIError as exc:
        if exc.status != 404:
            raise
        error = no_events(record)
        if found_within_s is not None and error.status == 409:
            return None
        raise error from exc
    events.keep_running()  # reading a response never cancels it
    return events


def no_events(record: StoredResponse) -> OpenAIError:
    """No event in the log: not taken by a worker yet, or its events are gone."""
    ref = parse_request_id(record.request_id)
    if ref is not None and ref.age_ms() < 3_600_000:
        return OpenAIError(
            409,
            f"Response '{record.id}' has not started yet; retry shortly.",
            param="response_id",
            code=EdgeCode.RESPONSE_NOT_STARTED,
        )
    return OpenAIError(
        410,
        f"The events of response '{record.id}' are no longer retained.",
        param="response_id",
        code=EdgeCode.RESPONSE_EXPIRED,
    )


def not_found(rid: str) -> OpenAIError:
    return OpenAIError(
        404, f"No response with id '{rid}'.", param="response_id", code=EdgeCode.NOT_FOUND
    )
