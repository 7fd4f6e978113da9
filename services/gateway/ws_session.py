"""One WebSocket of `/v1/ws`: reads client messages, runs a feed task per request, writes frames.

Several requests share the socket: each chat or resume gets its own task and its own bounded
subscription (a slow feed is dropped alone), and one send lock keeps frames whole.
"""

import asyncio
import contextlib
import functools
import time
from collections.abc import Coroutine
from typing import Any

import structlog
from fastapi import WebSocket
from sqlalchemy.exc import SQLAlchemyError
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from contracts import ErrorCode, StreamEvent
from services.common.logging import bind_request
from services.common.openai_errors import OpenAIError
from services.gateway import ws_protocol as wire
from services.gateway.auth import store_unavailable, unauthorized
from services.gateway.callers import Caller
from services.gateway.conversations.memory import submit_chat
from services.gateway.node import GatewayNode
from services.gateway.responses.create import Created, create
from services.gateway.submit import (
    EventStream,
    StreamStalled,
    SubscriberDropped,
    cancel,
    watch,
)
from services.gateway.ws_protocol import (
    AuthMessage,
    CancelMessage,
    ChatMessage,
    PingMessage,
    ResponseCreateMessage,
    ResumeMessage,
    WsError,
    reply,
)

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
                    await self._chat(msg, self._caller)
                case ResponseCreateMessage():
                    await self._response(msg, self._caller)
                case CancelMessage() | ResumeMessage():
                    await self._about_a_stream(msg, self._caller)
        except _Gone:
            raise
        except Exception as exc:  # a bug must not take the socket (or the node) down
            log.exception("ws_message_failed", error=repr(exc))
            await self._send(wire.error_frame(ErrorCode.INTERNAL, "Internal error.", id=msg.id))

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
            await self._send(wire.from_error(store_unavailable(), msg.id))
            return
        if caller is None:
            await self._send(wire.from_error(unauthorized(), msg.id))
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

    async def _chat(self, msg: ChatMessage, caller: Caller) -> None:
        """The HTTP API's submit path: the same input and rate limits, and a refusal is an
        `error` frame, never a close."""
        try:
            stream, _ = await submit_chat(
                self._node,
                caller,
                msg.body,
                msg.conversation,
                stream=True,
                deadline_s=msg.deadline_s,
                via="ws",
            )
        except OpenAIError as exc:
            await self._send(wire.from_error(exc, msg.id))
            return
        self._spawn(stream.request_id, self._follow_new(msg, stream))

    async def _follow_new(self, msg: ChatMessage, stream: EventStream) -> None:
        request_id = stream.request_id
        try:
            with bind_request(request_id=request_id):
                await self._send(reply("ack", action="chat", id=msg.id, request_id=request_id))
                try:
                    first = await stream.first()
                except OpenAIError as exc:  # nobody took it: withdrawn, as on HTTP
                    await self._send(wire.from_error(exc, None, request_id))
                    return
                await self._send(wire.event_frame(first))
                await self._pump(stream, first.seq)
        finally:
            await self._done(stream)

    async def _response(self, msg: ResponseCreateMessage, caller: Caller) -> None:
        """The Responses API on the socket: the same create path as `POST /v1/responses`, and
        its events as frames, each naming its `response_id`."""
        try:
            made = await create(self._node, caller, msg.body, deadline_s=msg.deadline_s, via="ws")
        except OpenAIError as exc:
            await self._send(wire.from_error(exc, msg.id))
            return
        self._spawn(made.stream.request_id, self._follow_response(msg, made))

    async def _follow_response(self, msg: ResponseCreateMessage, made: Created) -> None:
        stream, rid = made.stream, made.id
        try:
            with bind_request(request_id=stream.request_id):
                ack = reply(
                    "ack",
                    action="response.create",
                    id=msg.id,
                    response_id=rid,
                    request_id=stream.request_id,
                )
                await self._send(ack)
                try:
                    first = await stream.first()
                except OpenAIError as exc:  # nobody took it: withdrawn, as on HTTP
                    await self._send(wire.from_error(exc, None, stream.request_id))
                    return
                await self._render(made, [first])
                async for batch in stream.batches():
                    await self._render(made, batch)
        except StreamStalled:
            await self._send(wire.stalled(stream.request_id, stream.last_seq))
        except SubscriberDropped as exc:
            await self._send(wire.cut(stream.request_id, stream.last_seq, exc))
        finally:
            await self._done(stream)

    async def _render(self, made: Created, events: list[StreamEvent]) -> None:
        for event in events:
            for out in made.renderer.render(event):
                await self._send(wire.response_frame(made.id, out))

    async def _about_a_stream(self, msg: CancelMessage | ResumeMessage, caller: Caller) -> None:
        if isinstance(msg, CancelMessage):
            await self._cancel(msg, caller)
        else:
            await self._resume(msg, caller)

    async def _cancel(self, msg: CancelMessage, caller: Caller) -> None:
        try:
            await cancel(self._node, caller, msg.request_id)
        except OpenAIError as exc:
            await self._send(wire.from_error(exc, msg.id, msg.request_id))
            return
        await self._send(reply("ack", action="cancel", id=msg.id, request_id=msg.request_id))

    async def _resume(self, msg: ResumeMessage, caller: Caller) -> None:
        if msg.request_id in self._streaming:
            await self._send(wire.already_streaming(msg.id, msg.request_id))
            return
        # Claimed before the history lookup, so a second resume meanwhile is refused.
        self._streaming.add(msg.request_id)
        try:
            stream = await watch(self._node, caller, msg.request_id, via="ws")
        except OpenAIError as exc:
            self._streaming.discard(msg.request_id)
            await self._send(wire.from_error(exc, msg.id, msg.request_id))
            return
        except BaseException:
            self._streaming.discard(msg.request_id)
            raise
        self._spawn(msg.request_id, self._follow_resumed(msg, stream))

    async def _follow_resumed(self, msg: ResumeMessage, stream: EventStream) -> None:
        """Events after `last_seq` from Kafka (on any node), then the live tail: exactly
        where the client left it, as an SSE resume does."""
        try:
            await self._send(reply("ack", action="resume", id=msg.id, request_id=msg.request_id))
            await self._pump(stream, msg.last_seq)
        finally:
            await self._done(stream)

    async def _done(self, stream: EventStream) -> None:
        self._streaming.discard(stream.request_id)  # at once: the client may resume it again
        await stream.aclose()

    async def _pump(self, stream: EventStream, after: int) -> None:
        """Send the events with seq > `after`; a stall or a drop ends with an error frame
        that tells the client where to resume."""
        request_id, last = stream.request_id, after
        try:
            async for batch in stream.batches():
                for event in batch:
                    if event.seq > after:
                        await self._send(wire.event_frame(event))
                        last = event.seq
        except StreamStalled:
            await self._send(wire.stalled(request_id, last))
        except SubscriberDropped as exc:
            await self._send(wire.cut(request_id, last, exc))
