"""This node's view of every room: reads the whole room topic, applies each event to its room's
state, and hands the frames to the members connected here; streams each answer once per node
to its members; says its members are alive and notices members nobody keeps alive."""

import asyncio
import contextlib
import hashlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from contracts import Completed, Delta, EdgeCode, Failed, StreamEvent
from contracts.rooms import (
    ROOM_EVENT,
    Answered,
    MemberAlive,
    MemberAsked,
    MemberJoined,
    MemberLeft,
    MemberTyping,
    RoomEvent,
)
from services.common.kafka import assigned_consumer
from services.common.openai_errors import OpenAIError
from services.common.redact import validation_summary
from services.gateway.callers import Caller
from services.gateway.node import GatewayNode
from services.gateway.rooms.state import RoomState
from services.gateway.submit import StreamStalled, SubscriberDropped, watch
from services.gateway.ws_protocol import event_frame as answer_frame

log = structlog.get_logger("gateway")
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_STATUS = {"stop": "completed", "tool_calls": "completed", "length": "incomplete"}


class Outbox:
    """One member's frames waiting for its socket, bounded: a member that falls
    `limit` frames behind is dropped (it may come back with `since`), and nobody waits."""

    def __init__(self, limit: int) -> None:
        self._frames: deque[tuple[str, int | None, int | None]] = deque()
        self._ready = asyncio.Event()
        self._limit = limit
        self.dropped = False
        self.closed = False
        self.draining = False

    def put(self, text: str, pos: int | None = None, seq: int | None = None) -> None:
        if self.dropped or self.closed:
            return
        if len(self._frames) >= self._limit:
            self.dropped = True
            self._frames.clear()
        else:
            self._frames.append((text, pos, seq))
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    def drain(self) -> None:
        """This node is stopping: what is queued still goes out, then the member is told to
        join again on another node."""
        self.draining = True
        self._ready.set()

    async def take(self) -> list[tuple[str, int | None, int | None]]:
        """What is waiting (text, room pos, answer seq); empty once dropped or closed."""
        await self._ready.wait()
        self._ready.clear()
        if self.dropped or self.closed:
            return []
        frames = list(self._frames)
        self._frames.clear()
        return frames


@dataclass
class LocalMember:
    """A member whose socket is on this node."""

    member: str
    user: str
    outbox: Outbox
    skip_seq: int = -1  # answer events up to this seq were seen already (a return)


