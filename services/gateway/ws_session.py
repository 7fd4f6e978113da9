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
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from contracts import (
    TERMINAL_TYPES,
    ChatRequested,
    ErrorCode,
    RequestRef,
    new_request_id,
    parse_request_id,
    utcnow,
)
from services.common.logging import bind_request
from services.fanout.history import HistoryReader
from services.fanout.hub import SubscriberDropped, Subscription
from services.gateway import ws_protocol as wire
from services.gateway.auth import DEV_TENANT
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

log = structlog.get_logger("gateway")

AUTH_TIMEOUT_S = 10.0  # an unauthenticated socket must send `auth` within this


def tenant_for_key(keys: dict[str, str], key: str | None) -> str | None:
    """The key's tenant; anyone is the dev tenant when no keys are configured."""
    if not keys:
        return DEV_TENANT
    return keys.get(key) if key is not None else None


class _Gone(Exception):
    """The socket is closed or stuck: stop feeding it."""


class Session:
    def __init__(self, ws: WebSocket, node: GatewayNode, tenant: str | None) -> None:
        self._ws, self._node, self._tenant = ws, node, tenant
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
                async with asyncio.timeout_at(None if self._tenant else auth_deadline):
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
                case _ if self._tenant is None:
                    await self._send(wire.unauthenticated(msg.id))
                case ChatMessage():
                    await self._start_chat_checked(msg)
                case CancelMessage():
                    await self._cancel(msg)
                case ResumeMessage():
                    await self._resume(msg)
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
        tenant = tenant_for_key(self._settings.api_keys, msg.api_key)
        if tenant is None:
            await self._send(wire.error_frame("invalid_api_key", "Incorrect API key.", id=msg.id))
            return
        self._tenant = tenant
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

    def _known(self, request_id: str) -> RequestRef | None:
        ref = parse_request_id(request_id)
        if ref is None or ref.partition >= self._settings.topics.tokens.partitions:
            return None
        return ref

    async def _start_chat_checked(self, msg: ChatMessage) -> None:
        """The same input limits as the HTTP API; a refusal is an `error`, never a close."""
        try:
            check_input(msg.body, self._settings.limits)
        except ApiError as exc:
            await self._send(
                wire.error_frame(
                    exc.code or "invalid_value", exc.message, param=exc.param, id=msg.id
                )
            )
            return
        self._start_chat(msg)

    def _start_chat(self, msg: ChatMessage) -> None:
        partition = self._node.reply_partition()
        request_id = new_request_id(partition, int(time.time() * 1000))
        body, deadline_s = msg.body, msg.deadline_s
        request = ChatRequested(
            request_id=request_id,
            tenant_id=self._tenant or DEV_TENANT,
            model=body.model,
            messages=tuple(body.messages),
            params=body.passthrough_params(),
            stream=True,
            include_usage=body.include_usage,
            reply_partition=partition,
            deadline=utcnow() + timedelta(seconds=deadline_s) if deadline_s else None,
        )
        self._spawn(request_id, self._chat(msg, request))

    async def _chat(self, msg: ChatMessage, request: ChatRequested) -> None:
        request_id, finished = request.request_id, False
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
                    "request_published", tenant=request.tenant_id, model=request.model, via="ws"
                )
                await self._send(reply("ack", action="chat", id=msg.id, request_id=request_id))
                first_s = self._settings.first_event_timeout_s
                finished = await self._pump(sub, -1, no_worker_s=first_s)
        finally:
            self._streaming.discard(request_id)
            if not finished:
                self._node.detach(request_id)

    async def _cancel(self, msg: CancelMessage) -> None:
        request_id = msg.request_id
        if self._known(request_id) is None:
            await self._send(wire.not_found(msg.id, request_id))
            return
        try:
            await self._node.publisher.cancel(request_id, reason="client")
        except KafkaError:
            await self._send(wire.unavailable(msg.id, request_id))
            return
        await self._send(reply("ack", action="cancel", id=msg.id, request_id=request_id))

    async def _resume(self, msg: ResumeMessage) -> None:
        ref = self._known(msg.request_id)
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
            finished = await self._pump(sub, msg.last_seq)
        finally:
            self._streaming.discard(request_id)  # at once: the client may resume it again
            await reader.stop()
            if attached and not finished:
                self._node.detach(request_id)

    async def _pump(self, sub: Subscription, after: int, no_worker_s: float | None = None) -> bool:
        """Send `sub`'s events with seq > `after`; True once the stream is over for the client
        (False: dropped as too slow; it may resume from the `last_seq` it was told)."""
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
                return True
            except SubscriberDropped:
                await self._send(wire.slow_consumer(request_id, last))
                return False
            if event is None:
                return True
            timeout, no_worker_s = self._settings.idle_timeout_s, None
            if event.seq > after:
                await self._send(wire.event_frame(event))
                last = event.seq
            if event.type in TERMINAL_TYPES:
                return True
