"""The one submit path and the one event source of the gateway.

`submit` turns a chat body into a queued request: input limits, a tenant-bound id on one of
this node's reply partitions, rate-limit admission, a hub subscription taken before the
publish (so not even the first event can be missed), then `ChatRequested` on `llm.requests`.
`watch` opens an existing request on any node: its events from Kafka since it began, then the
live tail. Both return an `EventStream`; HTTP, SSE and WebSocket only render its events.
"""

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Literal, Protocol

import structlog
from aiokafka.errors import KafkaError
from opentelemetry.trace import Span, StatusCode, Tracer

from contracts import (
    TERMINAL_TYPES,
    ChatRequested,
    EdgeCode,
    ErrorCode,
    Failed,
    RequestRef,
    Started,
    StreamEvent,
    parse_request_id,
    utcnow,
)
from services.common.logging import bind_request
from services.common.metrics import RequestTimer
from services.common.openai_errors import OpenAIError, error_for_code
from services.common.redact import content_for_log
from services.fanout.history import HistoryReader
from services.fanout.hub import ServerDraining, SubscriberDropped, Subscription
from services.gateway.admission import admit
from services.gateway.callers import Caller
from services.gateway.limits import check_input
from services.gateway.node import GatewayNode
from services.gateway.openai_wire import ChatCompletionRequest
from services.tenants.limiter import Ticket

__all__ = [
    "EventStream",
    "ServerDraining",
    "StreamStalled",
    "SubscriberDropped",
    "cancel",
    "submit",
    "watch",
]

log = structlog.get_logger("gateway")


class StreamStalled(Exception):
    """No event came for `idle_timeout_s`: the stream ends for this client (retry or resume)."""


class Tap(Protocol):
    """Sees a request's events before its client does (e.g. to keep a conversation's turn)."""

    async def events(self, batch: list[StreamEvent]) -> None: ...

    async def closed(self, finished: bool) -> None: ...


class DeliverySpan:
    """The gateway's part of a request's trace: from its `started` to its terminal event going
    out to the client, under the HTTP (or WebSocket) span. Names and counts, never text."""

    __slots__ = ("_span", "_tracer")

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer
        self._span: Span | None = None

    def event(self, event: StreamEvent) -> None:
        if isinstance(event, Started) and self._span is None:
            self._span = self._tracer.start_span(
                "tokenbus.deliver",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.response.model": event.model,
                    "tokenbus.request_id": event.request_id,
                    "tokenbus.tier": event.tier,
                    "tokenbus.route": event.route_reason,
                },
            )
        elif event.type in TERMINAL_TYPES and self._span is not None:
            usage = event.usage  # type: ignore[union-attr]
            if usage is not None:
                self._span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
                self._span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
            if isinstance(event, Failed):
                self._span.set_status(StatusCode.ERROR, event.code.value)
            self.end()

    def end(self) -> None:
        if self._span is not None:
            self._span.end()
            self._span = None


