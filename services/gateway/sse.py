"""Stream events -> OpenAI SSE frames; the one renderer of the original and resumed streams,
so a stream resumed after any frame id continues byte for byte as the original would have."""

import asyncio
from collections.abc import AsyncIterator, Callable

from sse_starlette import ServerSentEvent

from contracts import Completed, ErrorCode, Failed, Started, StreamEvent
from services.fanout.hub import SubscriberDropped, Subscription
from services.gateway.openai_wire import ChunkFormatter, stream_error


def frame(data: str, id: int | None = None) -> ServerSentEvent:
    # LF framing, as OpenAI sends it (sse-starlette defaults to CRLF per event).
    return ServerSentEvent(data, id=None if id is None else str(id), sep="\n")


class FrameRenderer:
    """Turns one request's ordered events into frames, emitting only those after `after`."""

    def __init__(self, request_id: str, after: int = -1) -> None:
        self._request_id = request_id
        self._after = after
        self._fmt: ChunkFormatter | None = None
        self._include_usage = False

    def render(self, event: StreamEvent) -> list[ServerSentEvent]:
        new = event.seq > self._after
        if isinstance(event, Started):
            first = self._fmt is None
            self._include_usage = event.include_usage
            # A later `started` is a retry or fallback before any text: no frame of its own,
            # but the chunks after it name the model that answers.
            self._fmt = ChunkFormatter(
                self._request_id, event.created, event.model, event.include_usage
            )
            return [frame(self._fmt.role(), event.seq)] if first and new else []
        if self._fmt is None:
            return []
        if event.type == "delta":
            return [frame(self._fmt.content(event.content), event.seq)] if new else []
        if isinstance(event, Completed):
            frames = []
            if new:
                # One event, two frames: the id goes on the last, so a resume never splits them.
                if self._include_usage:
                    frames += [
                        frame(self._fmt.finish(event.finish_reason)),
                        frame(self._fmt.usage(event.usage), event.seq),
                    ]
                else:
                    frames.append(frame(self._fmt.finish(event.finish_reason), event.seq))
            return [*frames, frame("[DONE]")]
        if isinstance(event, Failed):
            return [frame(stream_error(event.code.value, event.message), event.seq)] if new else []
        return []


async def sse_frames(
    sub: Subscription,
    renderer: FrameRenderer,
    *,
    idle_timeout_s: float,
    first: StreamEvent | None = None,
    on_detach: Callable[[], None] | None = None,
    on_end: Callable[[int | None], None] | None = None,
    batch_max: int = 256,
) -> AsyncIterator[bytes]:
    """Encoded frames until the stream ends; `on_detach` runs if the client leaves first, and
    `on_end` always, with the total tokens of the final event if there was one.

    Events already waiting are rendered into one write: under load that turns hundreds of
    small sends through the ASGI stack into a few, with the same bytes on the wire.
    """
    state = _Progress()
    try:
        with sub:
            if first is not None:
                yield _encode(renderer.render(first))
            while not state.stop:
                try:
                    async with asyncio.timeout(idle_timeout_s):
                        event = await sub.next()
                except TimeoutError:
                    state.finished = True
                    yield _encode([_error(ErrorCode.STREAM_TIMEOUT.value, _STALLED)])
                    return
                except SubscriberDropped:
                    yield _encode([_error("slow_consumer", _DROPPED)])
                    return  # the client may resume: it still counts as detached
                out = _render_batch(renderer, [event, *sub.ready(batch_max)], sub, state)
                if out:
                    yield out
    finally:
        if not state.finished and on_detach is not None:
            on_detach()
        if on_end is not None:
            on_end(state.tokens)


_STALLED = "the answer stalled; resume or retry"
_DROPPED = "client too slow; resume from the last event id"


class _Progress:
    __slots__ = ("finished", "stop", "tokens")

    def __init__(self) -> None:
        self.finished = False  # the stream reached its end (no detach to report)
        self.stop = False  # nothing more to send
        self.tokens: int | None = None  # total tokens of the final event


def _render_batch(
    renderer: FrameRenderer, batch: list[StreamEvent | None], sub: Subscription, state: _Progress
) -> bytes:
    frames: list[ServerSentEvent] = []
    for event in batch:
        if event is None:  # the feed ended: the stream is over, or this watcher was dropped
            state.stop = True
            if sub.dropped:
                frames.append(_error("slow_consumer", _DROPPED))
            else:
                state.finished = True
            break
        frames.extend(renderer.render(event))
        if event.type in ("completed", "failed"):
            state.finished = state.stop = True
            usage = event.usage  # type: ignore[union-attr]
            state.tokens = usage.total_tokens if usage is not None else None
            break
    return _encode(frames)


def _error(code: str, message: str) -> ServerSentEvent:
    return frame(stream_error(code, message))


def _encode(frames: list[ServerSentEvent]) -> bytes:
    return b"".join(f.encode() for f in frames)