class RoomRefused(Exception):
    def __init__(self, code: EdgeCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class _Answer:
    """One answer, streamed once on this node to its members of the room."""

    room_id: str
    request_id: str
    asker: str
    frames: list[tuple[int, str]] = field(default_factory=list)
    done: bool = False
    held: list[tuple[dict[str, Any], str | None]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class RoomHub:
    def __init__(self, node: GatewayNode, consumer: Callable[[], AIOKafkaConsumer]) -> None:
        self._node = node
        self._settings = node.settings
        self._consumer_factory = consumer
        self._consumer: AIOKafkaConsumer | None = None
        self.rooms: dict[str, RoomState] = {}
        self.local: dict[str, dict[str, LocalMember]] = {}
        self._recent: dict[str, deque[tuple[int, dict[str, Any], str | None]]] = {}
        self._answers: dict[str, _Answer] = {}  # room id -> its answer streaming on this node
        self._joins: dict[UUID, tuple[LocalMember, asyncio.Future[dict[str, Any]]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.ready = False

    @classmethod
    def of(cls, node: GatewayNode) -> "RoomHub":
        settings = node.settings
        return cls(
            node,
            # A fetch returns as soon as a record is there; the wait only paces idle polls,
            # which every gateway makes on every room partition.
            lambda: assigned_consumer(
                settings.bootstrap_servers,
                f"tokenbus-rooms-{settings.instance}",
                fetch_max_wait_ms=500,
            ),
        )

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        topic = self._settings.topics.rooms
        consumer = self._consumer_factory()
        await consumer.start()
        try:
            parts = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
            consumer.assign(parts)
            # The presence window back: who is in which room now.
            since = datetime.now(UTC) - timedelta(seconds=self._settings.room_presence_timeout_s)
            ends = await consumer.end_offsets(parts)
            found = await consumer.offsets_for_times(
                {tp: int(since.timestamp() * 1000) for tp in parts}
            )
            for tp in parts:
                at = found.get(tp)
                consumer.seek(tp, at.offset if at is not None else ends[tp])
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._tasks = [
            asyncio.create_task(self._read(), name="rooms-reader"),
            asyncio.create_task(self._keep_alive(), name="rooms-alive"),
            asyncio.create_task(self._expire(), name="rooms-expire"),
        ]
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for members in self.local.values():
            for local in members.values():
                local.outbox.close()
        for task in self._tasks + [a.task for a in self._answers.values() if a.task]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()

    # --- members -----------------------------------------------------------------------------

    async def join(self, room_id: str, tenant: str, local: LocalMember) -> dict[str, Any]:
        """Publish the join and wait for it to come back through the log: from that event on,
        `local` gets every frame. The room's state at that point (members, answer, pos)."""
        state = self.rooms.get(room_id)
        settings = self._settings
        others = [m for m in (state.members if state else {}) if m != local.member]
        if len(others) >= settings.room_max_members:
            raise RoomRefused(
                EdgeCode.ROOM_FULL, f"The room has {len(others)} members, the most allowed."
            )
        if not others:
            open_rooms = sum(
                1
                for s in self.rooms.values()
                if s.tenant == tenant and s.members and s is not state
            )
            if open_rooms >= settings.room_max_per_tenant:
                raise RoomRefused(
                    EdgeCode.TOO_MANY_ROOMS,
                    f"Your tenant has {open_rooms} open rooms, the most allowed.",
                )
        event = MemberJoined(room_id=room_id, tenant=tenant, member=local.member, user=local.user)
        joined: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._joins[event.event_id] = (local, joined)
        try:
            await self.publish(event)
            async with asyncio.timeout(settings.first_event_timeout_s):
                return await joined
        finally:
            self._joins.pop(event.event_id, None)

    def cut_for_drain(self) -> None:
        """The node's drain deadline: every member here is told to join again elsewhere."""
        for members in self.local.values():
            for local in members.values():
                local.outbox.drain()

    def answering(self, room_id: str) -> str | None:
        """The request id of the answer streaming in the room now."""
        state = self.rooms.get(room_id)
        return state.answering if state else None

    def knows(self, room_id: str, member: str) -> bool:
        state = self.rooms.get(room_id)
        return state is not None and member in state.members

    def missed(self, room_id: str, since: int, until: int, member: str) -> list[str] | None:
        """Frames with `since` < pos < `until`, or None when this node no longer holds them all."""
        recent = self._recent.get(room_id)
        if recent is None or not recent or recent[0][0] > since + 1:
            return None if since + 1 < until else []
        return [
            _encode(frame) for pos, frame, skip in recent if since < pos < until and skip != member
        ]

    def detach(self, room_id: str, local: LocalMember) -> None:
        """The socket is gone; the member stays until it leaves or its presence runs out.
        Only this socket's registration: the member may be back already on a new socket."""
        local.outbox.close()
        members = self.local.get(room_id, {})
        if members.get(local.member) is local:
            del members[local.member]
        if not members:
            self.local.pop(room_id, None)

    def question(self, room_id: str, request_id: str) -> dict[str, Any] | None:
        """The `message` that asked `request_id`, if this node still has it (for a member who
        joins while it is answered: the ask is kept in the conversation only at the end)."""
        for _, frame, _ in reversed(self._recent.get(room_id, ())):
            if frame.get("request_id") == request_id and frame.get("role") == "user":
                return {k: v for k, v in frame.items() if k != "pos"}
        return None

    async def publish(self, event: RoomEvent) -> None:
        await self._node.publisher.room(event)
        if self._node.metrics is not None:
            self._node.metrics.room_events.labels(event.type).inc()

    # --- the log -----------------------------------------------------------------------------

    async def _read(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500, max_records=500)
            for records in batches.values():
                for record in records:
                    self._apply(record.value, record.offset)

    def _apply(self, value: bytes | None, pos: int) -> None:
        if value is None:
            return
        try:
            event = ROOM_EVENT.validate_json(value)
        except ValidationError as exc:
            log.error("malformed_room_event", error=validation_summary(exc))
            return
        room = self.rooms.get(event.room_id)
        if room is None:
            room = self.rooms[event.room_id] = RoomState(event.room_id, event.tenant)
        frame = room.apply(event, pos)
        if frame is not None:
            skip = event.member if isinstance(event, MemberTyping) else None
            recent = self._recent.setdefault(
                event.room_id, deque(maxlen=self._settings.room_replay_frames)
            )
            recent.append((pos, frame, skip))
            self._deliver(event.room_id, frame, skip)
        if isinstance(event, MemberAsked) and frame is not None:
            self._stream_answer(room, event.request_id, event.member)
        pending = self._joins.pop(event.event_id, None)
        if pending is not None:
            local, joined = pending
            self._add_local(room, local)
            if not joined.done():
                joined.set_result(room.snapshot())
        if not room.members and room.answering is None and event.room_id not in self.local:
            self.rooms.pop(event.room_id, None)  # nobody there: forgotten until its next event
            self._recent.pop(event.room_id, None)

    def _add_local(self, room: RoomState, local: LocalMember) -> None:
        self.local.setdefault(room.room_id, {})[local.member] = local
        answer = self._answers.get(room.room_id)
        if answer is not None:  # mid-answer: from its start (after what the member had)
            for seq, text in answer.frames:
                if seq > local.skip_seq:
                    local.outbox.put(text, seq=seq)
        elif room.answering is not None:
            self._stream_answer(room, room.answering, "")

    def _deliver(self, room_id: str, frame: dict[str, Any], skip: str | None) -> None:
        answer = self._answers.get(room_id)
        if answer is not None and _holding(answer, frame):
            answer.held.append((frame, skip))
            return
        text = _encode(frame)
        for member, local in self.local.get(room_id, {}).items():
            if member != skip:
                local.outbox.put(text, pos=frame["pos"])

    # --- answers -----------------------------------------------------------------------------

    def _stream_answer(self, room: RoomState, request_id: str, asker: str) -> None:
        if room.room_id not in self.local:
            return  # no member here to stream it to
        current = self._answers.get(room.room_id)
        if current is not None and current.request_id == request_id:
            return
        answer = _Answer(room.room_id, request_id, asker)
        self._answers[room.room_id] = answer
        answer.task = asyncio.create_task(self._follow(answer, Caller(room.tenant)))

    async def _follow(self, answer: _Answer, caller: Caller) -> None:
        text: list[str] = []
        status = "failed"
        try:
            stream = await watch(self._node, caller, answer.request_id, via="room")
            async with stream:
                async for batch in stream.batches():
                    for event in batch:
                        self._answer_event(answer, event)
                        if isinstance(event, Delta) and event.content:
                            text.append(event.content)
                        status = _status(event) or status
        except (OpenAIError, StreamStalled, SubscriberDropped) as exc:
            log.warning("room_answer_lost", request_id=answer.request_id, error=type(exc).__name__)
        finally:
            answer.done = True
            self._answer_done(answer)
        with contextlib.suppress(Exception):
            await self.publish(
                Answered(
                    room_id=answer.room_id,
                    tenant=caller.tenant,
                    member=answer.asker or "assistant",
                    user="assistant",
                    request_id=answer.request_id,
                    message_id=answer_id(answer.request_id),
                    status=status,
                    content="".join(text),
                )
            )

    def _answer_event(self, answer: _Answer, event: StreamEvent) -> None:
        text = answer_frame(event)
        answer.frames.append((event.seq, text))
        for local in self.local.get(answer.room_id, {}).values():
            if event.seq > local.skip_seq:
                local.outbox.put(text, seq=event.seq)

    def _answer_done(self, answer: _Answer) -> None:
        if self._answers.get(answer.room_id) is answer:
            del self._answers[answer.room_id]
        for frame, skip in answer.held:  # what came after its end, held until the end was out
            self._deliver(answer.room_id, frame, skip)
        answer.held = []

    # --- presence ----------------------------------------------------------------------------

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._settings.room_alive_s)
            for room_id, members in list(self.local.items()):
                state = self.rooms.get(room_id)
                tenant = state.tenant if state else ""
                for local in list(members.values()):
                    with contextlib.suppress(Exception):
                        await self.publish(
                            MemberAlive(
                                room_id=room_id, tenant=tenant, member=local.member, user=local.user
                            )
                        )

    async def _expire(self) -> None:
        timeout = self._settings.room_presence_timeout_s
        while True:
            await asyncio.sleep(1.0)
            now = datetime.now(UTC)
            for room_id in list(self.local):
                state = self.rooms.get(room_id)
                if state is None:
                    continue
                here = self.local.get(room_id, {})
                for member in state.stale(now, timeout):
                    if member.member in here:
                        continue  # its socket is here: its alive is on the way
                    try:
                        await self.publish(
                            MemberLeft(
                                room_id=room_id,
                                tenant=state.tenant,
                                member=member.member,
                                user=member.user,
                                reason="timeout",
                            )
                        )
                    except Exception as exc:
                        log.warning("room_expire_failed", error=type(exc).__name__)


def _holding(answer: _Answer, frame: dict[str, Any]) -> bool:
    """Frames from the answer's end on wait until this node has sent the whole answer."""
    if answer.done:
        return False
    return bool(answer.held) or (
        frame.get("request_id") == answer.request_id and frame.get("role") == "assistant"
    )


def _status(event: StreamEvent) -> str | None:
    if isinstance(event, Completed):
        return (
            "cancelled"
            if event.finish_reason == "cancelled"
            else _STATUS.get(event.finish_reason, "completed")
        )
    if isinstance(event, Failed):
        return "failed"
    return None


def answer_id(request_id: str) -> str:
    """The answer's message id, the same on every node."""
    return "msg_" + hashlib.sha256(request_id.encode()).hexdigest()[:32]