class EventStream:
    """One client's view of one request: its events in order, and what leaving means.

    Closing it tells the workers the client left early (a detach starts the grace period),
    releases the request's concurrency ticket with the tokens used, and stops its feed.
    """

    def __init__(
        self,
        node: GatewayNode,
        sub: Subscription,
        *,
        ticket: Ticket | None = None,
        reader: HistoryReader | None = None,
        timer: RequestTimer | None = None,
        transport: str = "http",
    ) -> None:
        self.request_id = sub.request_id
        self.finished = False  # over for this client: leaving now is no detach
        self.last_seq = -1  # the last event handed out
        self.tokens: int | None = None  # total tokens of the terminal event
        self._node, self._sub, self._ticket, self._reader = node, sub, ticket, reader
        # Counted when it happens: a writer stuck on a full socket learns of it only later.
        sub.on_drop = functools.partial(node.dropped, self.request_id)
        self._closed = False
        self._detach = True  # leaving early starts the grace period
        self.tap: Tap | None = None
        self._timer = timer
        self._transport = transport
        self._trace = DeliverySpan(node.tracer) if timer and node.tracer else None
        node.streams.add(self)
        if node.metrics is not None:
            node.metrics.active_streams.labels(transport).inc()

    async def first(self) -> StreamEvent:
        """The first event of a request just submitted. Nobody took it within
        `first_event_timeout_s`: it is withdrawn (cancelled) and the client gets a 503."""
        try:
            event = await self._next(self._node.settings.first_event_timeout_s)
        except StreamStalled as exc:
            with contextlib.suppress(KafkaError):
                await self._node.publisher.cancel(self.request_id, reason="no_worker")
            raise OpenAIError(
                503,
                "No inference worker took the request in time; try again.",
                code=ErrorCode.OVERLOADED,
            ) from exc
        if event is None:
            raise OpenAIError(502, "The stream ended early.", code=ErrorCode.INTERNAL)
        self._note(event)
        if self.tap is not None:
            await self.tap.events([event])
        return event

    async def started(self) -> Started:
        """The worker's `started` of a request just submitted (so headers can name the
        route); a `failed` before it is the HTTP error it stands for."""
        first = await self.first()
        if isinstance(first, Failed):
            raise error_for_code(first.code, first.message)
        if not isinstance(first, Started):
            raise OpenAIError(502, "The stream began out of order.", code=ErrorCode.INTERNAL)
        return first

    def keep_running(self) -> None:
        """This client leaving is no reason to stop: a background request runs on alone."""
        self._detach = False

    async def so_far(self) -> list[StreamEvent]:
        """Every event the log holds now, without waiting for the end (a snapshot): for a
        stream opened with `watch`, which reads the log up to where it ended at the start."""
        assert self._reader is not None, "only a watched stream knows where the log ends"
        events: list[StreamEvent] = []
        async with asyncio.timeout(self._node.settings.first_event_timeout_s):
            while not self.finished and not (self._reader.caught_up.is_set() and self._sub.empty):
                try:
                    async with asyncio.timeout(0.05):
                        event = await self._sub.next()
                except TimeoutError:
                    continue
                if event is None:
                    self.finished = True
                else:
                    self._note(event)
                    events.append(event)
        return events

    async def batches(self, limit: int = 256) -> AsyncIterator[list[StreamEvent]]:
        """The events in order, all that are already waiting at once (so a writer can send a
        burst in one write), up to and including the terminal one.

        Raises `StreamStalled` after `idle_timeout_s` without an event, and `SubscriberDropped`
        when this client fell too far behind (it may resume from `last_seq`).
        """
        idle_s = self._node.settings.idle_timeout_s
        while not self.finished:
            event = await self._next(idle_s)
            events: list[StreamEvent] = []
            for item in (event, *self._sub.ready(limit)):
                if item is None:
                    break
                events.append(item)
                self._note(item)
                if self.finished:
                    break
            if events:
                if self.tap is not None:
                    await self.tap.events(events)
                yield events
            if item is None:  # the feed ended: cut (too slow, or draining), or nothing more
                self._sub.raise_if_cut()
                self.finished = True

    async def _next(self, timeout_s: float) -> StreamEvent | None:
        try:
            async with asyncio.timeout(timeout_s):
                event = await self._sub.next()
        except TimeoutError as exc:
            self.finished = True
            raise StreamStalled(self.request_id) from exc
        if event is None:
            self.finished = True
        return event

    def _note(self, event: StreamEvent) -> None:
        if self._timer is not None:
            self._timer.event(event)
        if self._trace is not None:
            self._trace.event(event)
        self.last_seq = max(self.last_seq, event.seq)
        if event.type in TERMINAL_TYPES:
            self.finished = True
            usage = event.usage  # type: ignore[union-attr]
            self.tokens = usage.total_tokens if usage is not None else None

    def cut_for_drain(self) -> None:
        """The node's drain deadline: the client gets a resumable error after what is queued."""
        self._sub.drain()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._node.streams.discard(self)
        if self._trace is not None:
            self._trace.end()  # a client that left ends it early
        metrics = self._node.metrics
        if metrics is not None:
            metrics.active_streams.labels(self._transport).dec()
        if not self.finished and self._detach:
            if metrics is not None:
                metrics.disconnects.labels(self._transport).inc()
            self._node.detach(self.request_id)
        self._node.release(self._ticket, self.tokens)
        self._sub.close()
        if self._reader is not None:
            await self._reader.stop()
        if self.tap is not None:
            await self.tap.closed(self.finished)

    async def __aenter__(self) -> "EventStream":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


