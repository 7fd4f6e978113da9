"""Stream events -> OpenAI SSE frames; the one renderer of the original and resumed streams,
so a stream resumed after any frame id continues byte for byte as the original would have."""

from collections.abc import AsyncIterator

from sse_starlette import ServerSentEvent

from contracts import Completed, Delta, ErrorCode, Failed, Started, StreamEvent
from services.common.openai_errors import Code, stream_error
from services.gateway.openai_wire import ChunkFormatter
from services.gateway.submit import EventStream, StreamStalled, SubscriberDropped


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
        if isinstance(event, Delta):
            if not new:
                return []
            chunk = self._fmt.content(event.content) if event.plain else self._fmt.delta(event)
            return [frame(chunk, event.seq)]
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
            return [frame(stream_error(event.code, event.message), event.seq)] if new else []
        return []


async def sse_frames(
    stream: EventStream, renderer: FrameRenderer, *, first: StreamEvent | None = None
) -> AsyncIterator[bytes]:
    """Encoded frames until the stream ends; closing `stream` at the end (or when the client
    leaves) is this generator's job.

    Events already waiting are rendered into one write: under load that turns hundreds of
    small sends through the ASGI stack into a few, with the same bytes on the wire.
    """
    try:
        if first is not None:
            yield _encode(renderer.render(first))
        async for batch in stream.batches():
            out = _encode([f for event in batch for f in renderer.render(event)])
            if out:
                yield out
    except StreamStalled:
        yield _encode([_error(ErrorCode.STREAM_TIMEOUT, _STALLED)])
    except SubscriberDropped as exc:  # too slow, or this node drains: the client may resume
        yield _encode([_error(exc.code, exc.message)])
    finally:
        await stream.aclose()


_STALLED = "the answer stalled; resume or retry"


def _error(code: Code, message: str) -> ServerSentEvent:
    return frame(stream_error(code, message))


def _encode(frames: list[ServerSentEvent]) -> bytes:
    return b"".join(f.encode() for f in frames)
