"""Turn a partition's raw events for one request into the one ordered stream clients see."""

from contracts import ErrorCode, Failed, StreamEvent


class Sequencer:
    """Drops duplicates and stale attempts; turns a lost worker into a clean `failed`.

    A worker that dies before its first token is replaced by another attempt (the request
    was not committed); its `started` restarts at seq 0 and is taken over silently. If the
    old attempt already streamed text, the new one would splice a different answer onto it,
    so the client gets a retryable `failed` instead of a silently wrong text.
    """

    __slots__ = ("_attempt", "_next_seq", "_texted", "done")

    def __init__(self) -> None:
        self._attempt: str | None = None
        self._next_seq = 0
        self._texted = False
        self.done = False

    def accept(self, event: StreamEvent) -> StreamEvent | None:
        """Return the event to deliver (maybe a synthetic `failed`), or None to skip it."""
        if self.done:
            return None
        if event.attempt != self._attempt:
            return self._other_attempt(event)
        if event.seq < self._next_seq:
            return None
        self._next_seq = event.seq + 1
        if event.type == "delta":
            self._texted = True
        elif event.type in ("completed", "failed"):
            self.done = True
        return event

    def _other_attempt(self, event: StreamEvent) -> StreamEvent | None:
        if event.type != "started":
            return None  # a zombie attempt's late event
        if self._attempt is None:
            self._attempt = event.attempt
            return self.accept(event)
        if not self._texted:
            self._attempt = event.attempt  # takeover before any text: invisible to clients
            return None
        self.done = True
        return Failed(
            request_id=event.request_id,
            seq=self._next_seq,
            attempt=event.attempt,
            code=ErrorCode.WORKER_LOST,
            retryable=True,
            message="the worker generating this answer was lost mid-stream; send it again",
        )
