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
) -> AsyncIterator[ServerSentEvent]:
    """Frames until the stream ends; `on_detach` runs if the client leaves before that."""
    finished = False
    try:
        with sub:
            if first is not None:
                for f in renderer.render(first):
                    yield f
            while True:
                try:
                    async with asyncio.timeout(idle_timeout_s):
                        event = await sub.next()
                except TimeoutError:
                    finished = True
                    yield frame(
                        stream_error(
                            ErrorCode.STREAM_TIMEOUT.value, "the answer stalled; resume or retry"
                        )
                    )
                    return
                except SubscriberDropped:
                    yield frame(
                        stream_error(
                            "slow_consumer", "client too slow; resume from the last event id"
                        )
                    )
                    return  # the client may resume: it still counts as detached
                if event is None:
                    finished = True
                    return
                for f in renderer.render(event):
                    yield f
                if event.type in ("completed", "failed"):
                    finished = True
                    return
    finally:
        if not finished and on_detach is not None:
            on_detach()
