"""One WebSocket of `/v1/ws`: reads client messages, runs a feed task per request, writes frames.

Several requests share the socket: each chat or resume gets its own task and its own bounded
subscription (a slow feed is dropped alone), and one send lock keeps frames whole.
"""

import asyncio
import contextlib
import functools
import time
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import structlog
from aiokafka.errors import KafkaError
from fastapi import WebSocket
from sqlalchemy.exc import SQLAlchemyError
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from contracts import (
    TERMINAL_TYPES,
    ChatRequested,
    ErrorCode,
    RequestRef,
    parse_request_id,
    utcnow,
)
from services.common.logging import bind_request
from services.common.redact import content_for_log
from services.fanout.history import HistoryReader
from services.fanout.hub import SubscriberDropped, Subscription
from services.gateway import ws_protocol as wire
from services.gateway.admission import RateLimited, admit
from services.gateway.callers import Caller
from services.gateway.errors import ApiError
from services.gateway.limits import check_input
from services.gateway.node import GatewayNode
from services.gateway.ws_protocol import (
    AuthMessage,
    CancelMessage,
    ChatMessage,
    PingMessage,
    ResumeMessage,
    WsError,
    reply,
)
from services.tenants.limiter import Ticket

log = structlog.get_logger("gateway")

AUTH_TIMEOUT_S = 10.0  # an unauthenticated socket must send `auth` within this


class _Gone(Exception):
    """The socket is closed or stuck: stop feeding it."""


