"""One generation: an OpenAI-SDK stream from the backend turned into seq-numbered events."""

import asyncio
import time
from dataclasses import dataclass

import openai
from openai import AsyncOpenAI

from contracts import ChatRequested, ErrorCode, TokenUsage
from services.inference.backends import Route
from services.inference.coalesce import Coalescer
from services.inference.reply import ReplyStream

# Parameters the worker sets itself; everything else the client sent goes through unchanged.
_OWN_PARAMS = frozenset({"model", "messages", "stream", "stream_options"})


@dataclass(slots=True)
class Outcome:
    """How a generation ended, for the usage record."""

    status: str  # ok | failed | cancelled
    finish_reason: str | None
    usage: TokenUsage
    ttft_ms: float | None
    error_code: ErrorCode | None = None


# `task.cancel(CANCEL_MSG)` means "a client asked to stop"; any other cancellation (shutdown)
# propagates, leaving the request uncommitted so another worker takes it.
CANCEL_MSG = "tokenbus:cancel"


def classify_error(exc: Exception) -> ErrorCode:
    """Map an SDK error to the one shared error code enum."""
    if isinstance(exc, openai.APITimeoutError):
        return ErrorCode.BACKEND_TIMEOUT
    if isinstance(exc, openai.APIConnectionError):
        return ErrorCode.BACKEND_UNAVAILABLE
    if isinstance(exc, openai.BadRequestError):
        return ErrorCode.INVALID_REQUEST
    return ErrorCode.BACKEND_ERROR


def estimate_prompt_tokens(request: ChatRequested) -> int:
    """A rough count (4 characters a token) for when the backend reports no usage."""
    chars = sum(len(str(m.content or "")) for m in request.messages)
    return max(1, chars // 4) + 3 * len(request.messages)


class Generation:
    """Streams `request` from `client` into `reply`; never raises for backend trouble."""

    def __init__(
        self,
        request: ChatRequested,
        route: Route,
        client: AsyncOpenAI,
        reply: ReplyStream,
        coalesce_s: float,
    ) -> None:
        self.request = request
        self.route = route
        self._client = client
        self._reply = reply
        self._coalescer = Coalescer(coalesce_s, self._emit_delta)
        self._t0 = time.monotonic()
        self._ttft_ms: float | None = None
        self._chunks = 0
        self._usage: TokenUsage | None = None
        self._finish_reason: str | None = None
        self._first_delta = True

    async def run(self) -> Outcome:
        try:
            await self._reply.started(
                model=self.route.model,
                tier=self.route.tier,
                route_reason=self.route.reason,
                route_score=self.route.score,
                created=int(time.time()),
            )
            await self._stream()
        except asyncio.CancelledError as exc:
            if CANCEL_MSG not in exc.args:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            return await self._end_cancelled()
        except (openai.OpenAIError, ValueError) as exc:
            return await self._end_failed(exc)
        await self._coalescer.flush()
        usage = self._usage or self._estimated_usage()
        finish = self._finish_reason or "stop"
        await self._reply.completed(finish_reason=finish, usage=usage)
        return Outcome("ok", finish, usage, self._ttft_ms)

    async def _stream(self) -> None:
        params = {k: v for k, v in self.request.params.items() if k not in _OWN_PARAMS}
        upstream = await self._client.chat.completions.create(
            model=self.route.model,
            messages=[m.model_dump(exclude_none=True) for m in self.request.messages],
            stream=True,
            stream_options={"include_usage": True},
            extra_body=params,
        )
        try:
            async for chunk in upstream:
                if chunk.usage is not None:
                    self._usage = TokenUsage(
                        prompt_tokens=chunk.usage.prompt_tokens,
                        completion_tokens=chunk.usage.completion_tokens,
                        total_tokens=chunk.usage.total_tokens,
                    )
                for choice in chunk.choices:
                    if choice.delta.content:
                        await self._on_token(choice.delta.content)
                    if choice.finish_reason:
                        self._finish_reason = choice.finish_reason
        finally:
            # Closing the HTTP response is what makes the provider stop generating (and billing).
            await asyncio.shield(upstream.close())

    async def _on_token(self, text: str) -> None:
        if self._ttft_ms is None:
            self._ttft_ms = (time.monotonic() - self._t0) * 1000
        self._chunks += 1
        await self._coalescer.add(text)

    async def _emit_delta(self, text: str) -> None:
        first, self._first_delta = self._first_delta, False
        await self._reply.delta(text, first)

    def _estimated_usage(self) -> TokenUsage:
        prompt = estimate_prompt_tokens(self.request)
        return TokenUsage(
            prompt_tokens=prompt,
            completion_tokens=self._chunks,
            total_tokens=prompt + self._chunks,
            estimated=True,
        )

    async def _end_cancelled(self) -> Outcome:
        await self._coalescer.flush()
        usage = self._estimated_usage()
        await self._reply.completed(finish_reason="cancelled", usage=usage)
        return Outcome("cancelled", "cancelled", usage, self._ttft_ms)

    async def _end_failed(self, exc: Exception) -> Outcome:
        await self._coalescer.flush()
        code = classify_error(exc)
        usage = self._estimated_usage() if self._chunks else None
        message = _public_message(exc, code)
        await self._reply.failed(code=code, message=message, retryable=code.retryable, usage=usage)
        return Outcome("failed", None, usage or self._estimated_usage(), self._ttft_ms, code)


def _public_message(exc: Exception, code: ErrorCode) -> str:
    # Backend error bodies can echo request details; status and type are enough for clients.
    if isinstance(exc, openai.APIStatusError):
        return f"model backend answered HTTP {exc.status_code} ({code.value})"
    return f"model backend failed: {type(exc).__name__} ({code.value})"
