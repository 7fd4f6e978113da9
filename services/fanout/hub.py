"""Per-request subscriber registry with bounded buffers; a slow watcher is dropped alone."""

import asyncio
from collections.abc import AsyncIterator, Callable

from contracts import EdgeCode, StreamEvent
from services.fanout.sequencer import Sequencer


class SubscriberDropped(Exception):
    """The watcher lost its feed: it fell too far behind. It can resume from the last event
    it got; `code` and `message` are what its client is told."""

    code = EdgeCode.SLOW_CONSUMER
    message = "client too slow; resume from the last event id"


class ServerDraining(SubscriberDropped):
    """This node is shutting down: the watcher resumes on another node."""

    code = EdgeCode.SERVER_SHUTTING_DOWN
    message = "this server is shutting down; resume from the last event id on another node"


class Subscription:
    """One watcher of one request: an async iterator of its events, ending after the last."""

    def __init__(self, hub: "Hub | None", request_id: str, buffer: int) -> None:
        self.request_id = request_id
        self._hub = hub
        self._queue: asyncio.Queue[StreamEvent | None] = asyncio.Queue(maxsize=buffer)
        # Each watcher orders its own events, so one fed from Kafka history (a resume)
        # follows exactly the rules of one fed live.
        self._sequencer = Sequencer()
        self.dropped = False
        self.draining = False
        self.on_drop: Callable[[], None] | None = None  # told once, when dropped

    def offer(self, event: StreamEvent) -> None:
        """A raw event from Kafka: deliver it if it is the next one of this stream."""
        delivered = self._sequencer.accept(event)
        if delivered is not None:
            self.push(delivered)

    async def offer_waiting(self, event: StreamEvent, stall_s: float) -> None:
        """Like `offer`, but wait up to `stall_s` for room: for a feed that serves this watcher
        alone (a resume), where waiting slows nobody else. Still full then: dropped."""
        delivered = self._sequencer.accept(event)
        if delivered is None or self.dropped:
            return
        try:
            async with asyncio.timeout(stall_s):
                await self._queue.put(delivered)
        except TimeoutError:
            self.push(delivered)  # still full: this marks the watcher dropped

    @property
    def empty(self) -> bool:
        """Nothing is queued right now."""
        return self._queue.empty()

    @property
    def finished(self) -> bool:
        """The terminal event (or a drop) has been queued: nothing more will come."""
        return self._sequencer.done or self.dropped

    def push(self, event: StreamEvent | None) -> None:
        if self.dropped:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            # Never wait for a slow reader: that would stall every other request on the node.
            self.dropped = True
            self._queue = asyncio.Queue(maxsize=1)
            self._queue.put_nowait(None)
            if self.on_drop is not None:
                self.on_drop()

    async def next(self) -> StreamEvent | None:
        """The next event; None once the stream is over; raises if this watcher was dropped."""
        event = await self._queue.get()
        if event is None:
            self.raise_if_cut()
        return event

    def raise_if_cut(self) -> None:
        """At the end of the feed: raise if it was cut (dropped, or the node drains)."""
        if self.dropped:
            raise SubscriberDropped(self.request_id)
        if self.draining:
            raise ServerDraining(self.request_id)

    def drain(self) -> None:
        """The node is shutting down: what is queued is still handed out, then the feed ends
        with `ServerDraining`."""
        if self.finished or self.draining:
            return
        self.draining = True
        self.push(None)

    def ready(self, limit: int) -> list[StreamEvent | None]:
        """Events already queued (at most `limit`), without waiting: lets a writer send a
        burst in one write instead of one write per event."""
        batch: list[StreamEvent | None] = []
        while len(batch) < limit and not self._queue.empty():
            event = self._queue.get_nowait()
            batch.append(event)
            if event is None:
                break
        return batch

    async def events(self) -> AsyncIterator[StreamEvent]:
        while (event := await self.next()) is not None:
            yield event
            if event.type in ("completed", "failed"):
                return

    def close(self) -> None:
        if self._hub is not None:
            self._hub.unsubscribe(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Hub:
    """Routes events by request id; register a subscription before publishing the request."""

    def __init__(self, buffer: int = 1024) -> None:
        self._buffer = buffer
        self._watched: dict[str, list[Subscription]] = {}

    def subscribe(self, request_id: str) -> Subscription:
        sub = Subscription(self, request_id, self._buffer)
        self._watched.setdefault(request_id, []).append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        watched = self._watched.get(sub.request_id)
        if watched is None:
            return
        if sub in watched:
            watched.remove(sub)
        if not watched:
            del self._watched[sub.request_id]

    def is_watched(self, request_id: str) -> bool:
        return request_id in self._watched

    def publish(self, event: StreamEvent) -> None:
        for sub in self._watched.get(event.request_id, ()):
            sub.offer(event)

    @property
    def watched_requests(self) -> int:
        return len(self._watched)

    @property
    def subscriptions(self) -> int:
        return sum(len(w) for w in self._watched.values())