class Session:
    def __init__(self, ws: WebSocket, node: GatewayNode, caller: Caller | None) -> None:
        self._ws, self._node, self._caller = ws, node, caller
        self._settings = node.settings
        self._lock = asyncio.Lock()
        self._feeds: set[asyncio.Task[None]] = set()
        self._streaming: set[str] = set()  # request ids whose events this socket gets now
        self._gone = asyncio.Event()
        self._last_sent = time.monotonic()

    async def run(self) -> None:
        reader = asyncio.create_task(self._read())
        gone = asyncio.create_task(self._gone.wait())
        beat = asyncio.create_task(self._heartbeat())
        try:
            await asyncio.wait({reader, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Each feed cancelled before its stream ended tells the workers its client left.
            tasks = [reader, gone, beat, *self._feeds]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._gone.is_set():  # a send timed out or failed: make sure the socket closes
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._ws.close(code=1011, reason="send failed")

    async def _read(self) -> None:
        auth_deadline = asyncio.get_running_loop().time() + AUTH_TIMEOUT_S
        while True:
            try:
                async with asyncio.timeout_at(None if self._caller else auth_deadline):
                    message = await self._ws.receive()
            except TimeoutError:
                with contextlib.suppress(Exception):
                    await self._ws.close(code=1008, reason="authentication timeout")
                return
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            await self._handle(raw if raw is not None else message.get("bytes") or b"")

    async def _handle(self, raw: str | bytes) -> None:
        msg = wire.parse_client_message(raw)
        try:
            match msg:
                case WsError():
                    await self._send(msg.frame())
                case PingMessage():
                    await self._send(reply("pong", id=msg.id))
                case AuthMessage():
                    await self._auth(msg)
                case _ if self._caller is None:
                    await self._send(wire.unauthenticated(msg.id))
                case ChatMessage():
                    await self._start_chat_checked(msg, self._caller)
                case CancelMessage():
                    await self._cancel(msg, self._caller)
                case ResumeMessage():
                    await self._resume(msg, self._caller)
        except _Gone:
            raise
        except Exception as exc:  # a bug must not take the socket (or the node) down
            log.exception("ws_message_failed", error=repr(exc))
            await self._send(
                wire.error_frame(ErrorCode.INTERNAL.value, "Internal error.", id=msg.id)
            )

    async def _send(self, text: str) -> None:
        async with self._lock:
            if self._gone.is_set():
                raise _Gone
            try:
                async with asyncio.timeout(self._settings.send_timeout_s):
                    await self._ws.send_text(text)
            except (TimeoutError, WebSocketDisconnect, WebSocketDisconnected) as exc:
                self._gone.set()
                raise _Gone from exc
            self._last_sent = time.monotonic()

    async def _heartbeat(self) -> None:
        """A `heartbeat` frame after `ws_heartbeat_s` without any, so proxies keep the socket."""
        period = self._settings.ws_heartbeat_s
        with contextlib.suppress(_Gone):
            while True:
                idle = time.monotonic() - self._last_sent
                if idle >= period:
                    await self._send(reply("heartbeat"))
                    idle = 0.0
                await asyncio.sleep(period - idle)

    async def _auth(self, msg: AuthMessage) -> None:
        try:
            caller = await self._node.auth.caller(msg.api_key)
        except (SQLAlchemyError, OSError):
            await self._send(wire.unavailable(msg.id))
            return
        if caller is None:
            await self._send(wire.error_frame("invalid_api_key", "Incorrect API key.", id=msg.id))
            return
        self._caller = caller
        await self._send(reply("ack", action="auth", id=msg.id))

    def _spawn(self, request_id: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._feeds.add(task)
        self._streaming.add(request_id)
        task.add_done_callback(functools.partial(self._feed_done, request_id))

    def _feed_done(self, request_id: str, task: asyncio.Task[None]) -> None:
        self._feeds.discard(task)
        if not task.cancelled() and not isinstance(task.exception(), _Gone | None):
            log.error("ws_feed_failed", request_id=request_id, error=repr(task.exception()))

    def _known(self, request_id: str, caller: Caller) -> RequestRef | None:
        """The request's partition and time, if it is `caller`'s (else as if it did not exist)."""
        ref = parse_request_id(request_id)
        if ref is None or not self._node.owns(request_id, caller.tenant):
            return None
        return ref

    async def _start_chat_checked(self, msg: ChatMessage, caller: Caller) -> None:
        """The same input and rate limits as the HTTP API; a refusal is an `error`, never a
        close."""
        try:
            check_input(msg.body, self._settings.limits)
        except ApiError as exc:
            await self._send(
                wire.error_frame(
                    exc.code or "invalid_value", exc.message, param=exc.param, id=msg.id
                )
            )
            return
        partition = self._node.reply_partition()
        request_id = self._node.new_request_id(partition, caller.tenant, int(time.time() * 1000))
        try:
            ticket, _ = await admit(self._node, caller, msg.body, request_id)
        except RateLimited as exc:
            await self._send(wire.rate_limited(msg.id, exc.message, exc.retry_after_s))
            return
        except ApiError:
            await self._send(wire.unavailable(msg.id))
            return
        self._start_chat(msg, caller, partition, request_id, ticket)

    def _start_chat(
        self,
        msg: ChatMessage,
        caller: Caller,
        partition: int,
        request_id: str,
        ticket: Ticket | None,
    ) -> None:
        body, deadline_s = msg.body, msg.deadline_s
        request = ChatRequested(
            request_id=request_id,
            tenant_id=caller.tenant,
            model=body.model,
            messages=tuple(body.messages),
            params=body.passthrough_params(),
            stream=True,
            include_usage=body.include_usage,
            reply_partition=partition,
            deadline=utcnow() + timedelta(seconds=deadline_s) if deadline_s else None,
        )
        self._spawn(request_id, self._chat(msg, request, ticket))

    async def _chat(self, msg: ChatMessage, request: ChatRequested, ticket: Ticket | None) -> None:
        request_id, finished, tokens = request.request_id, False, None
        try:
            # Subscribed before publishing, so not even the first event can be missed.
            with bind_request(request_id=request_id), self._node.hub.subscribe(request_id) as sub:
                try:
                    await self._node.publisher.chat(request)
                except KafkaError as exc:
                    finished = True
                    log.error("publish_failed", error=type(exc).__name__)
                    await self._send(wire.unavailable(msg.id))
                    return
                log.info(
                    "request_published",
                    tenant=request.tenant_id,
                    model=request.model,
                    via="ws",
                    **content_for_log(self._settings.log_content, request.messages),
                )
                await self._send(reply("ack", action="chat", id=msg.id, request_id=request_id))
                first_s = self._settings.first_event_timeout_s
                finished, tokens = await self._pump(sub, -1, no_worker_s=first_s)
        finally:
            self._streaming.discard(request_id)
            if not finished:
                self._node.detach(request_id)
            self._node.release(ticket, tokens)

    async def _cancel(self, msg: CancelMessage, caller: Caller) -> None:
        request_id = msg.request_id
        if self._known(request_id, caller) is None:
            await self._send(wire.not_found(msg.id, request_id))
            return
        try:
            await self._node.publisher.cancel(request_id, reason="client")
        except KafkaError:
            await self._send(wire.unavailable(msg.id, request_id))
            return
        await self._send(reply("ack", action="cancel", id=msg.id, request_id=request_id))

    async def _resume(self, msg: ResumeMessage, caller: Caller) -> None:
        ref = self._known(msg.request_id, caller)
        if ref is None:
            await self._send(wire.not_found(msg.id, msg.request_id))
        elif msg.request_id in self._streaming:
            await self._send(wire.already_streaming(msg.id, msg.request_id))
        else:
            self._spawn(msg.request_id, self._watch(msg, ref))

    async def _watch(self, msg: ResumeMessage, ref: RequestRef) -> None:
        """Events after `last_seq` from Kafka (on any node), then the live tail: streams.py's
        way, so a resumed stream continues exactly where the client left it."""
        s, request_id = self._settings, msg.request_id
        sub = Subscription(None, request_id, s.subscriber_buffer)
        client_id = f"tokenbus-gateway-ws-{s.instance}"
        reader = HistoryReader(s.bootstrap_servers, s.topics.tokens.name, ref, sub, client_id)
        reader.start()
        attached = finished = False
        try:
            if not await reader.wait_found(s.first_event_timeout_s):
                await self._send(wire.not_found(msg.id, request_id))
                return
            self._node.fire(self._node.publisher.attached(request_id))
            attached = True
            await self._send(reply("ack", action="resume", id=msg.id, request_id=request_id))
            finished, _ = await self._pump(sub, msg.last_seq)
        finally:
            self._streaming.discard(request_id)  # at once: the client may resume it again
            await reader.stop()
            if attached and not finished:
                self._node.detach(request_id)

    async def _pump(
        self, sub: Subscription, after: int, no_worker_s: float | None = None
    ) -> tuple[bool, int | None]:
        """Send `sub`'s events with seq > `after`. True once the stream is over for the client
        (False: dropped as too slow; it may resume from the `last_seq` it was told), and the
        total tokens of the final event, if it came."""
        request_id, last = sub.request_id, after
        timeout = no_worker_s or self._settings.idle_timeout_s
        while True:
            try:
                async with asyncio.timeout(timeout):
                    event = await sub.next()
            except TimeoutError:
                if no_worker_s is None:
                    await self._send(wire.stalled(request_id, last))
                else:  # nobody took the request: withdraw it, as the HTTP path does
                    with contextlib.suppress(KafkaError):
                        await self._node.publisher.cancel(request_id, reason="no_worker")
                    await self._send(wire.no_worker(request_id))
                return True, None
            except SubscriberDropped:
                await self._send(wire.slow_consumer(request_id, last))
                return False, None
            if event is None:
                return True, None
            timeout, no_worker_s = self._settings.idle_timeout_s, None
            if event.seq > after:
                await self._send(wire.event_frame(event))
                last = event.seq
            if event.type in TERMINAL_TYPES:
                usage = event.usage  # type: ignore[union-attr]
                return True, usage.total_tokens if usage is not None else None
