"""One member's socket in a room: the join, then its messages in, and the room's frames out
(from its `Outbox`, written by one task so a slow socket holds up nobody else)."""

import asyncio
import contextlib
import secrets
import time
from typing import Any

import structlog
from fastapi import WebSocket
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from contracts import EdgeCode, ErrorCode
from contracts.rooms import MemberAsked, MemberLeft, MemberSaid, MemberTyping
from services.common.openai_errors import OpenAIError
from services.gateway.callers import Caller
from services.gateway.conversations.memory import conversations_of, submit_chat
from services.gateway.conversations.store import ConversationStore
from services.gateway.node import GatewayNode
from services.gateway.rooms import protocol as wire
from services.gateway.rooms.hub import LocalMember, Outbox, RoomHub, RoomRefused, answer_id
from services.gateway.submit import EventStream, cancel
from services.gateway.ws_protocol import WsError, error_frame, from_error, reply

log = structlog.get_logger("gateway")

JOIN_TIMEOUT_S = 10.0


class _Closed(Exception):
    """The socket is closed or stuck."""


class _Bucket:
    """Messages per second per member, with bursts."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate, self._burst = rate, burst
        self._tokens, self._at = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class RoomSession:
    def __init__(
        self, ws: WebSocket, node: GatewayNode, hub: RoomHub, caller: Caller, room_id: str
    ) -> None:
        self._ws, self._node, self._hub, self._caller = ws, node, hub, caller
        self._room = room_id
        self._settings = node.settings
        self._lock = asyncio.Lock()
        self._local: LocalMember | None = None
        self._bucket = _Bucket(
            self._settings.room_messages_per_s, self._settings.room_message_burst
        )
        self._pos = -1  # last room position sent
        self._seq = -1  # last answer seq sent

    async def run(self) -> None:
        store = conversations_of(self._node)
        join = await self._await_join()
        if join is None:
            return
        if self._node.draining:
            message = "This server is shutting down; join on another node."
            await self._close_with(EdgeCode.SERVER_SHUTTING_DOWN, message, 1012)
            return
        if await store.get(self._room, self._caller.tenant) is None:
            await self._close_with(EdgeCode.NOT_FOUND, f"No room with id '{self._room}'.", 1008)
            return
        member = join.member if join.member and self._hub.knows(self._room, join.member) else None
        local = LocalMember(
            member or "mem_" + secrets.token_hex(12),
            join.user,
            Outbox(self._settings.subscriber_buffer),
            skip_seq=join.last_seq,
        )
        try:
            state = await self._hub.join(self._room, self._caller.tenant, local)
        except RoomRefused as exc:
            await self._close_with(exc.code, exc.message, 1008)
            return
        self._local = local
        try:
            await self._welcome(store, state, join)
            writer = asyncio.create_task(self._write(local.outbox))
            reader = asyncio.create_task(self._read())
            try:
                await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (writer, reader):
                    task.cancel()
                await asyncio.gather(writer, reader, return_exceptions=True)
        except _Closed:
            pass
        finally:
            self._hub.detach(self._room, local)

    async def _await_join(self) -> wire.JoinMessage | None:
        async with asyncio.timeout(JOIN_TIMEOUT_S):
            while True:
                raw = await self._receive()
                if raw is None:
                    return None
                msg = wire.parse_room_message(raw)
                match msg:
                    case WsError():
                        await self._send(msg.frame())
                    case wire.JoinMessage():
                        return msg
                    case wire.PingMessage():
                        await self._send(reply("pong", id=msg.id))
                    case _:
                        await self._send(_join_first(msg.id))

    async def _welcome(
        self, store: ConversationStore, state: dict[str, Any], join: wire.JoinMessage
    ) -> None:
        assert self._local is not None
        history = await _history(
            store, self._room, self._caller.tenant, self._settings.room_history_items
        )
        asked = state["answering"] and self._hub.question(self._room, state["answering"])
        if asked:
            history.append(asked)
        await self._send(
            reply(
                "room_state",
                room=self._room,
                member=self._local.member,
                user=self._local.user,
                members=state["members"],
                history=history,
                answering=state["answering"],
                pos=state["pos"],
            )
        )
        self._pos = state["pos"]
        if join.since is not None:
            missed = self._hub.missed(self._room, join.since, state["pos"], self._local.member)
            if missed is None:  # older than this node keeps: the history above has the messages
                await self._send(reply("missed", complete=False))
            for text in missed or ():
                await self._send(text)

    async def _write(self, outbox: Outbox) -> None:
        while True:
            try:
                async with asyncio.timeout(self._settings.ws_heartbeat_s):
                    frames = await outbox.take()
            except TimeoutError:  # so proxies keep a quiet room's socket
                await self._send(reply("heartbeat"))
                continue
            if outbox.dropped:
                message = "You read too slowly; join again with `since` to get what you missed."
                await self._cut(EdgeCode.SLOW_CONSUMER, message, 1013)
                return
            if outbox.closed:
                return
            for text, pos, seq in frames:
                await self._send(text)
                self._pos = self._pos if pos is None else pos
                self._seq = self._seq if seq is None else seq
            if outbox.draining:
                message = "This server is shutting down; join again with `since` on another node."
                await self._cut(EdgeCode.SERVER_SHUTTING_DOWN, message, 1012)
                return

    async def _cut(self, code: EdgeCode, message: str, close_code: int) -> None:
        """The end of this socket's feed: where to come back from (`pos`, `last_seq`)."""
        frame = error_frame(code, message, retryable=True, pos=self._pos, last_seq=self._seq)
        await self._send(frame)
        await self._ws.close(code=close_code)

    async def _read(self) -> None:
        while True:
            raw = await self._receive()
            if raw is None:
                return
            msg = wire.parse_room_message(raw)
            try:
                if await self._handle(msg):
                    return
            except _Closed:
                raise
            except Exception as exc:  # a bug must not take the room (or the node) down
                log.exception("room_message_failed", error=repr(exc))
                await self._send(error_frame(ErrorCode.INTERNAL, "Internal error.", id=msg.id))

    async def _handle(self, msg: wire.RoomMessage | WsError) -> bool:
        """One message; True when the member left."""
        local = self._local
        assert local is not None
        common = {"room_id": self._room, "tenant": self._caller.tenant, "member": local.member}
        common["user"] = local.user
        refused = self._refusal(msg)
        if refused is not None:
            await self._send(refused)
            return False
        match msg:
            case WsError():
                await self._send(msg.frame())
            case wire.PingMessage():
                await self._send(reply("pong", id=msg.id))
            case wire.JoinMessage():
                await self._send(error_frame(EdgeCode.JOIN_REQUIRED, "Already joined.", id=msg.id))
            case wire.TypingMessage():
                await self._hub.publish(MemberTyping(**common, active=msg.active))
            case wire.SayMessage():
                await self._say(msg, common)
            case wire.AskMessage():
                await self._ask(msg, common)
            case wire.CancelAnswer():
                await self._cancel(msg)
            case wire.LeaveMessage():
                self._hub.detach(self._room, local)
                await self._hub.publish(MemberLeft(**common, reason="leave"))
                with contextlib.suppress(Exception):
                    await self._ws.close(code=1000)
                return True
        return False

    def _refusal(self, msg: wire.RoomMessage | WsError) -> str | None:
        """The member's limits: messages a second, and characters a message."""
        if not isinstance(msg, wire.SayMessage | wire.AskMessage | wire.TypingMessage):
            return None
        settings = self._settings
        if not self._bucket.take():
            return error_frame(
                EdgeCode.RATE_LIMIT_EXCEEDED,
                f"More than {settings.room_messages_per_s:g} messages a second.",
                id=msg.id,
                retry_after_s=1,
            )
        limit = settings.room_max_message_chars
        if not isinstance(msg, wire.TypingMessage) and len(msg.content) > limit:
            return error_frame(
                EdgeCode.MESSAGE_TOO_LONG, f"A message holds at most {limit} characters.", id=msg.id
            )
        return None

    async def _say(self, msg: wire.SayMessage, common: dict[str, Any]) -> None:
        """Kept in the conversation first (the AI's memory), then told to the room."""
        store = conversations_of(self._node)
        item = {
            "type": "message",
            "role": "user",
            "content": wire.spoken(common["user"], msg.content),
        }
        added = await store.add_items(self._room, self._caller.tenant, [item])
        if not added:
            await self._send(error_frame(EdgeCode.NOT_FOUND, "The room is gone.", id=msg.id))
            return
        await self._hub.publish(MemberSaid(**common, message_id=added[0].id, content=msg.content))

    async def _ask(self, msg: wire.AskMessage, common: dict[str, Any]) -> None:
        """The one submit path, in the room's conversation: its lease makes it one answer at a
        time across nodes, and the turn is kept when the answer ends."""
        try:
            body = msg.request(common["user"])
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"])
            await self._send(
                error_frame(
                    EdgeCode.INVALID_VALUE,
                    f"Invalid '{param}': {first['msg']}",
                    id=msg.id,
                    param=param,
                )
            )
            return
        if self._hub.answering(self._room):  # the lease below decides; this saves a submit
            await self._send(_busy(msg.id))
            return
        try:
            stream, _ = await submit_chat(
                self._node,
                self._caller,
                body,
                self._room,
                stream=True,
                deadline_s=msg.deadline_s,
                via="room",
            )
        except OpenAIError as exc:
            busy = exc.code == EdgeCode.CONVERSATION_BUSY
            await self._send(_busy(msg.id) if busy else from_error(exc, msg.id))
            return
        self._node.fire(_keep_turn(stream))
        asked = MemberAsked(
            **common,
            message_id="msg_" + secrets.token_hex(16),
            content=msg.content,
            request_id=stream.request_id,
        )
        await self._hub.publish(asked)

    async def _cancel(self, msg: wire.CancelAnswer) -> None:
        answering = self._hub.answering(self._room)
        if answering is None:
            await self._send(
                error_frame(EdgeCode.NOTHING_TO_CANCEL, "No answer is streaming.", id=msg.id)
            )
            return
        try:
            await cancel(self._node, self._caller, answering)
        except OpenAIError as exc:
            await self._send(from_error(exc, msg.id, answering))
            return
        await self._send(reply("ack", action="cancel", id=msg.id, request_id=answering))

    async def _receive(self) -> str | bytes | None:
        try:
            message = await self._ws.receive()
        except (WebSocketDisconnect, WebSocketDisconnected, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        return text if text is not None else message.get("bytes") or b""

    async def _send(self, text: str) -> None:
        async with self._lock:
            try:
                async with asyncio.timeout(self._settings.send_timeout_s):
                    await self._ws.send_text(text)
            except (TimeoutError, WebSocketDisconnect, WebSocketDisconnected, RuntimeError) as exc:
                raise _Closed from exc

    async def _close_with(self, code: EdgeCode, message: str, close_code: int) -> None:
        with contextlib.suppress(_Closed):
            await self._send(error_frame(code, message))
        with contextlib.suppress(Exception):
            await self._ws.close(code=close_code)


async def _keep_turn(stream: EventStream) -> None:
    """Read the asker's own stream to its end, so its conversation keeps the turn even when
    the asker leaves (the members get the answer from the room's feed on each node)."""
    stream.keep_running()
    async with stream:
        with contextlib.suppress(OpenAIError):
            await stream.first()
            async for _ in stream.batches():
                pass


async def _history(
    store: ConversationStore, room: str, tenant: str, limit: int
) -> list[dict[str, Any]]:
    """The room's messages from its conversation, as `message` frames (oldest first)."""
    page = await store.items(room, tenant, limit=limit, order="desc", after=None)
    frames = []
    for item in reversed(page[0] if page else []):
        data = item.data
        if data.get("type") != "message":
            continue
        text = _text(data.get("content"))
        if data.get("role") == "assistant":
            frames.append(wire.message(item.id, None, wire.ASSISTANT, text, wire.ASSISTANT))
        else:
            user, said = wire.said_by(text)
            frames.append(wire.message(item.id, None, user, said))
    return frames


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(p.get("text", "")) for p in content or () if isinstance(p, dict))


def _join_first(client_id: Any) -> str:
    return error_frame(EdgeCode.JOIN_REQUIRED, "Send `join` first.", id=client_id)


def _busy(client_id: Any) -> str:
    return error_frame(
        EdgeCode.ROOM_BUSY, "The AI is answering; ask again when it is done.", id=client_id
    )


__all__ = ["RoomSession", "answer_id"]