async def submit(
    node: GatewayNode,
    caller: Caller,
    body: ChatCompletionRequest,
    *,
    stream: bool,
    deadline_s: float | None = None,
    via: str = "http",
    api: Literal["chat", "responses"] = "chat",
    summarised_turns: int = 0,
) -> tuple[EventStream, dict[str, str]]:
    """Check, admit and publish a chat request; its event stream and rate-limit headers.

    Every refusal is an `OpenAIError` (400 input, 429 limits, 503 queue) carrying the request
    id in `x-request-id` once one exists; nothing is published for a refused request.
    """
    if node.draining:
        raise shutting_down()
    # From here the client's clock runs: TTFT and duration include admission and the publish.
    timer = node.metrics.request("ws" if via == "ws" else api) if node.metrics else None
    check_input(body, node.settings.limits)
    partition = node.reply_partition()
    request_id = node.new_request_id(partition, caller.tenant, int(time.time() * 1000))
    request = ChatRequested(
        request_id=request_id,
        tenant_id=caller.tenant,
        model=body.model,
        messages=tuple(body.messages),
        params=body.passthrough_params(),
        stream=stream,
        include_usage=body.include_usage,
        reply_partition=partition,
        node=node.publisher.node,
        deadline=utcnow() + timedelta(seconds=deadline_s) if deadline_s else None,
        api=api,
        summarised_turns=summarised_turns,
    )
    with bind_request(request_id=request_id):
        try:
            ticket, rate_headers = await admit(node, caller, body, request_id)
            sub = node.hub.subscribe(request_id)
            try:
                await _publish(node, request, via)
            except BaseException:
                sub.close()
                node.release(ticket, None)
                raise
        except OpenAIError as exc:
            # Errors name the request too, so it can be found in logs and usage.
            exc.headers = {**(exc.headers or {}), "x-request-id": request_id}
            raise
    events = EventStream(node, sub, ticket=ticket, timer=timer, transport=via)
    return events, rate_headers


async def _publish(node: GatewayNode, request: ChatRequested, via: str) -> None:
    try:
        await node.publisher.chat(request)
    except KafkaError as exc:
        log.error("publish_failed", error=type(exc).__name__)
        raise queue_unavailable() from exc
    log.info(
        "request_published",
        tenant=request.tenant_id,
        model=request.model,
        via=via,
        **content_for_log(node.settings.log_content, request.messages),
    )


async def watch(
    node: GatewayNode,
    caller: Caller,
    request_id: str,
    *,
    found_within_s: float | None = None,
    via: str = "http",
) -> EventStream:
    """`caller`'s request from its first event, on any node; a 404 if none comes within
    `found_within_s` (default: `first_event_timeout_s`, as long as a worker may take)."""
    ref = owned(node, caller, request_id)
    if node.draining:  # the client should resume on a node that stays
        raise shutting_down()
    settings = node.settings
    retention_ms = settings.topics.tokens.retention_ms
    if retention_ms is not None and ref.age_ms() > retention_ms:
        raise stream_expired(request_id, retention_ms)  # its events are gone, or going
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
        within = settings.first_event_timeout_s if found_within_s is None else found_within_s
        if not await reader.wait_found(within):
            raise stream_not_found(request_id)
    except BaseException:
        await reader.stop()
        raise
    # One more watcher: the worker holds off the grace-period cancel while it is here.
    node.fire(node.publisher.attached(request_id))
    if node.metrics is not None:
        node.metrics.resumes.labels(via).inc()
    return EventStream(node, sub, reader=reader, transport=via)


async def cancel(node: GatewayNode, caller: Caller, request_id: str) -> None:
    """Ask the workers to stop `caller`'s request (a 404 if it is not theirs)."""
    owned(node, caller, request_id)
    if node.metrics is not None:
        node.metrics.cancels.inc()
    try:
        await node.publisher.cancel(request_id, reason="client")
    except KafkaError as exc:
        log.error("publish_failed", error=type(exc).__name__, request_id=request_id)
        raise queue_unavailable() from exc


def owned(node: GatewayNode, caller: Caller, request_id: str) -> RequestRef:
    """The request's partition and time if it is `caller`'s; else a 404, exactly as for an id
    that never existed (another tenant learns nothing)."""
    ref = parse_request_id(request_id)
    if ref is None or not node.owns(request_id, caller.tenant):
        raise stream_not_found(request_id)
    return ref


def stream_not_found(request_id: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"No stream with id '{request_id}'.",
        param="request_id",
        code=EdgeCode.STREAM_NOT_FOUND,
    )


def stream_expired(request_id: str, retention_ms: int) -> OpenAIError:
    hours = retention_ms / 3_600_000
    return OpenAIError(
        410,
        f"The events of stream '{request_id}' are no longer retained (streams can be resumed"
        f" for {hours:g} hours); send the request again.",
        param="request_id",
        code=EdgeCode.STREAM_EXPIRED,
    )


def shutting_down() -> OpenAIError:
    return OpenAIError(
        503,
        "This server is shutting down; send the request to another node.",
        code=EdgeCode.SERVER_SHUTTING_DOWN,
        headers={"retry-after": "1"},
    )


def queue_unavailable() -> OpenAIError:
    return OpenAIError(
        503,
        "The request queue is unavailable; try again.",
        code=EdgeCode.SERVICE_UNAVAILABLE,
        headers={"retry-after": "1"},
    )
