"""A room's state, rebuilt on every node by applying the room's events in log order: the same
events give the same members, answer and frames everywhere. Pure: no I/O, no clock but the
events' own timestamps."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from contracts.rooms import (
    Answered,
    MemberAlive,
    MemberAsked,
    MemberJoined,
    MemberLeft,
    RoomEvent,
)
from services.gateway.rooms.protocol import event_frame


@dataclass
class Member:
    member: str
    user: str
    seen: datetime  # the newest event of this member (a join, an alive, anything it sent)


@dataclass
class RoomState:
    room_id: str
    tenant: str
    members: dict[str, Member] = field(default_factory=dict)
    answering: str | None = None  # the request id of the answer streaming now
    pos: int = -1  # offset of the last event applied

    def apply(self, event: RoomEvent, pos: int) -> dict[str, Any] | None:
        """Apply one event; the frame members get for it, or None (nothing to show)."""
        self.pos = pos
        shown: RoomEvent | None = event
        match event:
            case MemberJoined() | MemberAlive() | MemberLeft():
                shown = self._presence(event)
            case MemberAsked():
                self.answering = event.request_id
            case Answered() if event.request_id != self.answering:
                shown = None  # another node said it first
            case Answered():
                self.answering = None
        if shown is None:
            return None
        known = self.members.get(event.member)
        if known is not None:
            known.seen = max(known.seen, event.ts)
        return event_frame(shown, pos)

    def _presence(self, event: MemberJoined | MemberAlive | MemberLeft) -> RoomEvent | None:
        known = self.members.get(event.member)
        if isinstance(event, MemberLeft):
            if known is None:
                return None  # already gone: the second node to notice a timeout
            del self.members[event.member]
            return event.model_copy(update={"user": known.user})
        if known is None:  # an alive: it joined before this node started reading
            self.members[event.member] = Member(event.member, event.user, event.ts)
            return event if isinstance(event, MemberJoined) else None
        known.seen, known.user = max(known.seen, event.ts), event.user
        return None  # still there, or back in time: no news

    def stale(self, now: datetime, timeout_s: float) -> list[Member]:
        """Members with no event for `timeout_s`: their node is gone or lost them."""
        return [m for m in self.members.values() if (now - m.seen).total_seconds() > timeout_s]

    def snapshot(self) -> dict[str, Any]:
        members = [{"member": m.member, "user": m.user} for m in self.members.values()]
        return {"members": members, "answering": self.answering, "pos": self.pos}
