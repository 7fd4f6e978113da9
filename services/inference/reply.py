"""The per-request event stream: seq-numbered StreamEvents to the request's reply partition."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from contracts import ChatRequested, Completed, Delta, Failed, Started, ToolCallPiece
from contracts.stream import delta_json
from services.inference.coalesce import Piece

# (topic, value, key, partition, headers) -> delivery future
SendFn = Callable[
    [str, bytes, bytes, int, list[tuple[str, bytes]]], Awaitable["asyncio.Future[Any]"]
]


class ReplyStream:
    """Publishes one attempt's events in order; `close()` waits until the broker has them all."""

    def __init__(
        self,
        send: SendFn,
        topic: str,
        request: ChatRequested,
        attempt: str,
        headers: list[tuple[str, bytes]],
    ) -> None:
        self._send = send
        self._topic = topic
        self._request_id = request.request_id
        self._key = request.request_id.encode()
        self._partition = request.reply_partition
        self._attempt = attempt
        self._headers = headers
        self._seq = 0
        self._pending: list[asyncio.Future[Any]] = []
        # Sends may suspend (full buffer); the lock keeps seq order equal to partition order.
        self._lock = asyncio.Lock()

    @property
    def events_sent(self) -> int:
        return self._seq

    async def started(self, **fields: Any) -> None:
        await self._emit(Started, fields)

    async def delta(self, piece: Piece, first: bool) -> None:
        async with self._lock:
            if piece.kind == "content" and piece.logprobs is None:
                value = delta_json(self._request_id, self._seq, self._attempt, piece.text, first)
            else:
                value = self._rich_delta(piece, first)
            self._seq += 1
            await self._send_value(value)

    def _rich_delta(self, piece: Piece, first: bool) -> bytes:
        """Tool calls, refusals, reasoning and logprobs: rarer, so built as a model."""
        event = Delta(
            request_id=self._request_id,
            seq=self._seq,
            attempt=self._attempt,
            role="assistant" if first else None,
            **delta_fields(piece),
        )
        return event.model_dump_json(exclude_none=True).encode()

    async def completed(self, **fields: Any) -> None:
        await self._emit(Completed, fields)

    async def failed(self, **fields: Any) -> None:
        await self._emit(Failed, fields)

    async def _emit(self, model: type, fields: dict[str, Any]) -> None:
        async with self._lock:
            event = model(
                request_id=self._request_id, seq=self._seq, attempt=self._attempt, **fields
            )
            self._seq += 1
            await self._send_value(event.model_dump_json().encode())

    async def _send_value(self, value: bytes) -> None:
        """Send one serialised event; the caller holds the lock, so seq order = log order."""
        future = await self._send(self._topic, value, self._key, self._partition, self._headers)
        self._pending.append(future)
        # Drop delivered futures so a long answer does not hold thousands of them.
        if len(self._pending) > 64:
            self._pending = [f for f in self._pending if not f.done() or f.exception()]

    async def close(self) -> None:
        """Raise if any event of this attempt failed to reach the broker."""
        pending, self._pending = self._pending, []
        await asyncio.gather(*pending)


def delta_fields(piece: Piece) -> dict[str, Any]:
    """A merged piece as the fields of a `Delta` event."""
    if piece.kind == "tool":
        call = ToolCallPiece(
            index=piece.index,
            id=piece.id,
            type="function" if piece.id is not None else None,
            name=piece.name,
            arguments=piece.text,
        )
        return {"tool_calls": (call,)}
    fields: dict[str, Any] = {"content": piece.text} if piece.kind == "content" else {}
    if piece.kind == "refusal":
        fields["refusal"] = piece.text
    elif piece.kind == "reasoning":
        fields["reasoning"] = piece.text
    if piece.logprobs is not None:
        fields["logprobs"] = {"refusal" if piece.kind == "refusal" else "content": piece.logprobs}
    return fields
