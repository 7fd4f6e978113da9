"""Stream events for fan-out tests, built the way one worker attempt publishes them."""

from contracts import Completed, Delta, Failed, Started, StreamEvent, TokenUsage

REQUEST = "req-1"


class Attempt:
    """One worker attempt at a request: `started()`, `delta()`... with seq counted for it."""

    def __init__(self, name: str, request_id: str = REQUEST) -> None:
        self.name = name
        self.request_id = request_id
        self.seq = 0

    def _next(self) -> dict[str, object]:
        fields = {"request_id": self.request_id, "attempt": self.name, "seq": self.seq}
        self.seq += 1
        return fields

    def started(self) -> Started:
        return Started(model="m", tier="small", created=1, **self._next())  # type: ignore[arg-type]

    def delta(self, content: str) -> Delta:
        return Delta(content=content, **self._next())  # type: ignore[arg-type]

    def completed(self) -> Completed:
        return Completed(finish_reason="stop", usage=TokenUsage(), **self._next())  # type: ignore[arg-type]

    def failed(self) -> Failed:
        return Failed(
            code="backend_error",
            message="x",
            retryable=True,  # type: ignore[arg-type]
            **self._next(),
        )

    def stream(self, *texts: str) -> list[StreamEvent]:
        """A whole successful attempt: started, one delta per text, completed."""
        return [self.started(), *(self.delta(t) for t in texts), self.completed()]
